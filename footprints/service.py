"""The prediction service's library side: what needs neither Keras nor the web framework.

The HTTP server is :mod:`models.service` (it needs the Keras predictor, which this library
never imports); here are its settings' defaults, the checks of a request (the uploaded GeoTIFF,
the thresholds, the bounding box), ``tuning.json`` and the PostGIS reads behind
``GET /buildings`` and the map page. A bad request is a :class:`RequestError` (HTTP status and
a one-line message naming the problem).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window

from footprints.db import load_sql
from footprints.errors import InputError
from footprints.names import image_id
from footprints.outputs import geojson_features

__all__ = ["DEFAULTS", "RequestError", "read_tuning", "polygon_params", "check_geotiff", "parse_bbox",
           "buildings_in_bbox", "run_names", "run_images", "overlay_path", "TUNING_FILE"]

# The DAG's defaults (tasks/config.py: [tiling], [predict] tta, [polygonize], [dedup]); the service applies the
# same rules with the same numbers, so that it gives the buildings the pipeline gives
# (tests/models/test_service.py checks that the two agree).
DEFAULTS = {"tile_size": 512, "overlap": 64, "threshold": 0.5, "min_area_m2": 5.0, "simplify_px": 1.0,
            "halo_px": 8, "merge_overlap": 0.5, "min_shared_px": 1.0, "tta": 8}
TUNING_FILE = "tuning.json"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class RequestError(Exception):
    """A request the service cannot serve: ``status`` (400, 404, 413, 503, ...) and ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = message

    def body(self) -> dict:
        return {"error": self.message, "status": self.status}


# ---------------------------------------------------------------- thresholds


def read_tuning(model_file, path=None) -> dict:
    """``threshold`` and ``min_area_m2`` from ``tuning.json`` beside the model (TuneThreshold
    writes it there), or from ``path``, when it exists ({} otherwise; a ``path`` given must
    exist). Other keys are ignored; a value that is not a number is an InputError naming the
    file (the server refuses to start rather than serve other thresholds)."""
    if path is not None and not Path(path).is_file():
        raise InputError(path, "no such tuning file")
    path = Path(path) if path is not None else Path(model_file).with_name(TUNING_FILE)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(path, f"not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError(path, "must be a JSON object with 'threshold' and/or 'min_area_m2'")
    out = {}
    for key in ("threshold", "min_area_m2"):
        if key in data:
            try:
                out[key] = _check(key, data[key])
            except ValueError as e:
                raise InputError(path, str(e)) from None
    return out


def _check(key: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{key} must be finite, got {value!r}")
    if key == "threshold" and not 0.0 <= v < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {v}")
    if key == "min_area_m2" and v < 0:
        raise ValueError(f"min_area_m2 must be >= 0, got {v}")
    return v


def polygon_params(query, tuning: dict, defaults: dict) -> dict:
    """``threshold`` and ``min_area_m2`` of one request: a query parameter wins, then
    ``tuning.json``, then ``defaults``. A bad value is a 400."""
    out = {}
    for key in ("threshold", "min_area_m2"):
        if key in query:
            try:
                out[key] = _check(key, query[key])
            except ValueError as e:
                raise RequestError(400, f"query parameter {e}") from None
        else:
            out[key] = float(tuning.get(key, defaults[key]))
    return out


# ---------------------------------------------------------------- the uploaded GeoTIFF


def check_geotiff(path, bands: int) -> dict:
    """The upload at ``path`` as the model can take it: a GeoTIFF with a CRS, a geotransform and
    ``bands`` bands, readable to its last block. Returns its width, height, count, dtype and
    CRS (WKT); anything else is a 400 naming the problem."""
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError:
        raise RequestError(400, "the body is not a GeoTIFF (send the image as Content-Type: image/tiff)") from None
    with src:
        if src.driver != "GTiff":
            raise RequestError(400, f"the body is a {src.driver} raster, not a GeoTIFF")
        if src.crs is None:
            raise RequestError(400, "the GeoTIFF has no CRS (assign one, e.g. gdal_edit.py -a_srs EPSG:32616)")
        if src.transform == Affine.identity() and not src.gcps[0]:
            raise RequestError(400, "the GeoTIFF has no geotransform (pixel coordinates only)")
        if src.count != bands:
            raise RequestError(400, f"the GeoTIFF has {src.count} band{'s' if src.count != 1 else ''}, "
                                    f"the model takes {bands}")
        try:  # a truncated upload loses its tail: the last block of the last band
            src.read(src.count, window=Window(src.width - 1, src.height - 1, 1, 1))
        except rasterio.errors.RasterioError:
            raise RequestError(400, "the GeoTIFF is truncated or corrupt (its last block cannot be read)") from None
        return {"width": src.width, "height": src.height, "count": src.count, "dtype": src.dtypes[0],
                "crs": src.crs.to_wkt()}


# ---------------------------------------------------------------- PostGIS reads


def parse_bbox(text: str | None) -> tuple[float, float, float, float]:
    """``minlon,minlat,maxlon,maxlat`` (EPSG:4326) -> a tuple; a 400 unless it is a valid box."""
    if not text:
        raise RequestError(400, "bbox is required: bbox=minlon,minlat,maxlon,maxlat (EPSG:4326)")
    try:
        v = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise RequestError(400, f"bbox must be four numbers minlon,minlat,maxlon,maxlat, got {text!r}") from None
    if len(v) != 4 or not all(math.isfinite(x) for x in v):
        raise RequestError(400, f"bbox must be four numbers minlon,minlat,maxlon,maxlat, got {text!r}")
    x0, y0, x1, y1 = v
    if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
        raise RequestError(400, f"bbox {text!r} is not minlon < maxlon in [-180, 180], minlat < maxlat in [-90, 90]")
    return v


def check_name(what: str, value: str | None) -> str:
    """A run key or image id as it may appear in a URL (letters, digits, ``_ . -``)."""
    if not value or not _NAME.match(value) or value in (".", ".."):
        raise RequestError(400, f"{what} must be a {what} name (letters, digits, '_', '.', '-'), got {value!r}")
    return value


def buildings_in_bbox(conn, run: str, bbox, image: str | None = None, limit: int = 100_000) -> dict:
    """The buildings of a finished ``run`` (PostGIS ``buildings``) that intersect ``bbox``
    (lon/lat), as an RFC 7946 FeatureCollection with the properties of the run's GeoJSON files
    (``id``, ``confidence``, ``area_m2``, ``ImageId``, and ``class`` with building types);
    ``image`` limits it to one image. At
    most ``limit`` buildings; ``truncated`` says when there were more."""
    x0, y0, x1, y1 = bbox
    with conn.cursor() as cur:
        cur.execute(load_sql("buildings_bbox"), {"run": run, "image": image, "minlon": x0, "minlat": y0,
                                                 "maxlon": x1, "maxlat": y1, "limit": int(limit) + 1})
        rows = cur.fetchall()
    features = []
    for img, bid, score, area, g, cls in rows[:limit]:
        b = {"building_id": bid, "score": score, "area_m2": area, "geom_4326": shapely.from_wkb(bytes(g))}
        features += geojson_features(image_id(img), [b])
        if cls is not None:  # building types: the class (the conf_* names are the run's settings)
            features[-1]["properties"]["class"] = cls
    out = {"type": "FeatureCollection", "features": features}
    if len(rows) > limit:
        out["truncated"] = True
    return out


def run_names(conn) -> list[str]:
    """The runs that have buildings in PostGIS."""
    with conn.cursor() as cur:
        cur.execute(load_sql("buildings_runs"))
        return [r[0] for r in cur.fetchall()]


def run_images(conn, run: str, outputs_dir=None) -> list[dict]:
    """The images of ``run`` that have buildings: ``image``, ``bounds`` (lon/lat extent of the
    image, or of its buildings where the image is not registered) and ``overlay`` (the URL of
    WriteOutputs' overlay PNG, or None when there is none under ``outputs_dir``)."""
    with conn.cursor() as cur:
        cur.execute(load_sql("buildings_run_images"), {"run": run})
        rows = cur.fetchall()
    out = []
    for img, x0, y0, x1, y1, n in rows:
        png = overlay_path(outputs_dir, run, img) if outputs_dir else None
        out.append({"image": img, "bounds": [x0, y0, x1, y1], "buildings": n,
                    "overlay": f"/overlay/{run}/{img}.png" if png is not None and png.is_file() else None})
    return out


def overlay_path(outputs_dir, run: str, image: str) -> Path:
    """``<outputs>/<run>/images/<image>_overlay.png`` (WriteOutputs'), names checked so that the
    path stays under ``outputs_dir``."""
    return Path(outputs_dir) / check_name("run", run) / "images" / f"{check_name('image', image)}_overlay.png"
