"""WriteOutputs: the buildings of each image as files, and of the whole run.

Per image, under ``<workdir>/outputs/<run>/images/``:

* ``<image>.csv``: SpaceNet CSV ``ImageId,BuildingId,PolygonWKT_Pix,PolygonWKT_Geo,Confidence``
  (pixel WKT in image pixel coordinates, geo WKT in lon/lat as in SpaceNet's own CSVs; an image
  without buildings gets one ``-1,POLYGON EMPTY,POLYGON EMPTY`` row so that it still counts);
* ``<image>.geojson``: RFC 7946 FeatureCollection in EPSG:4326 (lon/lat, exterior rings
  counter-clockwise, holes clockwise, no ``crs`` member), properties ``id``, ``confidence``,
  ``area_m2`` and ``ImageId``;
* ``<image>.gpkg``: a GeoPackage layer ``buildings`` in the image's own CRS;
* ``<image>_overlay.png``: the image with true positives (green), false positives (red) and
  misses (blue) against the image's labels, matched with the SpaceNet rule
  (``footprints.spacenet.match_frames``: one-to-one, IoU > 0.5); without labels every building is
  drawn in yellow.

For the run (``WriteRunOutputs``): ``buildings.csv`` and ``buildings.geojson`` concatenating
every image's. In an image series run each building also carries its persistent id
(TrackBuildings): the ``id`` of the GeoJSON and GeoPackage, an ``id`` column of the CSV. Every file is written to a temporary name and renamed when complete. The writers
are ``footprints.outputs``.
"""
from __future__ import annotations

import csv
import json

import luigi

from footprints import db, geojson
from footprints import outputs as fo
from footprints.atomic import atomic_path
from footprints.geo import as_affine, footprint_4326, geo_to_pixel, window_polygon
from footprints.labels import source_name
from footprints.names import image_id
from footprints.tiling import read_tile_index
from footprints.trackio import read_image_ids
from tasks.config import class_spec
from tasks.dedup import DeduplicateBorders
from tasks.keys import outputs_dir, run_key, track_key
from tasks.labels import LoadLabels
from tasks.progress import report
from tasks.sources import aoi_of, is_series, label_path
from tasks.tiling import TileImage
from tasks.track import TrackBuildings


class WriteOutputs(luigi.Task):
    """One image's buildings as SpaceNet CSV, GeoJSON (EPSG:4326), GeoPackage and overlay PNG."""

    image = luigi.Parameter(description="image id")
    overlay_max_side = luigi.IntParameter(default=2048, significant=False,
                                          description="longest side of the overlay PNG (pixels)")

    def requires(self):
        req = {"buildings": DeduplicateBorders(image=self.image), "tiles": TileImage(image=self.image)}
        labels = label_path(self.image)
        if labels is not None:
            req["labels"] = LoadLabels(path=str(labels))
        aoi = aoi_of(self.image)
        if aoi is not None:
            req["tracks"] = TrackBuildings(aoi=aoi)
        return req

    def output(self):
        d = outputs_dir() / "images"
        return {k: luigi.LocalTarget(str(d / f"{self.image}{suffix}")) for k, suffix in
                (("csv", ".csv"), ("geojson", ".geojson"), ("gpkg", ".gpkg"), ("png", "_overlay.png"))}

    def run(self):
        inp = self.input()
        index = read_tile_index(inp["tiles"].path)
        transform = as_affine(index["transform"])
        img_id = image_id(self.image)
        extent = window_polygon(transform, 0, 0, index["width"], index["height"])
        sources = [source_name(self.requires()["labels"].path)] if "labels" in inp else []
        with db.connection() as conn:
            classes = class_spec()[1]  # building types: class and conf_* on every building
            buildings = fo.read_buildings(conn, run_key(), self.image, classes)
            tracked = "tracks" in inp
            if tracked:
                ids = read_image_ids(conn, run_key(), track_key(), self.image)
                for b in buildings:
                    b["track_id"] = ids[b["building_id"]]
            srid = db.srid_for_crs(conn, index["crs_wkt"])
            truth = (fo.read_truth(conn, sources, extent, srid, footprint_4326(extent, index["crs_wkt"]))
                     if sources else None)
        report(self, 10, f"{len(buildings)} buildings")
        out = self.output()
        for t in out.values():
            t.makedirs()

        with out["csv"].open("w") as f:
            fo.write_spacenet_csv(f, fo.spacenet_rows(img_id, buildings, tracked, classes), tracked=tracked,
                                  classes=classes)
        with out["geojson"].open("w") as f:
            geojson.write_features(f, fo.geojson_features(img_id, buildings))
        with atomic_path(out["gpkg"].path) as tmp:  # GDAL picks the driver from the kept .gpkg suffix
            fo.write_geopackage(tmp, img_id, buildings, index["crs_wkt"])
        report(self, 40, "drawing the overlay")

        base, scale = fo.read_base_image(self._source(index), self.overlay_max_side)
        props = [b["geom_pix"] for b in buildings]
        if truth is None:
            layers = [(fo.UNMATCHED_COLOR, props)]
        else:
            truth_pix = [geo_to_pixel(g, transform) for g in truth]  # image CRS -> image pixels
            tp, missed = fo.match_buildings(truth_pix, props, [b["score"] for b in buildings])
            layers = [(fo.FN_COLOR, [g for g, m in zip(truth_pix, missed) if m]),
                      (fo.FP_COLOR, [p for p, ok in zip(props, tp) if not ok]),
                      (fo.TP_COLOR, [p for p, ok in zip(props, tp) if ok])]
        if classes:  # filled by class (misses still in blue), with a legend
            layers = [x for x in layers if x[0] == fo.FN_COLOR] + fo.class_layers(buildings, classes)
        rgb = fo.draw_overlay(base, layers, scale)
        if classes:
            rgb = fo.draw_legend(rgb, [(colour, name) for (colour, _), name in zip(fo.class_layers([], classes), classes)]
                                 + ([(fo.FN_COLOR, "missed label")] if truth is not None else []))
        with out["png"].temporary_path() as tmp:
            fo.write_png(tmp, rgb)
        report(self, 100, f"{len(buildings)} buildings written")

    def _source(self, index: dict) -> str:
        """The source image: the tile index's ``source``, else the ``images`` row."""
        if index.get("source"):
            return index["source"]
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT path FROM images WHERE image = %s", (self.image,))
            row = cur.fetchone()
        if row is None:
            raise FileNotFoundError(f"{self.input()['tiles'].path}: no 'source' and no images row for {self.image!r}")
        return row[0]


class WriteRunOutputs(luigi.Task):
    """The run's buildings in one SpaceNet CSV and one GeoJSON (every image's, concatenated)."""

    images = luigi.ListParameter(description="image ids of the run")

    def requires(self):
        return [WriteOutputs(image=i) for i in self.images]

    def output(self):
        d = outputs_dir()
        return {"csv": luigi.LocalTarget(str(d / "buildings.csv")),
                "geojson": luigi.LocalTarget(str(d / "buildings.geojson"))}

    def run(self):
        out = self.output()
        with out["csv"].open("w") as f:
            fo.write_spacenet_csv(f, [], tracked=is_series(), classes=class_spec()[1])
            for req in self.input():
                with open(req["csv"].path, newline="") as src:
                    rows = csv.reader(src)
                    next(rows, None)
                    fo.write_spacenet_csv(f, rows, header=False)

        def features():
            for req in self.input():
                with open(req["geojson"].path) as src:
                    yield from json.load(src)["features"]

        with out["geojson"].open("w") as f:
            geojson.write_features(f, features())
