"""TileImage: cut a GeoTIFF into overlapping GeoTIFF tiles through windowed reads.

The grid, the tile writer and the index live in :mod:`footprints.tiling`; this task decides
where they go (``<workdir>/tiles/<image>/<tiling key>/``) and records them in PostGIS.
"""
from __future__ import annotations

from pathlib import Path

import luigi

from footprints import db
from footprints.atomic import atomic_path, write_json
from footprints.names import check_image_id
from footprints.raster import open_raster, raster_meta
from footprints.tiling import (
    disk_full_error,
    is_disk_full,
    record_tiles,
    tile_grid,
    tile_records,
    write_index_geojson,
    write_tiles,
)
from tasks.config import tiling, workdir
from tasks.demo import GenerateDemo
from tasks.keys import tiling_key
from tasks.sources import ImageFile, image_path, using_demo
from tasks.targets import PostgresMarker


class TileImage(luigi.Task):
    """Tiles one image into ``<workdir>/tiles/<image>/ts<size>_ov<overlap>/`` and records the
    tile index there (index.json, index.geojson) and in the PostGIS ``tiles`` table."""

    image = luigi.Parameter(description="image id (file stem)")
    path = luigi.Parameter(default="", description="source raster; default: from [data] images or the demo")

    def requires(self):
        if self.path:
            return ImageFile(path=self.path)
        if using_demo():
            return GenerateDemo()
        return ImageFile(path=str(image_path(self.image)))

    def source_path(self) -> Path:
        if self.path:
            return Path(self.path)
        return image_path(self.image)

    def tile_dir(self) -> Path:
        return workdir() / "tiles" / self.image / tiling_key()

    def output(self):
        return luigi.LocalTarget(str(self.tile_dir() / "index.json"))

    def db_marker(self):
        return PostgresMarker(f"tiles:{self.image}:{tiling_key()}:{self.source_path()}", "tiles")

    def complete(self):
        # the index file and the database rows must both be there
        return super().complete() and self.db_marker().exists()

    def run(self):
        check_image_id(self.image)  # it names directories: never '..' or a path
        t = tiling()
        src_path = self.source_path()
        with open_raster(src_path) as src:
            meta = raster_meta(src)
            transform, crs = src.transform, src.crs
        specs = tile_grid(meta["width"], meta["height"], t.tile_size, t.overlap)
        final = self.tile_dir()
        try:
            with atomic_path(final, dir=True) as tmp:  # a failure (a full disk) leaves no directory
                self.set_status_message(f"writing {len(specs)} tiles of {t.tile_size}px")

                def progress(done, total):
                    self.set_progress_percentage(int(90 * done / total))

                write_tiles(src_path, tmp, specs, compress=t.compress, workers=t.workers, progress=progress)
                records = tile_records(specs, transform)
                index = {"image": self.image, "source": str(src_path), "tiling": tiling_key(), "tile_size": t.tile_size,
                         "overlap": t.overlap, "compress": t.compress, **meta, "tiles": records}
                write_index_geojson(tmp / "index.geojson", records, crs)
        except OSError as e:
            if not is_disk_full(e):
                raise
            raise disk_full_error(e, final, "tiles") from None
        self.set_status_message("recording the tile index in PostGIS")
        with db.connection() as conn:
            db.ensure_schema(conn)
            record_tiles(conn, self.image, str(src_path), index, crs, final)
            self.db_marker().touch(conn)
        write_json(final / "index.json", index)
        self.set_progress_percentage(100)
