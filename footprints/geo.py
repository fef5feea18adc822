"""Windows, affine transforms, pixel <-> CRS coordinates, and reprojection to EPSG:4326.

Everything takes an ``Affine`` (or its 6 coefficients) and plain numbers or shapely geometries,
so it is tested without rasters or Luigi.
"""
from __future__ import annotations

import functools

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry import Polygon


def as_affine(transform) -> Affine:
    """An ``Affine`` from an ``Affine`` or a sequence of at least 6 coefficients (a, b, c, d, e, f)."""
    if isinstance(transform, Affine):
        return transform
    t = list(transform)
    if len(t) < 6:
        raise ValueError(f"an affine transform needs 6 coefficients (a, b, c, d, e, f), got {t!r}")
    return Affine(*t[:6])


def pixel_area(transform) -> float:
    """Area of one pixel in squared units of the CRS: |a·e − b·d|."""
    t = as_affine(transform)
    return float(abs(t.a * t.e - t.b * t.d))


def pixel_size(transform) -> float:
    """Edge of a square pixel of the same area, CRS units."""
    return float(np.sqrt(pixel_area(transform)))


def window_transform(transform, col_off: float, row_off: float) -> Affine:
    """Transform of a window whose top-left pixel is (col_off, row_off)."""
    return as_affine(transform) @ Affine.translation(col_off, row_off)


def window_corners(transform, col_off: float, row_off: float, width: float, height: float) -> list:
    t = as_affine(transform)
    return [t @ c for c in ((col_off, row_off), (col_off + width, row_off),
                            (col_off + width, row_off + height), (col_off, row_off + height))]


def window_polygon(transform, col_off: float, row_off: float, width: float, height: float) -> Polygon:
    """The window's footprint in the raster's CRS (handles rotated transforms)."""
    return Polygon(window_corners(transform, col_off, row_off, width, height))


def window_bounds(transform, width: float, height: float) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a window with the given affine transform."""
    xs, ys = zip(*window_corners(transform, 0, 0, width, height))
    return min(xs), min(ys), max(xs), max(ys)


def pixel_to_geo(geom, transform):
    """Geometries (one or an array) in image pixel coordinates (col, row) -> the image CRS."""
    t = as_affine(transform)
    m = np.array([[t.a, t.d], [t.b, t.e]])
    off = np.array([t.c, t.f])
    return shapely.transform(geom, lambda xy: xy @ m + off)


def geo_to_pixel(geom, transform):
    """Geometries in the image CRS -> pixel coordinates (col, row)."""
    return pixel_to_geo(geom, ~as_affine(transform))


@functools.lru_cache(maxsize=64)
def _transformer(src_wkt: str, dst_epsg: int) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src_wkt), CRS.from_epsg(dst_epsg), always_xy=True)


def transformer_to_4326(crs) -> Transformer:
    """An always-xy transformer from ``crs`` (rasterio/pyproj CRS, EPSG code, WKT) to EPSG:4326."""
    wkt = crs.to_wkt() if hasattr(crs, "to_wkt") else CRS.from_user_input(crs).to_wkt()
    return _transformer(wkt, 4326)


@functools.lru_cache(maxsize=64)
def _is_4326(wkt: str) -> bool:
    return CRS.from_user_input(wkt).to_epsg() == 4326


def is_4326(crs) -> bool:
    return _is_4326(crs.to_wkt() if hasattr(crs, "to_wkt") else CRS.from_user_input(crs).to_wkt())


def to_4326(geoms, crs):
    """Geometries (one or an array) in ``crs`` -> EPSG:4326 lon/lat, vertex by vertex
    (returned as they are when ``crs`` is EPSG:4326 already)."""
    if is_4326(crs):
        return geoms
    tr = transformer_to_4326(crs)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def footprint_4326(poly, crs, densify_segments: int = 16):
    """Polygon in ``crs`` -> EPSG:4326 with edges densified so curvature is kept."""
    length = max(poly.length / (4 * densify_segments), 1e-9)
    return to_4326(shapely.segmentize(poly, length), crs)
