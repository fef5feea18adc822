"""Cleaning label geometries: polygonal ones are kept as MultiPolygons, invalid ones are repaired
(GEOS MakeValid, the algorithm behind PostGIS' ST_MakeValid) and counted; non-polygonal, empty
or unreadable features are rejected and listed in the report."""
from __future__ import annotations

import numpy as np
import shapely

from footprints.labels.report import LabelReport


def clean_geometries(geoms: np.ndarray, report: LabelReport, offset: int = 0, reasons: dict | None = None,
                     polygonal=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep polygonal geometries as MultiPolygons; repair invalid ones. Rejections go into
    ``report`` with feature numbers ``offset + position`` (reasons given for positions in
    ``reasons`` win over "empty or missing geometry").

    Returns (indices of kept features, MultiPolygon array, repaired flags)."""
    geoms = np.asarray(geoms, dtype=object)
    reasons = reasons or {}
    types = shapely.get_type_id(geoms)
    valid = shapely.is_valid(geoms)
    # the usual label, a valid (Multi)Polygon with area, goes through in vectorised calls;
    # everything else takes the loop below. ``polygonal``: rows known to be non-empty
    # MultiPolygons, which have area when they are valid
    fast = ((types == 3) | (types == 6)) & valid
    check = fast if polygonal is None else fast & ~np.asarray(polygonal, dtype=bool)
    if check.any():
        fast[check] = ~shapely.is_empty(geoms[check]) & (shapely.area(geoms[check]) > 0)
    out = np.empty(len(geoms), dtype=object)
    single = fast & (types == 3)
    if single.any():
        out[single] = shapely.multipolygons(geoms[single][:, None])
    multi = fast & (types == 6)
    out[multi] = geoms[multi]
    kept, fixed_flags = fast.copy(), np.zeros(len(geoms), dtype=bool)
    for i in np.flatnonzero(~fast).tolist():
        g, t, ok = geoms[i], types[i], valid[i]
        if g is None or shapely.is_empty(g):
            report.rejected.append({"feature": offset + i, "reason": reasons.get(i, "empty or missing geometry")})
            continue
        if t not in (3, 6):  # Polygon, MultiPolygon
            report.rejected.append({"feature": offset + i, "reason": f"{g.geom_type} is not a polygon"})
            continue
        fixed = False
        if not ok:
            g = shapely.make_valid(g)
            fixed = True
        polys = polygon_parts(g)
        if not polys:
            report.rejected.append({"feature": offset + i, "reason": "invalid polygon with no area left after repair"})
            continue
        kept[i], fixed_flags[i] = True, fixed
        out[i] = shapely.MultiPolygon(polys)
    idx = np.flatnonzero(kept).astype(np.int64)
    report.repaired += int(fixed_flags[idx].sum())
    return idx, out[idx], fixed_flags[idx]


def polygon_parts(g) -> list:
    """Polygons with area from any geometry (drops lines/points left by MakeValid)."""
    if g is None or g.is_empty:
        return []
    if g.geom_type == "Polygon":
        return [g] if g.area > 0 else []
    if g.geom_type in ("MultiPolygon", "GeometryCollection"):
        return [p for part in g.geoms for p in polygon_parts(part)]
    return []
