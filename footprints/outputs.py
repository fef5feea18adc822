"""The buildings of an image as files: SpaceNet CSV, RFC 7946 GeoJSON, GeoPackage, overlay PNG.

* SpaceNet CSV ``ImageId,BuildingId,PolygonWKT_Pix,PolygonWKT_Geo,Confidence`` (pixel WKT in image
  pixel coordinates, geo WKT in lon/lat as in SpaceNet's own CSVs; an image without buildings
  gets one ``-1,POLYGON EMPTY,POLYGON EMPTY`` row so that it still counts);
* GeoJSON: RFC 7946 FeatureCollection in EPSG:4326 (:mod:`footprints.geojson`'s writer),
  properties ``id``, ``confidence``, ``area_m2`` and ``ImageId``;
* GeoPackage: a layer ``buildings`` in the image's own CRS;
* image series: a building's persistent id (``track_id``, from TrackBuildings) is the ``id``
  property of the GeoJSON and the GeoPackage (the per-image number moves to ``BuildingId``) and
  an ``id`` column after ``Confidence`` in the CSV;
* overlay PNG: the image with true positives (green), false positives (red) and misses (blue)
  against the image's labels, matched with the SpaceNet rule (:func:`footprints.spacenet.match_frames`:
  one-to-one, IoU > 0.5); without labels every building is drawn in yellow.
* building types: every building also has a ``class`` and one ``conf_<class>`` (lower case) per
  class, the mean probability of that class inside it: columns after the standard ones in the
  CSV, properties in the GeoJSON, fields in the GeoPackage. The overlay then fills each building
  with its class's colour (misses in blue), and a legend names the colours.

A building is a dict with ``building_id``, ``score``, ``area_m2``, ``geom_pix`` (image pixels),
``geom`` (image CRS) and ``geom_4326`` (lon/lat), as :func:`read_buildings` returns them from
PostGIS.
"""
from __future__ import annotations

import csv
import re

import numpy as np
import rasterio
import shapely
from affine import Affine
from PIL import Image, ImageDraw
from rasterio import features
from rasterio.enums import Resampling

from footprints import geojson
from footprints.db import load_sql
from footprints.spacenet import make_frame, match_frames

__all__ = [
    "CSV_HEADER", "TP_COLOR", "FP_COLOR", "FN_COLOR", "UNMATCHED_COLOR",
    "to_wkt", "spacenet_rows", "write_spacenet_csv", "geojson_features", "feature_collection",
    "write_geopackage", "match_buildings", "stretch_to_uint8", "read_base_image",
    "draw_overlay", "write_png", "read_buildings", "read_truth",
]

CSV_HEADER = ["ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo", "Confidence"]
TRACK_COLUMN = "id"  # image series: the persistent id, after CSV_HEADER
TP_COLOR = (0, 230, 0)        # green: a building that matches a label
FP_COLOR = (255, 40, 40)      # red: a building that matches no label
FN_COLOR = (40, 110, 255)     # blue: a label no building matched (a miss)
UNMATCHED_COLOR = (255, 220, 0)  # yellow: a building, when the image has no labels
# building types: the fill of each class, in the order of [data] classes (then again)
CLASS_COLORS = ((0, 200, 0), (255, 150, 0), (200, 60, 255), (0, 200, 220), (255, 60, 120), (170, 140, 90))


def conf_column(name: str) -> str:
    """``conf_<class>`` in lower case (non-word characters become ``_``): ``conf_complete``."""
    return "conf_" + re.sub(r"\W+", "_", str(name).strip().lower())


def class_columns(classes) -> list[str]:
    """``["class", "conf_<class 1>", ...]`` (none without building types)."""
    return ["class", *(conf_column(c) for c in classes)] if classes else []


def class_values(b, classes) -> list:
    """A building's ``class`` and confidences in the order of ``classes`` (empty without)."""
    if not classes:
        return []
    conf = b.get("conf") or {}
    return [b.get("class") or "", *(float(conf.get(c, 0.0)) for c in classes)]


# ---------------------------------------------------------------- SpaceNet CSV


def to_wkt(geom) -> str:
    """WKT with every significant digit (no rounding), 2-D."""
    if geom is None or geom.is_empty:
        return "POLYGON EMPTY"
    return shapely.to_wkt(geom, rounding_precision=-1, trim=True, output_dimension=2)


def spacenet_rows(img_id: str, buildings, tracked: bool = False, classes=()) -> list[list]:
    """SpaceNet CSV rows for one image. ``buildings``: dicts with ``building_id``, ``score``,
    ``geom_pix`` and ``geom_4326`` (and ``track_id`` when ``tracked``: an ``id`` column is
    appended). No buildings: one ``POLYGON EMPTY`` row (SpaceNet's way of listing an image with
    nothing in it). ``classes`` (building types): ``class`` and ``conf_*`` columns last."""
    if not buildings:
        return [[img_id, -1, "POLYGON EMPTY", "POLYGON EMPTY", 1] + ([-1] if tracked else [])
                + (["", *([""] * len(classes))] if classes else [])]
    return [[img_id, int(b["building_id"]), to_wkt(b["geom_pix"]), to_wkt(b["geom_4326"]), float(b["score"])]
            + ([int(b["track_id"])] if tracked else []) + class_values(b, classes) for b in buildings]


def write_spacenet_csv(f, rows, header: bool = True, tracked: bool = False, classes=()) -> None:
    w = csv.writer(f, lineterminator="\n")
    if header:
        w.writerow(CSV_HEADER + ([TRACK_COLUMN] if tracked else []) + class_columns(classes))
    w.writerows(rows)


# ---------------------------------------------------------------- GeoJSON and GeoPackage


def _id_properties(b) -> dict:
    """``id``: the building's number in its image, or its persistent id when it has one (the
    number is then ``BuildingId``)."""
    if "track_id" in b:
        return {"id": int(b["track_id"]), "BuildingId": int(b["building_id"])}
    return {"id": int(b["building_id"])}


def geojson_features(img_id: str, buildings) -> list[dict]:
    """RFC 7946 Features (lon/lat, id ``<ImageId>:<building id>``) of one image's buildings.
    A ``geom_4326`` outside the lon/lat range is a ValueError (never GeoJSON in metres)."""
    return [geojson.feature(b["geom_4326"],
                            {**_id_properties(b), "confidence": float(b["score"]),
                             "area_m2": float(b["area_m2"]), "ImageId": img_id, **_class_properties(b)},
                            fid=f"{img_id}:{int(b['building_id'])}")
            for b in buildings]


def _class_properties(b) -> dict:
    """``class`` and ``conf_<class>`` of a building with building types, else nothing."""
    if b.get("conf") is None:
        return {}
    return {"class": b.get("class"), **{conf_column(c): float(v) for c, v in b["conf"].items()}}


def feature_collection(img_id: str, buildings) -> dict:
    """RFC 7946 FeatureCollection (EPSG:4326, no ``crs`` member) of one image's buildings."""
    return {"type": "FeatureCollection", "features": geojson_features(img_id, buildings)}


def write_geopackage(path, img_id: str, buildings, crs_wkt: str) -> None:
    """A GeoPackage layer ``buildings`` in the image CRS (``geom`` of each building)."""
    import geopandas as gpd  # noqa: PLC0415 - heavy, only the GeoPackage writer needs it
    import pyogrio  # noqa: PLC0415 - comes with geopandas, only the GeoPackage writer needs it

    ids = {k: np.array([_id_properties(b)[k] for b in buildings], dtype=np.int64)
           for k in (_id_properties(buildings[0]) if buildings else {"id": 0})}
    gdf = gpd.GeoDataFrame(
        {"ImageId": [img_id] * len(buildings), **ids,
         "confidence": np.array([float(b["score"]) for b in buildings], dtype=np.float64),
         "area_m2": np.array([float(b["area_m2"]) for b in buildings], dtype=np.float64),
         **_class_fields(buildings)},
        geometry=[b["geom"] for b in buildings], crs=crs_wkt)
    pyogrio.write_dataframe(gdf, str(path), driver="GPKG", layer="buildings", geometry_type="Polygon")


def _class_fields(buildings) -> dict:
    """GeoPackage fields ``class`` and ``conf_*`` of buildings with building types."""
    if not buildings or buildings[0].get("conf") is None:
        return {}
    out = {"class": [b.get("class") for b in buildings]}
    for c in buildings[0]["conf"]:
        out[conf_column(c)] = np.array([float(b["conf"][c]) for b in buildings], dtype=np.float64)
    return out


# ---------------------------------------------------------------- the overlay


def match_buildings(truth, proposals, scores, iou: float = 0.5):
    """SpaceNet matching of one image (one-to-one, descending confidence, IoU > ``iou``).
    Returns boolean arrays (proposal is a true positive, truth is missed)."""
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


# 8-band imagery is WorldView-2/3's band order (SpaceNet's MUL-PanSharpen, the 8-band demo):
# red, green and blue are bands 5, 3 and 2
WORLDVIEW_RGB = (5, 3, 2)


def read_base_image(path, max_side: int = 2048):
    """The image as (H', W', 3) uint8, decimated so that its longer side is at most
    ``max_side`` (a decimated read: memory stays bounded), and the (sx, sy) scale from image
    pixels to overlay pixels. Each band is stretched (2nd..98th percentile); 8-band images are
    shown as bands 5, 3, 2 (WorldView's red, green, blue)."""
    with rasterio.open(path) as src:
        f = max(src.width, src.height) / max_side
        f = max(f, 1.0)
        w, h = max(1, round(src.width / f)), max(1, round(src.height / f))
        bands = list(WORLDVIEW_RGB) if src.count == 8 else list(range(1, min(src.count, 3) + 1))
        arr = src.read(bands, out_shape=(len(bands), h, w), resampling=Resampling.average if f > 1 else Resampling.nearest)
        rgb = stretch_to_uint8(arr, src.nodata)
        return rgb, (w / src.width, h / src.height)


def draw_overlay(base: np.ndarray, layers, scale=(1.0, 1.0), fill_alpha: float = 0.3, line_px: int = 1) -> np.ndarray:
    """``base`` (H, W, 3) uint8 with each layer's polygons (image pixel coordinates) filled
    translucently and outlined. ``layers``: [(colour (r, g, b), [polygons])], drawn in order."""
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
            lines = [shapely.buffer(ln, (line_px - 1) / 2 / min(sx, sy)) for ln in lines]
        edge = features.rasterize(((ln, 1) for ln in lines), out_shape=(h, w), transform=to_overlay,
                                  fill=0, dtype="uint8", all_touched=True).astype(bool)
        out[edge] = col
    return np.clip(out, 0, 255).astype(np.uint8)


def class_layers(buildings, classes) -> list:
    """Overlay layers of buildings with building types: ``(colour, polygons)`` per class, in
    the order of ``classes`` (colours :data:`CLASS_COLORS`)."""
    return [(CLASS_COLORS[i % len(CLASS_COLORS)], [b["geom_pix"] for b in buildings if b.get("class") == c])
            for i, c in enumerate(classes)]


def draw_legend(rgb: np.ndarray, entries, scale: int = 1) -> np.ndarray:
    """``rgb`` with a legend box in its top-left corner: a colour swatch and a name per entry
    (``[(colour, text)]``)."""
    img = Image.fromarray(rgb, mode="RGB")
    d = ImageDraw.Draw(img)
    line, pad = 14 * scale, 6 * scale
    width = pad * 3 + line + max((int(d.textlength(t)) * scale for _, t in entries), default=0)
    d.rectangle([0, 0, width, pad * 2 + line * len(entries)], fill=(255, 255, 255), outline=(0, 0, 0))
    for i, (colour, text) in enumerate(entries):
        y = pad + i * line
        d.rectangle([pad, y + 2, pad + line - 4, y + line - 2], fill=tuple(colour), outline=(0, 0, 0))
        d.text((pad * 2 + line, y + 1), text, fill=(0, 0, 0))
    return np.asarray(img)


def write_png(path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb, mode="RGB").save(path, format="PNG", optimize=False)


# ---------------------------------------------------------------- database reads


def read_buildings(conn, run: str, image: str, classes=()) -> list[dict]:
    """The deduplicated buildings of ``image`` in ``run`` (dicts as the writers above take).
    ``classes`` (building types, in the order of their confidences): each building also gets
    ``class`` and ``conf`` (``{class: mean probability}``)."""
    with conn.cursor() as cur:
        cur.execute(load_sql("buildings_select"), {"run": run, "image": image})
        rows = cur.fetchall()
    out = []
    for bid, score, area, srid, pix, geo, g4326, cls, conf in rows:
        b = {"building_id": bid, "score": score, "area_m2": area, "srid": srid,
             "geom_pix": shapely.from_wkb(bytes(pix)), "geom": shapely.from_wkb(bytes(geo)),
             "geom_4326": shapely.from_wkb(bytes(g4326))}
        if classes:
            b["class"] = cls
            b["conf"] = {c: float(v or 0.0) for c, v in zip(classes, conf or [0.0] * len(classes))}
        out.append(b)
    return out


def read_truth(conn, sources: list[str], extent_native, srid: int, extent_4326, with_class: bool = False) -> list:
    """The labels of ``sources`` that touch the image, in the image CRS, clipped to it.
    ``with_class`` (building types): ``(polygon, class)`` pairs."""
    if not sources:
        return []
    with conn.cursor() as cur:
        cur.execute(load_sql("buildings_truth"), {
            "sources": list(sources), "srid": int(srid), "extent": shapely.to_wkb(extent_native),
            "extent_4326": shapely.to_wkb(extent_4326)})
        rows = cur.fetchall()
    if with_class:
        return [(shapely.from_wkb(bytes(r[0])), r[1]) for r in rows]
    return [shapely.from_wkb(bytes(r[0])) for r in rows]
