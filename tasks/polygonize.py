"""Polygonize: one image's building probabilities -> building polygons in PostGIS ``predictions``.

The work is :func:`footprints.polygonize.polygonize_image`; this task reads the tile index,
checks the probabilities against it and commits the rows with its marker.
"""
from __future__ import annotations

import json

import luigi
import rasterio

from footprints import db
from footprints.errors import InputError
from footprints.polygonize import check_probabilities, polygonize_image
from tasks import config
from tasks.keys import run_key
from tasks.predict import PredictImage
from tasks.progress import report, reporter
from tasks.targets import PostgresMarker
from tasks.tiling import TileImage
from tasks.tune import TuneThreshold, needs_tuning, polygon_values

__all__ = ["Polygonize"]


class Polygonize(luigi.Task):
    """Polygonize one image's probability mosaic tile by tile into PostGIS ``predictions``.

    Each tile's full window, grown by ``[polygonize] halo_px`` (within the image), is read on
    its own (bounded memory); the tile stores the polygons that reach into its core, whole as
    it sees them. The image's rows replace any earlier rows of the same run in one transaction
    with the marker.
    """

    image = luigi.Parameter(description="image id")

    def requires(self):
        req = {"prob": PredictImage(image=self.image), "tiles": TileImage(image=self.image)}
        if needs_tuning():  # [polygonize] threshold / min_area_m2 = auto
            req["tuning"] = TuneThreshold()
        return req

    def run_key(self) -> str:
        return run_key()

    def output(self):
        return PostgresMarker(f"polygonize:{self.run_key()}:{self.image}", "predictions")

    def run(self):
        cfg = config.polygonize()
        threshold, min_area_m2 = polygon_values()
        run = self.run_key()
        prob_path = self.input()["prob"].path
        index_path = self.input()["tiles"].path
        with open(index_path) as f:
            index = json.load(f)
        tiles = index.get("tiles")
        if not tiles:
            raise InputError(index_path, "tile index has no tiles")
        three_class = config.masks().kind == "3class"
        classes = config.class_spec()[1]  # building types: one footprint band per class first
        with db.connection() as conn:
            db.ensure_schema(conn)
        with rasterio.open(prob_path) as src:
            bands = check_probabilities(src, index, index_path, three_class, classes)
            with db.connection() as conn:
                polygonize_image(conn, src, tiles, run, self.image, halo_px=cfg.halo_px, threshold=threshold,
                                 min_area_m2=min_area_m2, three_class=three_class, bands=bands,
                                 progress=reporter(self), n_classes=len(classes))
                self.output().touch(conn)
        report(self, 100)
