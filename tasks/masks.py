"""MakeMasks: burn each tile's labels into a mask GeoTIFF.

One set-based query per image returns every label that touches any of the image's tiles
(:func:`footprints.masks.query_tile_labels`); each tile's mask is then rasterized with the
tile's own transform (:func:`footprints.masks.make_mask`, pixel-centre rule). Mask kinds
(``[masks] kind``): ``footprint`` (1 band) or ``3class`` (footprint, boundary, contact).
With building types (``[data] classes``) the footprint is one band per class, and each tile's
record counts the pixels of each class (``class_px``: what training's rare-class sampling uses).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi
from affine import Affine
from rasterio.crs import CRS

from footprints import db
from footprints.atomic import atomic_path
from footprints.geo import footprint_4326, pixel_size, window_polygon
from footprints.labels import source_name
from footprints.masks import check_labels_inside, labels_in_window, make_mask, mask_bands, query_tile_labels
from footprints.tiling import read_tile_index, write_tiff
from tasks.config import class_spec, masks, workdir
from tasks.keys import mask_key, tiling_key
from tasks.labels import LoadLabels
from tasks.sources import label_path, shared_label_file
from tasks.tiling import TileImage

log = logging.getLogger("luigi-interface")


class MakeMasks(luigi.Task):
    """Writes ``<workdir>/masks/<image>/<tiling>/<mask kind>/<tile_id>.tif`` + index.json."""

    image = luigi.Parameter()

    def requires(self):
        lp = label_path(self.image)
        if lp is None:
            raise FileNotFoundError(f"no label file for image {self.image!r}; set [data] labels")
        return {"tiles": TileImage(image=self.image), "labels": LoadLabels(path=str(lp))}

    def mask_dir(self) -> Path:
        return workdir() / "masks" / self.image / tiling_key() / mask_key()

    def output(self):
        return luigi.LocalTarget(str(self.mask_dir() / "index.json"))

    def run(self):
        m = masks()
        index = read_tile_index(self.input()["tiles"].path)
        px = pixel_size(Affine(*index["transform"]))
        margin = max(m.contact_distance, 1.0 * px) + px
        source = source_name(self.requires()["labels"].path)
        _, classes, default = class_spec()
        class_of = {} if classes else None
        with db.connection() as conn:
            by_tile = query_tile_labels(conn, self.image, index["tiling"], [source], margin, class_of)
            n_labels = len({id(g) for gs in by_tile.values() for g in gs})
            if n_labels == 0:  # all elsewhere: an error for the image's own label file, else a warning
                extent = footprint_4326(window_polygon(Affine(*index["transform"]), 0, 0, index["width"],
                                                       index["height"]), index["crs_wkt"]).bounds
                warning = check_labels_inside(conn, self.image, source, self.requires()["labels"].path,
                                              not shared_label_file(), extent)
                if warning:
                    log.warning("%s", warning)
                    self.set_status_message(f"WARNING: {warning}")
        crs = CRS.from_wkt(index["crs_wkt"])
        with atomic_path(self.mask_dir(), dir=True) as tmp:
            records = []
            for i, t in enumerate(index["tiles"]):
                tt = Affine(*t["transform"])
                geoms = by_tile.get(t["tile_id"], [])
                cls = None
                if classes:  # a label without a class (loaded before types were set): the default
                    cls = [classes.index(c) if c in classes else classes.index(default)
                           for c in (class_of.get(id(g)) for g in geoms)]
                arr = make_mask(geoms, (t["height"], t["width"]), tt, m.kind, m.boundary_width, m.contact_distance,
                                cls, len(classes))
                prof = {"driver": "GTiff", "width": t["width"], "height": t["height"], "count": arr.shape[0],
                        "dtype": "uint8", "crs": crs, "transform": tt, "compress": "deflate", "nodata": None}
                write_tiff(tmp / f"{t['tile_id']}.tif", prof, arr)  # a full disk raises, never a truncated tile
                win = window_polygon(tt, 0, 0, t["width"], t["height"])
                n_fp = max(1, len(classes))
                records.append({"tile_id": t["tile_id"], "path": f"{t['tile_id']}.tif",
                                "n_labels": labels_in_window(geoms, win),
                                "building_px": int((arr[:n_fp] > 0).any(axis=0).sum()),
                                **({"class_px": [int(c) for c in (arr[:n_fp] > 0).sum(axis=(1, 2))]}
                                   if classes else {})})
                if i % 20 == 0:
                    self.set_progress_percentage(int(100 * i / len(index["tiles"])))
            out = {"image": self.image, "tiling": index["tiling"], "kind": m.kind, "mask_key": mask_key(),
                   "bands": mask_bands(m.kind, classes), "labels_source": source, "labels_in_image": n_labels,
                   **({"classes": list(classes)} if classes else {}),
                   "tiles": records}
            with open(tmp / "index.json", "w") as f:
                json.dump(out, f, indent=1)
        self.set_progress_percentage(100)
