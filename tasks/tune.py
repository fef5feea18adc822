"""TuneThreshold: the probability threshold and minimum building area, tuned on the val split.

Runs when ``[polygonize] threshold`` or ``min_area_m2`` is ``auto`` (the default). It reuses
PredictImage's probabilities of the val images (the DAG never predicts an image twice), and
for each point of the ``[tune]`` grid computes the buildings Polygonize + DeduplicateBorders
would give (in memory, no PostGIS writes: :mod:`footprints.tuning`), scores them against the
labels with the building-level SpaceNet F1 (the truth filtered by the grid's smallest minimum
area at every point: a larger minimum area is judged by what it loses, it cannot win by
shrinking the truth), and picks the best, near-ties (``[tune] tie``) going to the
lowest per-image F1 variance. With ``[split] method = block`` only the val blocks count
(buildings whose centroid lies in the val tiles). Without a val split the defaults (0.5, 5 m²)
apply, with a warning.

Output: ``tuning.json`` (the choice, why, the grid and every point's scores) and ``tuning.png``
(F1 against threshold, one curve per minimum area) beside the model (:func:`tasks.keys.tuning_json`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi
import rasterio

from footprints import db
from footprints.atomic import write_json
from footprints.geo import as_affine, footprint_4326, window_polygon
from footprints.labels import source_name
from footprints.outputs import read_truth
from footprints.polygonize import check_probabilities
from footprints.spacenet import DEFAULT_IOU
from footprints.split import centroid_in, split_regions
from footprints.tiling import read_tile_index
from footprints.tuning import UNTUNED, choose, grid_buildings, plot_tuning, score_grid
from tasks import config
from tasks.keys import polygon_settings, prediction_key, split_key, tune_grid, tune_key, tuning_json
from tasks.labels import LoadLabels
from tasks.predict import PredictImage
from tasks.progress import report
from tasks.sources import label_path
from tasks.split import SplitDataset
from tasks.tiling import TileImage

log = logging.getLogger("luigi-interface")

__all__ = ["TuneThreshold", "polygon_values", "needs_tuning"]


def needs_tuning() -> bool:
    """Whether ``[polygonize] threshold`` or ``min_area_m2`` is ``auto``."""
    return "auto" in polygon_settings().values()


def polygon_values(*names: str) -> tuple[float, ...]:
    """The run's ``[polygonize]`` values of ``names`` (default ``threshold``, ``min_area_m2``):
    the numbers configured, ``auto`` read from the tuning (TuneThreshold must have run:
    Polygonize requires it)."""
    s = polygon_settings()
    names = names or ("threshold", "min_area_m2")
    if any(s[n] == "auto" for n in names):
        tuned = json.loads(Path(TuneThreshold().output().path).read_text())
        s = {k: float(tuned[k]) if v == "auto" else v for k, v in s.items()}
    return tuple(s[n] for n in names)


class TuneThreshold(luigi.Task):
    """``tuning.json`` + ``tuning.png`` beside the model: the threshold and minimum area of the
    best building F1 on the val split."""

    def requires(self):
        return SplitDataset()  # the val images (and, for a block split, its tiles) come from here

    def output(self):
        return luigi.LocalTarget(str(tuning_json()))

    def run(self):
        split = json.loads(Path(self.input().path).read_text())
        val = list(split["images"].get("val") or [])
        grid = tune_grid()
        out = Path(self.output().path)
        png = out.with_suffix(".png")
        base = {"key": tune_key(), "predictions": prediction_key(), "split": split_key(), "grid": grid,
                "tie": config.tune().tie, "iou": DEFAULT_IOU, "val_images": val}
        if not val:
            log.warning("TuneThreshold: no val split; [polygonize] threshold = auto and min_area_m2 = auto "
                        "fall back to %g and %g m²", UNTUNED["threshold"], UNTUNED["min_area_m2"])
            plot_tuning(png, [], None, "threshold tuning: no validation split")
            write_json(out, {**UNTUNED, **base, "fallback": True, "results": [],
                             "why": "no val split: the defaults (threshold 0.5, min area 5 m²)"})
            return
        deps = yield {im: {"prob": PredictImage(image=im), "tiles": TileImage(image=im),
                           "labels": [LoadLabels(path=str(label_path(im)))] if label_path(im) else []}
                      for im in val}
        regions = split_regions(split["splits"]).get("val", {}) if split.get("method") == "block" else None
        pc, dc = config.polygonize(), config.dedup()
        three_class = config.masks().kind == "3class"
        classes = config.class_spec()[1]  # building types: found on the union of the class channels
        truth, found = {}, {}
        for n, im in enumerate(val):
            index_path = deps[im]["tiles"].path
            index = read_tile_index(index_path)
            with rasterio.open(deps[im]["prob"].path) as src:
                bands = check_probabilities(src, index, index_path, three_class, classes)
                grid_im = grid_buildings(
                    src, index["tiles"], grid["thresholds"], grid["min_areas_m2"], three_class=three_class,
                    bands=bands, halo_px=pc.halo_px, simplify_px=pc.simplify_px, merge_overlap=dc.merge_overlap,
                    min_shared_px=dc.min_shared_px, n_classes=len(classes),
                    progress=lambda d, t, n=n, im=im: report(self, int(90 * (n + d / t) / len(val)),
                                                             f"{im}: threshold {d}/{t} (image {n + 1}/{len(val)})"))
            truth[im] = self._truth(im, index)
            for point, geoms in grid_im.items():
                found.setdefault(point, {})[im] = geoms
            if regions is not None:  # a block split: only the val blocks of the image
                region = regions.get(im)
                truth[im] = [g for g, k in zip(truth[im], self._inside(truth[im], region)) if k]
                for point in found:
                    g = found[point][im]
                    found[point][im] = [x for x, k in zip(g, self._inside(g, region)) if k]
        truth_min = min(grid["min_areas_m2"])
        rows = score_grid(truth, found, iou=DEFAULT_IOU, truth_min_area=truth_min)
        pick, why = choose(rows, config.tune().tie)
        plot_tuning(png, rows, pick, f"threshold tuning on {len(val)} val image(s)")
        write_json(out, {"threshold": pick["threshold"], "min_area_m2": pick["min_area_m2"], "f1": pick["f1"],
                         "precision": pick["precision"], "recall": pick["recall"], "why": why, **base,
                         "fallback": False, "scored_on": "blocks" if regions is not None else "images",
                         "truth_min_area_m2": truth_min,
                         "results": rows})
        report(self, 100, why)

    @staticmethod
    def _inside(geoms, region) -> list[bool]:
        return [] if not geoms else ([False] * len(geoms) if region is None else centroid_in(geoms, region).tolist())

    @staticmethod
    def _truth(image: str, index: dict) -> list:
        """The image's labels in its CRS, as Evaluate reads them."""
        lp = label_path(image)
        if not lp:
            return []
        extent = window_polygon(as_affine(index["transform"]), 0, 0, index["width"], index["height"])
        with db.connection() as conn:
            srid = db.srid_for_crs(conn, index["crs_wkt"])
            return read_truth(conn, [source_name(lp)], extent, srid, footprint_4326(extent, index["crs_wkt"]))
