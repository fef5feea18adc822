"""Reading a GeoJSON label file: its CRS, and its polygons fast.

CRS rules, in order: a legacy ``crs`` member in the file; else ``[data] label_crs`` (the
``override``); else RFC 7946's EPSG:4326 — and then coordinates outside lon/lat ranges are an
error, never silently treated as degrees. Z values are dropped (the columns are 2D).

``footprints.geojson`` (the whole file) or ``footprints.geojson_stream`` (chunk by chunk, in
bounded memory: the loader's way) decodes the file into small typed records, keeping each geometry's
``coordinates`` and each feature's ``properties`` as raw JSON text (``msgspec.Raw``): no Python
object per coordinate. Here, chunk by chunk, the coordinate texts of the Polygon and
MultiPolygon features are read with numpy (``polygon_coordinates``: the bracket structure gives
the ring, polygon and part counts, one decode gives the numbers) and become shapely
MultiPolygons in one vectorised call (``shapely.from_ragged_array``); other features go one by
one through ``shapely.geometry.shape``.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

import msgspec
import numpy as np
import rasterio
import shapely
from pyproj import CRS
from shapely.geometry import shape

from footprints.errors import InputError
from footprints.geojson import crs_from_member, geometry_dict, parse_geojson, read_bytes
from footprints.geojson_stream import FeatureStream
from footprints.labels.report import LabelReport, gc_paused


def resolve_crs(file_crs, override: str):
    """The label file's CRS: legacy member > configured override > RFC 7946 (EPSG:4326).
    ``file_crs``: the member's CRS (``crs_from_member``) or None."""
    if file_crs is not None:
        return CRS.from_user_input(file_crs), "the file's crs member"
    if override:
        if os.path.isfile(override):  # allow pointing at a raster to borrow its CRS
            with rasterio.open(override) as src:
                return CRS.from_wkt(src.crs.to_wkt()), f"the CRS of {override}"
        return CRS.from_user_input(override), "[data] label_crs"
    return CRS.from_epsg(4326), "the file has no crs member, so RFC 7946 says EPSG:4326"


def offsets(counts) -> np.ndarray:
    """``[0, c0, c0 + c1, ...]``: the offsets of consecutive runs of ``counts`` items."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


class Ragged(NamedTuple):
    """MultiPolygons as flat coordinates and offsets, ``shapely.from_ragged_array``'s layout:
    ``xy`` (P, 2) float64; ``ring_off`` (R + 1) into xy; ``poly_off`` (Q + 1) into the rings;
    ``geom_off`` (G + 1) into the polygons."""

    xy: np.ndarray
    ring_off: np.ndarray
    poly_off: np.ndarray
    geom_off: np.ndarray

    @property
    def count(self) -> int:
        return len(self.geom_off) - 1

    def geometries(self) -> np.ndarray:
        return shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, self.xy,
                                         (self.ring_off, self.poly_off, self.geom_off))

    def take(self, mask) -> "Ragged":
        """The geometries where ``mask`` (boolean, one per geometry), in order."""
        mask = np.asarray(mask, dtype=bool)
        parts, rings, points = np.diff(self.geom_off), np.diff(self.poly_off), np.diff(self.ring_off)
        pm = np.repeat(mask, parts)
        rm = np.repeat(pm, rings)
        return Ragged(self.xy[np.repeat(rm, points)], offsets(points[rm]), offsets(rings[pm]),
                      offsets(parts[mask]))


_WHITESPACE = b" \t\r\n"
_NUMERIC = b"0123456789+-.eE[],"
_FLOATS = msgspec.json.Decoder(list[float])
_OPEN, _CLOSE, _COMMA = ord("["), ord("]"), ord(",")


def polygon_coordinates(texts: list, multi) -> tuple[Ragged | None, np.ndarray]:
    """Read GeoJSON coordinate arrays with numpy: ``texts[i]`` the JSON text (bytes-like,
    valid JSON) of a Polygon's coordinates, or of a MultiPolygon's where ``multi[i]``.

    Returns ``(Ragged, [])`` when each is an array of non-empty arrays of ... of 2D positions
    of numbers, nested as its type says; otherwise ``(None, positions of those that are
    not)``, to be read one by one (and the others in a second call). No Python object per
    coordinate: the structure comes from the brackets and commas (whitespace removed), the
    numbers from one decode."""
    n = len(texts)
    if n == 0:
        return None, np.zeros(0, dtype=np.int64)
    text = b",".join(texts).translate(None, _WHITESPACE)
    if text.translate(None, _NUMERIC):  # strings, objects, null, true/false: not coordinates
        bad = {i for i, t in enumerate(texts) if bytes(t).translate(None, _NUMERIC + _WHITESPACE)}
        rest = np.array([i for i in range(n) if i not in bad], dtype=np.int64)
        multi = np.asarray(multi, dtype=bool)
        _, odd = polygon_coordinates([texts[i] for i in rest], multi[rest]) if len(rest) else (None, rest)
        return None, np.sort(np.concatenate([np.fromiter(bad, np.int64, len(bad)), rest[odd]]))
    a = np.frombuffer(text, dtype=np.uint8)
    ev = np.flatnonzero((a == _OPEN) | (a == _CLOSE) | (a == _COMMA))  # the structural characters
    c = a[ev]
    opening, comma = c == _OPEN, c == _COMMA
    depth = np.cumsum(opening.astype(np.int32) - (c == _CLOSE), dtype=np.int32)  # after each one
    sep = comma & (depth == 0)  # the commas that join the texts
    if int(sep.sum()) != n - 1:  # a text that is not one JSON value: cannot happen with valid JSON
        return None, np.arange(n)
    fid = np.cumsum(sep)  # the text each structural character belongs to
    bad = np.zeros(n, dtype=bool)
    starts = np.concatenate([[0], ev[sep] + 1])
    bad[a[starts] != _OPEN] = True  # not an array
    o = np.flatnonzero(opening)
    level = depth[o]
    leaf = np.where(np.asarray(multi, dtype=bool), 4, 3)[fid[o]]
    role = level + 4 - leaf  # 1 the MultiPolygon, 2 a polygon, 3 a ring, 4 a position
    bad[fid[o[level > leaf]]] = True  # nested deeper than the type says
    pos = o[role == 4]
    last = len(c) - 1
    two = (pos + 2 <= last) & (c[np.minimum(pos + 1, last)] == _COMMA) & (c[np.minimum(pos + 2, last)] == _CLOSE)
    bad[fid[pos[~two]]] = True  # a position is '[' number ',' number ']'
    arrays = o[role < 4]
    bad[fid[arrays[a[ev[arrays] + 1] != _OPEN]]] = True  # the other arrays hold arrays (none empty)
    inner = np.zeros(len(c), dtype=bool)
    inner[pos[two] + 1] = True
    cm = np.flatnonzero(comma & ~inner)
    bad[fid[cm[a[np.minimum(ev[cm] + 1, len(a) - 1)] != _OPEN]]] = True  # and commas between arrays only
    if bad.any():
        return None, np.flatnonzero(bad)
    polys, rings = role == 2, role == 3
    nparts = np.bincount(fid[o[polys]], minlength=n)
    nrings = np.bincount((np.cumsum(polys) - 1)[rings], minlength=int(polys.sum()))
    npts = np.bincount((np.cumsum(rings) - 1)[role == 4], minlength=int(rings.sum()))
    try:
        xy = np.array(_FLOATS.decode(b"[" + text.translate(None, b"[]") + b"]"), dtype=np.float64)
    except msgspec.DecodeError:  # a number beyond float range
        return None, np.arange(n)
    if len(xy) != 2 * len(pos):
        return None, np.arange(n)
    return Ragged(xy.reshape(-1, 2), offsets(npts), offsets(nrings), offsets(nparts)), np.zeros(0, np.int64)


def _bad_rings(rag: Ragged) -> tuple[np.ndarray, np.ndarray]:
    """Per ring: fewer than 4 positions; not closed (GEOS refuses both)."""
    short = np.diff(rag.ring_off) < 4
    unclosed = np.zeros(len(short), dtype=bool)
    ok = ~short
    if ok.any():
        unclosed[ok] = (rag.xy[rag.ring_off[:-1][ok]] != rag.xy[rag.ring_off[1:][ok] - 1]).any(axis=1)
    return short, unclosed


def feature_geometries(features: list, start: int = 0, stop: int | None = None, path: str = ""):
    """The geometries of ``features[start:stop]`` (records of ``parse_geojson``):
    ``(geoms, props, reasons)``.

    ``geoms`` (object array): a MultiPolygon for each well-formed Polygon/MultiPolygon feature
    (built vectorised), otherwise what ``shapely.geometry.shape`` makes of the geometry (2D),
    or None for a missing geometry or one that cannot be read, whose reason is in ``reasons``
    ({position in the slice: reason}). ``props``: each feature's properties as JSON text, or
    None when it has none (absent, null or {})."""
    geoms, props, reasons, _ = feature_geometries_ragged(features, start, stop, path)
    return geoms, props, reasons


_EMPTY_OBJECT = re.compile(rb"\s*(null|\{\s*\})?\s*")


def _props_texts(raws: list) -> list:
    """JSON text per feature (bytes-like), None for no properties (absent, null or {})."""
    out = list(raws)
    for i, r in enumerate(raws):
        if len(r) <= 16 and _EMPTY_OBJECT.fullmatch(bytes(r)):
            out[i] = None
    return out


def feature_geometries_ragged(features: list, start: int, stop: int | None, path: str):
    """``feature_geometries`` and ``(positions, Ragged)`` of the vectorised ones (or None)."""
    sub = features[start:stop]
    n = len(sub)
    props = _props_texts([f.properties for f in sub])
    gs = [f.geometry for f in sub]
    geoms = np.empty(n, dtype=object)
    reasons: dict = {}
    fast = [k for k, g in enumerate(gs)
            if g is not None and (g.type == "Polygon" or g.type == "MultiPolygon") and len(g.coordinates)]
    slow = sorted(set(range(n)).difference(fast)) if len(fast) < n else []
    built = None
    for _ in range(2):  # a second try without the features that the first found odd
        if not fast:
            break
        rag, odd = polygon_coordinates([gs[k].coordinates for k in fast],
                                       np.fromiter((gs[k].type == "MultiPolygon" for k in fast), bool, len(fast)))
        if rag is None:
            odd_set = set(odd.tolist())
            slow += [fast[i] for i in odd_set]
            fast = [k for i, k in enumerate(fast) if i not in odd_set]
            continue
        short, unclosed = _bad_rings(rag)
        bad = short | unclosed
        if bad.any():  # GEOS would refuse these rings: the feature is rejected, with the reason
            owner = np.repeat(np.repeat(np.arange(len(fast)), np.diff(rag.geom_off)), np.diff(rag.poly_off))
            drop = np.zeros(len(fast), dtype=bool)
            for r in np.flatnonzero(bad).tolist():
                i = int(owner[r])
                if not drop[i]:
                    drop[i] = True
                    reasons[fast[i]] = ("a polygon ring has fewer than 4 positions" if short[r]
                                        else "a polygon ring is not closed (first and last positions differ)")
            rag = rag.take(~drop)
            fast = [k for i, k in enumerate(fast) if not drop[i]]
        if fast:
            geoms[fast] = rag.geometries()
            built = (np.asarray(fast, dtype=np.int64), rag)
        break
    else:
        slow += fast
    for k in sorted(slow):
        g = gs[k]
        if g is None:
            continue
        try:
            geoms[k] = shapely.force_2d(shape(geometry_dict(g)))
        except Exception as e:  # noqa: BLE001 - unknown type, bad coordinates, ...: rejected with the reason
            reasons[k] = f"unreadable geometry: {e}"
    return geoms, props, reasons, built


def check_lonlat(bounds, path, crs_note: str, where: str = "") -> None:
    """Coordinates claimed to be lon/lat must look like lon/lat."""
    minx, miny, maxx, maxy = bounds
    if minx < -180.0001 or maxx > 180.0001 or miny < -90.0001 or maxy > 90.0001:
        raise InputError(path, (
            f"coordinates span x {minx:.6g}..{maxx:.6g}, y {miny:.6g}..{maxy:.6g}{where}, which are not "
            f"longitude/latitude, but {crs_note}. They look projected (metres): set [data] label_crs "
            f"(or --data-label-crs) to the file's CRS, e.g. EPSG:32616 or the raster's WKT"))


def check_geometries_lonlat(geoms, path, note, where: str = "", built=None) -> None:
    """``check_lonlat`` for geometries said to be in EPSG:4326; ``built``: ``(positions,
    Ragged)`` of those of them whose coordinates are at hand."""
    others = np.ones(len(geoms), dtype=bool)
    boxes = []
    if built is not None:
        others[built[0]] = False
        xy = built[1].xy
        if len(xy):  # finite: JSON has no NaN, and the decoder refuses numbers beyond float range
            x, y = xy.ravel()[0::2], xy.ravel()[1::2]  # (min(axis=0) is much slower on an (N, 2) array)
            boxes.append(np.array([x.min(), y.min(), x.max(), y.max()]))
    rest = geoms[others]
    rest = rest[~shapely.is_missing(rest)]
    rest = rest[~shapely.is_empty(rest)]
    if len(rest):
        boxes.append(shapely.total_bounds(rest))
    if boxes:
        b = np.array(boxes)
        check_lonlat((b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()), path, note, where)


def open_label_file(path, override: str = ""):
    """Parse a label file: ``(features, CRS, how the CRS was chosen, report)``."""
    path = str(path)
    features, member = parse_geojson(read_bytes(path, "label file"), path)
    crs, note = resolve_crs(crs_from_member(member, path), override)
    report = LabelReport(path=path, crs=crs.to_string() if crs.to_epsg() else crs.to_wkt(), read=len(features))
    return features, crs, note, report


def open_label_stream(path, override: str = "", chunk: int | None = None):
    """Open a label file to be read chunk by chunk, in bounded memory: ``(FeatureStream, CRS,
    how the CRS was chosen, report)``; ``report.read`` counts the features as they come."""
    path = str(path)
    stream = FeatureStream(path, "label file", **({"chunk": chunk} if chunk else {}))
    try:
        crs, note = resolve_crs(crs_from_member(stream.crs_member, path), override)
    except BaseException:
        stream.close()
        raise
    report = LabelReport(path=path, crs=crs.to_string() if crs.to_epsg() else crs.to_wkt())
    return stream, crs, note, report


def read_label_file(path, override: str = ""):
    """Read a GeoJSON label file whole. Returns (geoms, properties (dict or None per
    feature), CRS, report); the geometries of unreadable features are None and their
    reasons are in ``report.rejected`` already (``clean_geometries`` adds the rest)."""
    path = str(path)
    with gc_paused():
        features, crs, note, report = open_label_file(path, override)
        geoms, props, reasons, built = feature_geometries_ragged(features, 0, None, path)
    for k, why in sorted(reasons.items()):
        report.rejected.append({"feature": k, "reason": why})
    if crs.to_epsg() == 4326:
        check_geometries_lonlat(geoms, path, note, "", built)
    return geoms, [None if p is None else msgspec.json.decode(p) for p in props], crs, report


