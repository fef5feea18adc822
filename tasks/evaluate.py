"""Evaluate: the SpaceNet building metric of a run (F1 at IoU > 0.5), per image, per AOI, per split
and in total.

The metric is ``footprints.spacenet`` (it reproduces solaris' numbers); the report writers are
``footprints.evalio``. This task gathers each image's labels and deduplicated buildings from
PostGIS, in the image's CRS, and writes ``<workdir>/outputs/<run>/metrics.json`` and
``per_image.csv``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi
import shapely

from footprints import db
from footprints.evalio import region_blocks, split_block, write_report
from footprints.geo import as_affine, footprint_4326, window_polygon
from footprints.labels import source_name
from footprints.outputs import read_buildings, read_truth
from footprints.spacenet import DEFAULT_IOU, class_scores, evaluate_frames, make_frame
from footprints.split import split_regions
from footprints.tiling import read_tile_index
from tasks.config import class_spec, split
from tasks.keys import outputs_dir, run_key
from tasks.labels import LoadLabels
from tasks.outputs import WriteRunOutputs
from tasks.progress import report
from tasks.sources import label_path, series
from tasks.split import SplitDataset, split_images
from tasks.tiling import TileImage
from tasks.track import TrackBuildings, series_scot
from tasks.tune import polygon_values

log = logging.getLogger("luigi-interface")


class Evaluate(luigi.Task):
    """The SpaceNet metric of the run's deduplicated buildings against the labels.

    Per image, per AOI and in total, plus per split (train/val/test) so the headline is the
    test split's F1. Writes ``<workdir>/outputs/<run>/metrics.json`` and ``per_image.csv``.
    Polygons are compared in each image's CRS. SpaceNet's rule filters truth and proposals by
    the same minimum area: by default the run's ``[polygonize] min_area_m2`` (Polygonize drops
    smaller buildings, so truth below it could only be missed); ``min_area`` (m²) overrides it.
    The value used is recorded in metrics.json as ``min_area_m2``. An image series run adds
    ``scot`` (per AOI and the mean; :func:`tasks.track.series_scot`). With ``[split] method = block``
    each split is scored on its own blocks only (buildings by centroid in the split's tiles, the
    buffer left out); ``split_scoring`` in metrics.json and each split's ``scored_on`` say how.
    """

    images = luigi.ListParameter(description="image ids to evaluate")
    iou = luigi.FloatParameter(default=DEFAULT_IOU)
    min_area = luigi.OptionalFloatParameter(default=None, description="m²; default: [polygonize] min_area_m2 "
                                            "(auto: the tuned value)")

    def requires(self):
        return {"outputs": WriteRunOutputs(images=list(self.images)),
                "labels": [LoadLabels(path=str(label_path(i))) for i in self.images if label_path(i)],
                **({"split": SplitDataset(images=tuple(sorted(self.images)))} if split().method == "block" else {}),
                "tracks": [TrackBuildings(aoi=a) for a in series(self.images)]}  # image series only

    def output(self):
        tag = "" if (self.iou, self.min_area) == (DEFAULT_IOU, None) else f"_iou{self.iou:g}_min{self.min_area_m2():g}"
        d = outputs_dir()
        return {"metrics": luigi.LocalTarget(str(d / f"metrics{tag}.json")),
                "per_image": luigi.LocalTarget(str(d / f"per_image{tag}.csv"))}

    def run(self):
        run = run_key()
        t_ids, t_geoms, p_ids, p_geoms, p_conf = [], [], [], [], []
        classes = class_spec()[1]  # building types: by_class and class_mean_f1 besides the rest
        t_cls, p_cls = [], []
        with db.connection() as conn:
            for n, image in enumerate(self.images):
                index = read_tile_index(TileImage(image=image).output().path)
                extent = window_polygon(as_affine(index["transform"]), 0, 0, index["width"], index["height"])
                srid = db.srid_for_crs(conn, index["crs_wkt"])
                lp = label_path(image)
                truth = read_truth(conn, [source_name(lp)], extent, srid, footprint_4326(extent, index["crs_wkt"]),
                                   with_class=True) if lp else []
                if not truth:  # the image still counts (its proposals are all FP)
                    truth = [(shapely.Polygon(), None)]
                t_ids += [image] * len(truth)
                t_geoms += [g for g, _ in truth]
                t_cls += [c for _, c in truth]
                for b in read_buildings(conn, run, image, classes):
                    p_ids.append(image)
                    p_geoms.append(b["geom"])
                    p_conf.append(b["score"])
                    p_cls.append(b.get("class"))
                report(self, int(80 * (n + 1) / len(self.images)), f"{image}: {len(truth)} labels")
        min_area = self.min_area_m2()
        result = evaluate_frames(make_frame(t_ids, t_geoms), make_frame(p_ids, p_geoms, p_conf),
                                 iou=self.iou, min_area=min_area, aoi_of=lambda i: i)
        if classes:  # building types: a match needs the IoU rule and the same class
            result.update(class_scores(make_frame(t_ids, t_geoms, classes=t_cls),
                                       make_frame(p_ids, p_geoms, p_conf, classes=p_cls),
                                       iou=self.iou, min_area=min_area, classes=classes))
        result["splits"] = {name: {**split_block(result, imgs), "scored_on": "images"}
                            for name, imgs in self._splits().items() if imgs}
        result["split_scoring"] = "each split: its images, whole"
        if "split" in self.input():  # a block split: each split on its own blocks only
            regions = split_regions(json.loads(Path(self.input()["split"].path).read_text())["splits"])
            result["splits"] = region_blocks((t_ids, t_geoms), (p_ids, p_geoms, p_conf),
                                             {s: r for s, r in regions.items() if r}, iou=self.iou, min_area=min_area)
            result["split_scoring"] = ("each split: the buildings (truth and proposals) whose centroid lies in the "
                                       "split's tiles; the buffer between splits and excluded tiles are left out")
        result["splits"]["all"] = {**split_block(result, self.images), "scored_on": "images"}
        result["run"] = run
        result["iou_threshold"] = self.iou
        result["min_area_m2"] = min_area
        result["min_area_rule"] = "truth kept if area >= min_area_m2, proposals if area > min_area_m2 (SpaceNet)"
        scot = series_scot(self.images, min_area)  # an image series run: SCOT of the tracked ids
        if scot is not None:
            result["scot"] = scot
        out = self.output()
        write_report(result, out["metrics"].path, out["per_image"].path)
        t = result["splits"].get("test", result["splits"]["all"])
        report(self, 100, f"F1 {t['f1']:.3f} (P {t['precision']:.3f}, R {t['recall']:.3f})")

    def min_area_m2(self) -> float:
        """The area filter of both sides: ``min_area`` if given, else ``[polygonize] min_area_m2``."""
        return float(polygon_values("min_area_m2")[0] if self.min_area is None else self.min_area)

    def _splits(self) -> dict:
        """The split of the evaluated images; without a usable split configuration (a block split
        not computed yet, a config naming other images) everything is reported as one split."""
        try:
            return split_images(list(self.images))
        except (OSError, ValueError, KeyError) as e:
            log.warning("Evaluate: no train/val/test split of %d images (%s); reporting them as one split",
                        len(self.images), e)
            return {}
