"""DeduplicateBorders: every building of one image exactly once and whole, however the tiles
overlap, in PostGIS ``buildings``.

The work is :func:`footprints.dedup.deduplicate` (set-based SQL over the image's
``predictions``; see :mod:`footprints.dedup` for the steps); this task checks the tile index
and commits the image's partition of ``buildings`` with its marker.
"""
from __future__ import annotations

import json

import luigi

from footprints import db
from footprints.dedup import check_cores, deduplicate
from tasks import config
from tasks.keys import run_key
from tasks.polygonize import Polygonize
from tasks.progress import report, reporter
from tasks.targets import PostgresMarker
from tasks.tiling import TileImage
from tasks.tune import polygon_values

__all__ = ["DeduplicateBorders"]


class DeduplicateBorders(luigi.Task):
    """The buildings of one image, each exactly once and whole, in PostGIS ``buildings``."""

    image = luigi.Parameter(description="image id")

    def requires(self):
        return {"predictions": Polygonize(image=self.image), "tiles": TileImage(image=self.image)}

    def run_key(self) -> str:
        return run_key()

    def output(self):
        return PostgresMarker(f"dedup:{self.run_key()}:{self.image}", "buildings")

    def run(self):
        index_path = self.input()["tiles"].path
        with open(index_path) as f:
            index = json.load(f)
        tiles = index.get("tiles") or []
        check_cores(tiles, index["width"], index["height"], source=index_path)  # errors name the file
        pc, dc = config.polygonize(), config.dedup()
        with db.connection() as conn:
            srid = db.srid_for_crs(conn, index["crs_wkt"])
            n = deduplicate(conn, self.run_key(), self.image, tiles, index["transform"], srid,
                            min_area_m2=polygon_values("min_area_m2")[0], simplify_px=pc.simplify_px, halo_px=pc.halo_px,
                            min_shared_px=dc.min_shared_px, merge_overlap=dc.merge_overlap,
                            width=index["width"], height=index["height"], progress=reporter(self),
                            classes=config.class_spec()[1])
            self.output().touch(conn)
        report(self, 100, f"{n} buildings")
