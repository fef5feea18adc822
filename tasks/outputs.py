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
  (``tasks.evaluate.match_frames``: one-to-one, IoU > 0.5); without labels every building is
  drawn in yellow.

For the run (``WriteRunOutputs``): ``buildings.csv`` and ``buildings.geojson`` concatenating
every image's. Every file is written to a temporary name and renamed when complete.
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import luigi
import numpy as np
import shapely
from affine import Affine
from shapely.geometry import mapping
from shapely.geometry.polygon import orient

__all__ = [
    "CSV_HEADER", "TP_COLOR", "FP_COLOR", "FN_COLOR", "UNMATCHED_COLOR",
    "image_id", "to_wkt", "spacenet_rows", "write_spacenet_csv", "rfc7946_geometry", "feature_collection",
    "write_geojson", "write_geopackage", "match_buildings", "stretch_to_uint8", "read_base_image",
    "draw_overlay", "write_png", "read_buildings", "read_truth", "WriteOutputs", "WriteRunOutputs",
]

CSV_HEADER = ["ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo", "Confidence"]
TP_COLOR = (0, 230, 0)        # green: a building that matches a label
FP_COLOR = (255, 40, 40)      # red: a building that matches no label
FN_COLOR = (40, 110, 255)     # blue: a label no building matched (a miss)
UNMATCHED_COLOR = (255, 220, 0)  # yellow: a building, when the image has no labels
_SPACENET_ID = re.compile(r"(AOI_.+_img\d+)$")


# ---------------------------------------------------------------- pure functions


def image_id(image: str) -> str:
    """The SpaceNet ImageId of an image: its ``AOI_<n>_<city>_img<k>`` suffix when it has one
    (``RGB-PanSharpen_AOI_2_Vegas_img1`` -> ``AOI_2_Vegas_img1``), else the image id itself."""
    m = _SPACENET_ID.search(str(image))
    return m.group(1) if m else str(image)


def to_wkt(geom) -> str:
    """WKT with every significant digit (no rounding), 2-D."""
    if geom is None or geom.is_empty:
        return "POLYGON EMPTY"
    return shapely.to_wkt(geom, rounding_precision=-1, trim=True, output_dimension=2)


def spacenet_rows(img_id: str, buildings) -> list[list]:
    """SpaceNet CSV rows for one image. ``buildings``: dicts with ``building_id``, ``score``,
    ``geom_pix`` and ``geom_4326``. No buildings: one ``POLYGON EMPTY`` row (SpaceNet's way of
    listing an image with nothing in it)."""
    if not buildings:
        return [[img_id, -1, "POLYGON EMPTY", "POLYGON EMPTY", 1]]
    return [[img_id, int(b["building_id"]), to_wkt(b["geom_pix"]), to_wkt(b["geom_4326"]), float(b["score"])]
            for b in buildings]


def write_spacenet_csv(f, rows, header: bool = True) -> None:
    w = csv.writer(f, lineterminator="\n")
    if header:
        w.writerow(CSV_HEADER)
    w.writerows(rows)


def rfc7946_geometry(geom) -> dict:
    """GeoJSON geometry of a lon/lat (multi)polygon with RFC 7946 winding: exterior rings
    counter-clockwise, holes clockwise."""
    if geom.geom_type == "Polygon":
        g = orient(geom, sign=1.0)
    elif geom.geom_type == "MultiPolygon":
        g = shapely.MultiPolygon([orient(p, sign=1.0) for p in geom.geoms])
    else:
        raise ValueError(f"only polygons go into the buildings GeoJSON, not {geom.geom_type}")
    return mapping(g)


def _check_lonlat(geom, img_id: str) -> None:
    x0, y0, x1, y1 = geom.bounds
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise ValueError(f"image {img_id}: building outside lon/lat range {geom.bounds}; "
                         "geom_4326 must be EPSG:4326 (lon, lat)")


def geojson_features(img_id: str, buildings) -> list[dict]:
    out = []
    for b in buildings:
        g = b["geom_4326"]
        _check_lonlat(g, img_id)
        out.append({
            "type": "Feature",
            "id": f"{img_id}:{int(b['building_id'])}",
            "geometry": rfc7946_geometry(g),
            "properties": {"id": int(b["building_id"]), "confidence": float(b["score"]),
                           "area_m2": float(b["area_m2"]), "ImageId": img_id},
        })
    return out


def feature_collection(img_id: str, buildings) -> dict:
    """RFC 7946 FeatureCollection (EPSG:4326, no ``crs`` member) of one image's buildings."""
    return {"type": "FeatureCollection", "features": geojson_features(img_id, buildings)}


def write_geojson(f, features) -> None:
    """Stream a FeatureCollection: features one by one (bounded memory for a whole run)."""
    f.write('{"type": "FeatureCollection", "features": [')
    for i, feat in enumerate(features):
        f.write(",\n" if i else "\n")
        f.write(json.dumps(feat, allow_nan=False))
    f.write("\n]}\n")


def write_geopackage(path, img_id: str, buildings, crs_wkt: str) -> None:
    """A GeoPackage layer ``buildings`` in the image CRS (``geom`` of each building)."""
    import geopandas as gpd
    import pyogrio

    gdf = gpd.GeoDataFrame(
        {"ImageId": [img_id] * len(buildings),
         "id": np.array([int(b["building_id"]) for b in buildings], dtype=np.int64),
         "confidence": np.array([float(b["score"]) for b in buildings], dtype=np.float64),
         "area_m2": np.array([float(b["area_m2"]) for b in buildings], dtype=np.float64)},
        geometry=[b["geom"] for b in buildings], crs=crs_wkt)
    pyogrio.write_dataframe(gdf, str(path), driver="GPKG", layer="buildings", geometry_type="Polygon")


def match_buildings(truth, proposals, scores, iou: float = 0.5):
    """SpaceNet matching of one image (one-to-one, descending confidence, IoU > ``iou``).
    Returns boolean arrays (proposal is a true positive, truth is missed)."""
    from tasks.evaluate import make_frame, match_frames

    truth = list(truth)
    proposals = list(proposals)
    t = make_frame(["img"] * len(truth), truth)
    p = make_frame(["img"] * len(proposals), proposals, scores)
    m = match_frames(t, p, iou=iou, min_area=0.0)
    missed = m.fn(np.asarray(t["area"])) if len(truth) else np.zeros(0, bool)
    return np.asarray(m.tp, bool), np.asarray(missed, bool)


def stretch_to_uint8(arr: np.ndarray, nodata=None) -> np.ndarray:
    """(bands, H, W) any dtype -> (H, W, 3) uint8, each band stretched between its 2nd and
    98th percentiles; one band is shown in grey."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    a = a[:3]
    valid = np.ones(a.shape[1:], bool) if nodata is None else ~np.all(a == nodata, axis=0)
    out = np.zeros(a.shape, np.uint8)
    for i, band in enumerate(a):
        v = band[valid & np.isfinite(band)]
        if not v.size:
            continue
        lo, hi = np.percentile(v, [2, 98])
        if hi <= lo:
            hi = lo + 1
        out[i] = np.clip((band - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    if out.shape[0] == 1:
        out = np.repeat(out, 3, axis=0)
    elif out.shape[0] == 2:
        out = np.concatenate([out, out[:1]])
    return np.moveaxis(out, 0, -1)


def read_base_image(path, max_side: int = 2048):
    """The image as (H', W', 3) uint8, decimated so that its longer side is at most
    ``max_side`` (a decimated read: memory stays bounded), and the (sx, sy) scale from image
    pixels to overlay pixels."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        f = max(src.width, src.height) / max_side
        f = max(f, 1.0)
        w, h = max(1, round(src.width / f)), max(1, round(src.height / f))
        bands = list(range(1, min(src.count, 3) + 1))
        arr = src.read(bands, out_shape=(len(bands), h, w), resampling=Resampling.average if f > 1 else Resampling.nearest)
        rgb = stretch_to_uint8(arr, src.nodata)
        return rgb, (w / src.width, h / src.height)


def draw_overlay(base: np.ndarray, layers, scale=(1.0, 1.0), fill_alpha: float = 0.3, line_px: int = 1) -> np.ndarray:
    """``base`` (H, W, 3) uint8 with each layer's polygons (image pixel coordinates) filled
    translucently and outlined. ``layers``: [(colour (r, g, b), [polygons])], drawn in order."""
    from rasterio import features

    out = base.astype(np.float32).copy()
    h, w = base.shape[:2]
    sx, sy = scale
    to_overlay = Affine.scale(1 / sx, 1 / sy)  # overlay pixel -> image pixel, as rasterize wants
    for colour, polys in layers:
        polys = [p for p in polys if p is not None and not p.is_empty]
        if not polys:
            continue
        col = np.asarray(colour, np.float32)
        fill = features.rasterize(((p, 1) for p in polys), out_shape=(h, w), transform=to_overlay,
                                  fill=0, dtype="uint8").astype(bool)
        out[fill] = (1 - fill_alpha) * out[fill] + fill_alpha * col
        lines = [p.boundary for p in polys]
        if line_px > 1:
            lines = [shapely.buffer(l, (line_px - 1) / 2 / min(sx, sy)) for l in lines]
        edge = features.rasterize(((l, 1) for l in lines), out_shape=(h, w), transform=to_overlay,
                                  fill=0, dtype="uint8", all_touched=True).astype(bool)
        out[edge] = col
    return np.clip(out, 0, 255).astype(np.uint8)


def write_png(path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb, mode="RGB").save(path, format="PNG", optimize=False)


# ---------------------------------------------------------------- database reads


def read_buildings(conn, run: str, image: str) -> list[dict]:
    from tasks.db import load_sql

    with conn.cursor() as cur:
        cur.execute(load_sql("buildings_select"), {"run": run, "image": image})
        rows = cur.fetchall()
    out = []
    for bid, score, area, srid, pix, geo, g4326 in rows:
        out.append({"building_id": bid, "score": score, "area_m2": area, "srid": srid,
                    "geom_pix": shapely.from_wkb(bytes(pix)), "geom": shapely.from_wkb(bytes(geo)),
                    "geom_4326": shapely.from_wkb(bytes(g4326))})
    return out


def read_truth(conn, sources: list[str], extent_native, srid: int, extent_4326) -> list:
    """The labels of ``sources`` that touch the image, in the image CRS, clipped to it."""
    from tasks.db import load_sql

    if not sources:
        return []
    with conn.cursor() as cur:
        cur.execute(load_sql("buildings_truth"), {
            "sources": list(sources), "srid": int(srid), "extent": shapely.to_wkb(extent_native),
            "extent_4326": shapely.to_wkb(extent_4326)})
        return [shapely.from_wkb(bytes(r[0])) for r in cur.fetchall()]


# ---------------------------------------------------------------- the tasks


def outputs_dir() -> Path:
    from tasks.config import workdir
    from tasks.polygonize import run_key

    return workdir() / "outputs" / run_key()


class WriteOutputs(luigi.Task):
    """One image's buildings as SpaceNet CSV, GeoJSON (EPSG:4326), GeoPackage and overlay PNG."""

    image = luigi.Parameter(description="image id")
    overlay_max_side = luigi.IntParameter(default=2048, significant=False,
                                          description="longest side of the overlay PNG (pixels)")

    def requires(self):
        from tasks.dedup import DeduplicateBorders
        from tasks.tiling import TileImage

        req = {"buildings": DeduplicateBorders(image=self.image), "tiles": TileImage(image=self.image)}
        labels = self._label_path()
        if labels is not None:
            from tasks.labels import LoadLabels

            req["labels"] = LoadLabels(path=str(labels))
        return req

    def _label_path(self):
        try:
            from tasks.sources import label_path
        except ImportError:
            return None
        return label_path(self.image)

    def output(self):
        d = outputs_dir() / "images"
        return {k: luigi.LocalTarget(str(d / f"{self.image}{suffix}")) for k, suffix in
                (("csv", ".csv"), ("geojson", ".geojson"), ("gpkg", ".gpkg"), ("png", "_overlay.png"))}

    def run(self):
        from tasks import db
        from tasks.polygonize import report, run_key
        from tasks.tiling import footprint_4326, window_polygon

        inp = self.input()
        with open(inp["tiles"].path) as f:
            index = json.load(f)
        transform = Affine(*index["transform"][:6])
        width, height = index["width"], index["height"]
        img_id = image_id(self.image)
        extent = window_polygon(transform, 0, 0, width, height)
        sources = []
        if "labels" in inp:
            from tasks.labels import source_name

            sources = [source_name(self.requires()["labels"].path)]
        with db.connection() as conn:
            buildings = read_buildings(conn, run_key(), self.image)
            srid = db.srid_for_crs(conn, index["crs_wkt"])
            truth = read_truth(conn, sources, extent, srid, footprint_4326(extent, index["crs_wkt"])) if sources else None
        report(self, 10, f"{len(buildings)} buildings")
        out = self.output()
        for t in out.values():
            t.makedirs()

        with out["csv"].open("w") as f:
            write_spacenet_csv(f, spacenet_rows(img_id, buildings))
        with out["geojson"].open("w") as f:
            write_geojson(f, geojson_features(img_id, buildings))
        gpkg = Path(out["gpkg"].path)
        tmp = gpkg.with_name(f".{gpkg.stem}.tmp-{os.getpid()}.gpkg")  # GDAL wants the extension
        try:
            write_geopackage(tmp, img_id, buildings, index["crs_wkt"])
            os.replace(tmp, gpkg)
        finally:
            tmp.unlink(missing_ok=True)
        report(self, 40, "drawing the overlay")

        source = index.get("source")
        if not source:
            with db.connection() as conn, conn.cursor() as cur:
                cur.execute("SELECT path FROM images WHERE image = %s", (self.image,))
                row = cur.fetchone()
            if row is None:
                raise FileNotFoundError(f"{inp['tiles'].path}: no 'source' and no images row for {self.image!r}")
            source = row[0]
        base, scale = read_base_image(source, self.overlay_max_side)
        props = [b["geom_pix"] for b in buildings]
        if truth is None:
            layers = [(UNMATCHED_COLOR, props)]
        else:
            from tasks.polygonize import pixel_to_geo

            truth_pix = [pixel_to_geo(g, ~transform) for g in truth]  # image CRS -> image pixels
            tp, missed = match_buildings(truth_pix, props, [b["score"] for b in buildings])
            layers = [(FN_COLOR, [g for g, m in zip(truth_pix, missed) if m]),
                      (FP_COLOR, [p for p, ok in zip(props, tp) if not ok]),
                      (TP_COLOR, [p for p, ok in zip(props, tp) if ok])]
        rgb = draw_overlay(base, layers, scale)
        with out["png"].temporary_path() as tmp:
            write_png(tmp, rgb)
        report(self, 100, f"{len(buildings)} buildings written")


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
            write_spacenet_csv(f, [])
            for req in self.input():
                with open(req["csv"].path, newline="") as src:
                    rows = csv.reader(src)
                    next(rows, None)
                    write_spacenet_csv(f, rows, header=False)

        def features():
            for req in self.input():
                with open(req["geojson"].path) as src:
                    yield from json.load(src)["features"]

        with out["geojson"].open("w") as f:
            write_geojson(f, features())
