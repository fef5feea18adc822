"""DeduplicateBorders without PostGIS: the same border rule on shapely geometries in memory.

The prediction service (``footprints serve``) has no database, yet must give the buildings the
DAG gives. This module is a line-by-line port of the SQL that :func:`footprints.dedup.deduplicate`
runs (sql/dedup_pieces.sql, sql/dedup_links.sql, sql/buildings_insert.sql), reusing its pure
steps (:func:`footprints.dedup.components`, :func:`footprints.dedup.whole_components`); the
geometry operations are the same GEOS ones (``ST_ClipByBox2D`` = ``clip_by_rect``, ``ST_Union``,
``ST_SimplifyPreserveTopology`` (through GDAL, which links the same GEOS as PostGIS),
``ST_Normalize``, ``ST_OrderingEquals`` = ``equals_exact``,
exact equality of geometries = equal WKB). ``tests/footprints/test_borders.py`` runs both on
random tilings and checks that they give the same buildings.

Input: the predictions of one image as Polygonize makes them (:func:`footprints.polygonize.
iter_tile_polygons`: per tile, the pixel-exact polygons that reach into its core). Memory grows
with the number of buildings, not with the image.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import shapely
from osgeo import ogr

from footprints.dedup import check_cores, components, whole_components
from footprints.geo import as_affine, pixel_area, pixel_to_geo, to_4326
from footprints.polygonize import read_window

__all__ = ["deduplicate_polygons"]


class _Tile:
    __slots__ = ("cx0", "cy0", "cx1", "cy1", "x0", "y0", "x1", "y1", "ci", "cj")

    def __init__(self, *v):
        for k, x in zip(self.__slots__, v):
            setattr(self, k, x)


def _tiles(tiles, halo_px: int, width: int, height: int) -> dict:
    """sql dedup_tiles: per tile id, its core, its read window and its core grid cell."""
    col = {x: i for i, x in enumerate(sorted({int(t["core_col_off"]) for t in tiles}))}
    row = {y: j for j, y in enumerate(sorted({int(t["core_row_off"]) for t in tiles}))}
    out = {}
    for t in tiles:
        c0, r0, ww, hh = read_window(t, int(halo_px), width, height)
        cx0, cy0 = int(t["core_col_off"]), int(t["core_row_off"])
        out[t["tile_id"]] = _Tile(cx0, cy0, cx0 + int(t["core_width"]), cy0 + int(t["core_height"]),
                                  c0, r0, c0 + ww, r0 + hh, col[cx0], row[cy0])
    return out


def _dump(g) -> list:
    """ST_Dump: the atomic parts of a geometry (recursively through collections)."""
    if g is None or g.is_empty:
        return []
    if hasattr(g, "geoms"):
        return [p for part in g.geoms for p in _dump(part)]
    return [g]


def _canonical(g):
    """ST_Normalize(ST_Simplify(g, 0)): collinear vertices out, canonical vertex order."""
    return shapely.normalize(shapely.simplify(g, 0.0, preserve_topology=False))


def _simplify_preserve_topology(g, tolerance: float):
    """ST_SimplifyPreserveTopology, by the GEOS that PostGIS links: GDAL's (the system GEOS; both
    come from the same distribution packages). Shapely bundles a newer GEOS whose simplifier
    (3.12 and later) may also drop a ring's start point, which turns a 1 x 2 px building into a
    triangle where the database keeps the rectangle."""
    out = ogr.CreateGeometryFromWkb(shapely.to_wkb(g)).SimplifyPreserveTopology(float(tolerance))
    return shapely.from_wkb(bytes(out.ExportToIsoWkb())) if out is not None else shapely.Polygon()


def _pieces(preds, tinfo: dict, width: int, height: int):
    """sql/dedup_pieces.sql: ``(pieces, inside)``. ``inside``: predictions strictly inside their
    core (whole buildings); ``pieces``: dicts with the piece, its prediction (None for a
    building that every tile whose core it reaches saw identically, kept once), score, core,
    read window, ``complete``, areas, extent and ``edge``."""
    inside, q = [], []
    for pid, (tile_id, score, g, *rest) in enumerate(preds):
        conf = rest[0] if rest else None
        t = tinfo[tile_id]
        bx0, by0, bx1, by1 = g.bounds
        if not (bx0 < t.cx1 and bx1 > t.cx0 and by0 < t.cy1 and by1 > t.cy0):
            continue
        if bx0 > t.cx0 and bx1 < t.cx1 and by0 > t.cy0 and by1 < t.cy1:
            inside.append((g, score, None, (bx0, by0, bx1, by1), conf))
            continue
        q.append((pid, score, (bx0, by0, bx1, by1), t, shapely.to_wkb(g), g, conf))
    groups = defaultdict(list)
    for r in q:
        groups[r[4]].append(r)
    whole = {}  # wkb -> (score (None where no tile's core holds the extent's centre), conf)
    for key, rs in groups.items():
        ci, cj = [r[3].ci for r in rs], [r[3].cj for r in rs]
        si, sj = max(ci) - min(ci), max(cj) - min(cj)
        if si >= 8 or sj >= 8 or len(rs) != (si + 1) * (sj + 1) or len(set(zip(ci, cj))) != len(rs):
            continue
        bx0, by0, bx1, by1 = rs[0][2]
        mcx0, mcy0 = min(r[3].cx0 for r in rs), min(r[3].cy0 for r in rs)
        mcx1, mcy1 = max(r[3].cx1 for r in rs), max(r[3].cy1 for r in rs)
        if not ((bx0 > mcx0 or mcx0 == 0) and (bx1 < mcx1 or mcx1 == width)
                and (by0 > mcy0 or mcy0 == 0) and (by1 < mcy1 or mcy1 == height)):
            continue
        mx, my = (bx0 + bx1) / 2, (by0 + by1) / 2
        scores = [r[1] for r in rs if r[3].cx0 <= mx < r[3].cx1 and r[3].cy0 <= my < r[3].cy1]
        confs = [tuple(r[6]) for r in rs if r[6] is not None]  # one polygon of one mosaic: the same conf
        whole[key] = (min(scores) if scores else None, min(confs) if confs else None)
    pieces = []

    def add(pred, score, t, complete, piece, w, conf):
        px0, py0, px1, py1 = piece.bounds
        edge = pred is not None and (px0 <= t.cx0 or px1 >= t.cx1 or py0 <= t.cy0 or py1 >= t.cy1)
        pieces.append({"pred": pred, "score": score, "t": t, "complete": complete, "piece": piece, "whole": w,
                       "area": piece.area, "warea": None if w is None else w.area,
                       "bbox": (px0, py0, px1, py1), "edge": edge, "conf": conf})

    for key, (score, conf) in whole.items():
        add(None, score, None, True, groups[key][0][5], None, conf)
    for pid, score, (bx0, by0, bx1, by1), t, key, g, conf in q:
        if key in whole:
            continue
        is_inside = bx0 >= t.cx0 and bx1 <= t.cx1 and by0 >= t.cy0 and by1 <= t.cy1
        complete = ((bx0 > t.x0 or t.x0 == 0) and (bx1 < t.x1 or t.x1 == width)
                    and (by0 > t.y0 or t.y0 == 0) and (by1 < t.y1 or t.y1 == height))
        clipped = g if is_inside else shapely.clip_by_rect(g, t.cx0, t.cy0, t.cx1, t.cy1)
        for part in _dump(clipped):
            if is_inside or (shapely.get_dimensions(part) == 2 and not part.is_empty):
                add(pid, score, t, complete, part, g, conf)
    return pieces, inside


def _agree(a: dict, b: dict, min_shared_px: float, merge_overlap: float):
    """sql/dedup_links.sql for one candidate pair: ``(linked, agree)``."""
    ta, tb = a["t"], b["t"]
    x0, y0, x1, y1 = max(ta.x0, tb.x0), max(ta.y0, tb.y0), min(ta.x1, tb.x1), min(ta.y1, tb.y1)
    wa, wb = a["whole"], b["whole"]
    if not (x1 > x0 and y1 > y0):
        return shapely.intersection(a["piece"], b["piece"]).length >= min_shared_px, False
    if shapely.equals_exact(wa, wb, 0.0):
        return True, True
    ca = _canonical(shapely.clip_by_rect(wa, x0, y0, x1, y1))
    cb = _canonical(shapely.clip_by_rect(wb, x0, y0, x1, y1))
    if ca.is_empty or cb.is_empty:
        return False, False
    if shapely.equals_exact(ca, cb, 0.0):
        return True, True
    i = shapely.intersection(wa, wb).area
    return bool(i > 0 and i >= merge_overlap * min(ca.area, cb.area)), False


def _links(pieces, min_shared_px: float, merge_overlap: float):
    """``[(a, b, agree)]``: pieces in neighbouring cores that are one building (piece indexes)."""
    by_core = defaultdict(list)
    for i, p in enumerate(pieces):
        if p["edge"]:
            by_core[(p["t"].cx0, p["t"].cy0)].append(i)
    out = []
    for i, a in enumerate(pieces):
        if not a["edge"]:
            continue
        t, (px0, py0, px1, py1) = a["t"], a["bbox"]
        cands = []
        if px1 == t.cx1:  # b's core is right of a's
            cands += [j for j in by_core.get((t.cx1, t.cy0), ()) if pieces[j]["bbox"][0] == pieces[j]["t"].cx0
                      and py0 < pieces[j]["bbox"][3] and pieces[j]["bbox"][1] < py1]
        if py1 == t.cy1:  # b's core is below a's
            cands += [j for j in by_core.get((t.cx0, t.cy1), ()) if pieces[j]["bbox"][1] == pieces[j]["t"].cy0
                      and px0 < pieces[j]["bbox"][2] and pieces[j]["bbox"][0] < px1]
        for j in cands:
            linked, agree = _agree(a, pieces[j], min_shared_px, merge_overlap)
            if linked:
                out.append((i + 1, j + 1, agree))  # piece ids start at 1, as row_number() does
    return out


def _parts(pieces, inside, links):
    """sql/buildings_insert.sql ``parts``: ``(polygon, score, area0, extent, conf)`` per
    building, before the minimum area and the simplification."""
    pairs = [(a, b) for a, b, _ in links]
    ids, labels = components(pairs)
    rows = [(i + 1, -1 if p["pred"] is None else p["pred"], p["complete"], p["area"], p["warea"])
            for i, p in enumerate(pieces) if p["edge"]]
    whole_of = whole_components(ids, labels, pairs, [g for _, _, g in links], rows)
    comps = defaultdict(list)
    for pid, comp, w in zip(ids.tolist(), labels.tolist(), whole_of.tolist()):
        comps[comp].append((pid, w))
    out = []
    for members in comps.values():
        ps = [pieces[pid - 1] for pid, _ in members]
        wof = min((w for _, w in members if w >= 0), default=None)
        g = pieces[wof - 1]["whole"] if wof is not None else shapely.union_all([p["piece"] for p in ps])
        total = sum(p["area"] for p in ps)
        score = sum(p["score"] * p["area"] for p in ps) / total if total else None
        conf = _merged_conf(ps)
        for d in _dump(g):
            if shapely.get_dimensions(d) == 2:
                out.append((_canonical(shapely.normalize(d)), score, d.area, None, conf))
    linked = set(ids.tolist())
    for i, p in enumerate(pieces):
        if i + 1 not in linked:
            out.append((p["piece"], p["score"], p["area"], p["bbox"], p["conf"]))
    return out + inside


def _merged_conf(ps):
    """sql/buildings_insert.sql ``merged_conf``: per class, the area-weighted mean of the pieces'
    confidences (pieces without are left out; None when none has any), as ``real[]``."""
    ps = [p for p in ps if p["conf"] is not None]
    if not ps:
        return None
    total = sum(p["area"] for p in ps)
    return tuple(None if not total else float(np.float32(sum(p["conf"][k] * p["area"] for p in ps) / total))
                 for k in range(max(len(p["conf"]) for p in ps)))


def deduplicate_polygons(tiles, predictions, transform, width: int, height: int, crs=None, *,
                         min_area_m2: float = 0.0, simplify_px: float = 0.0, halo_px: int = 0,
                         min_shared_px: float = 1.0, merge_overlap: float = 0.5, classes=()) -> list[dict]:
    """The buildings of one image, each once and whole: what :func:`footprints.dedup.deduplicate`
    writes to ``buildings``, computed in memory.

    ``tiles``: the tile records (window and core, see :data:`footprints.dedup.TILE_FIELDS`);
    ``predictions``: ``(tile_id, score, polygon in image pixels[, conf])`` as Polygonize stores
    them (``conf``: building types' per-class confidences, as ``real``s);
    ``transform``: the image's affine transform; ``crs``: the image CRS (for ``geom_4326``).
    Returns dicts as :func:`footprints.outputs.read_buildings` does (``building_id``, ``score``
    (rounded to float32, as the ``real`` column), ``area_m2``, ``geom_pix``, ``geom`` and, with
    ``crs``, ``geom_4326``), in building_id order. With ``classes`` (building types, in the
    order of ``conf``) each also has ``class`` (the highest; ties: the first) and ``conf``
    (``{class: mean probability}``)."""
    check_cores(tiles, width, height)
    t = as_affine(transform)
    px_area = pixel_area(t)
    tinfo = _tiles(tiles, halo_px, width, height)
    pieces, inside = _pieces(list(predictions), tinfo, width, height)
    links = _links(pieces, min_shared_px, merge_overlap)
    kept = []
    for g, score, area0, bbox, conf in _parts(pieces, inside, links):
        area = area0 if area0 is not None else g.area
        if min_area_m2 > 0 and area * px_area < min_area_m2:
            continue
        if simplify_px > 0:
            g = shapely.normalize(_simplify_preserve_topology(shapely.normalize(g), simplify_px))
            if g.is_empty or g.geom_type != "Polygon":
                continue
            area, bbox = g.area, None
        x0, y0, x1, y1 = bbox if bbox is not None else g.bounds
        kept.append(((y0, x0, y1, x1, area, shapely.to_wkb(g)), g, score, area, conf))
    kept.sort(key=lambda k: k[0])
    if not kept:
        return []
    pix = np.array([k[1] for k in kept], dtype=object)
    geo = pixel_to_geo(pix, t)
    lonlat = to_4326(geo, crs) if crs is not None else [None] * len(kept)
    out = []
    for i, ((_, g, score, area, conf), gg, ll) in enumerate(zip(kept, geo, lonlat), start=1):
        b = {"building_id": i, "score": float(np.float32(score or 0.0)), "area_m2": area * px_area,
             "geom_pix": g, "geom": gg, "geom_4326": ll}
        if classes:  # as footprints.outputs.read_buildings gives them
            b["class"] = _top_class(conf, classes)
            b["conf"] = {c: float(v or 0.0) for c, v in zip(classes, conf or [0.0] * len(classes))}
        out.append(b)
    return out


def _top_class(conf, classes):
    """The class of the highest confidence (ties: the first; NULLs last), as the SQL picks it."""
    if not conf:
        return None
    k = min(range(len(conf)), key=lambda i: (conf[i] is None, -(conf[i] or 0.0), i))
    return classes[k] if k < len(classes) else None
