"""LoadLabels: a GeoJSON label file into the PostGIS ``labels`` table with COPY.

CRS rules, in order: a legacy ``crs`` member in the file; else ``[data] label_crs``; else
RFC 7946's EPSG:4326 — and then coordinates outside lon/lat ranges are an error, never
silently treated as degrees. Geometries keep their source CRS exactly (``geom``); an
EPSG:4326 copy (``geom_4326``) carries the GiST index for lookups across CRSs.
Invalid polygons are repaired (GEOS MakeValid, the algorithm behind ST_MakeValid) and
counted; non-polygonal, empty or unreadable features are rejected and listed in the report.
Z values are dropped (the columns are 2D).

How a load runs (speed: bench/labels.py, about 2x ogr2ogr):

1. msgspec decodes the file into small typed records, keeping each geometry's
   ``coordinates`` and each feature's ``properties`` as raw JSON text (``msgspec.Raw``): no
   Python object per coordinate. The properties' text goes to the ``jsonb`` column as is.
2. Chunk by chunk, the coordinate texts of the Polygon and MultiPolygon features are read
   with numpy (``polygon_coordinates``: the bracket structure gives the ring, polygon and
   part counts, one decode gives the numbers) and become shapely MultiPolygons in one
   vectorised call (``shapely.from_ragged_array``); other features go one by one through
   ``shapely.geometry.shape``. Invalid ones are repaired.
3. ``labels`` is LIST-partitioned by ``source`` (the file stem). The rows go with one binary
   COPY (EWKB written by numpy straight from the coordinates, no hex) into a fresh table of
   their own; a background thread makes the next chunk while the server stores the last.
4. Its primary key and GiST indexes are built in bulk (sorted builds) once it is filled, the
   source's previous partition, if any, is dropped, and the table is attached as the
   source's partition: all in the caller's transaction, which also writes the marker.
"""
from __future__ import annotations

import codecs
import gc
import hashlib
import json
import logging
import os
import queue
import re
import struct
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import luigi
import msgspec
import numpy as np
import shapely

from tasks.config import data, workdir
from tasks.errors import InputError

log = logging.getLogger("luigi-interface")

CHUNK = 10_000  # features per COPY chunk

# ---------------------------------------------------------------- pure functions


@dataclass
class LabelReport:
    path: str
    crs: str = ""
    read: int = 0
    loaded: int = 0
    repaired: int = 0
    rejected: list = field(default_factory=list)  # [{"feature": i, "reason": ...}]

    def as_dict(self) -> dict:
        return {"path": self.path, "crs": self.crs, "features_read": self.read, "loaded": self.loaded,
                "repaired": self.repaired, "rejected": len(self.rejected), "rejected_features": self.rejected}


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector (restored afterwards): a load makes many
    container objects (feature records, per-chunk lists), and each generation-0 threshold
    crossing would scan the ones still alive again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Geometry(msgspec.Struct, gc=False):
    """A GeoJSON geometry, its coordinates (or a collection's geometries) as raw JSON."""

    type: str
    coordinates: msgspec.Raw = msgspec.Raw()
    geometries: msgspec.Raw = msgspec.Raw()


class _Feature(msgspec.Struct, gc=False):
    """A GeoJSON Feature, its properties as raw JSON (empty when absent)."""

    geometry: _Geometry | None = None
    properties: msgspec.Raw = msgspec.Raw()


class _Document(msgspec.Struct, gc=False):
    """A GeoJSON FeatureCollection, or a single Feature."""

    type: str | None = None
    features: list[_Feature] | None = None
    crs: msgspec.Raw = msgspec.Raw()
    geometry: _Geometry | None = None
    properties: msgspec.Raw = msgspec.Raw()


_DECODER = msgspec.json.Decoder(_Document)


def parse_geojson(raw: bytes, path) -> tuple[list, object]:
    """``(features, crs member or None)`` of a GeoJSON FeatureCollection (or single Feature).
    Each feature is a record with ``geometry`` (``type`` and raw ``coordinates``) and raw
    ``properties``. A document whose members have unexpected types (a geometry that is not
    an object, say) is read generically, and its odd features are rejected one by one later."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        doc = _DECODER.decode(raw)
    except msgspec.DecodeError:  # malformed (Python's parser words the error), or unexpected types
        return _parse_generic(raw, path)
    if doc.type == "Feature":
        features = [_Feature(geometry=doc.geometry, properties=doc.properties)]
    elif doc.type == "FeatureCollection":
        if doc.features is None:
            raise InputError(path, "malformed GeoJSON: the FeatureCollection has no 'features' array")
        features = doc.features
    else:
        raise InputError(path, f"GeoJSON type {doc.type!r} is not a FeatureCollection")
    return features, (msgspec.json.decode(doc.crs) if len(doc.crs) else None)


def _parse_generic(raw: bytes, path) -> tuple[list, object]:
    """``parse_geojson`` for any JSON: Python's parser (which also reads NaN and gives line
    and column in its errors), then the features as records."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"malformed GeoJSON: {e}") from None
    if not isinstance(doc, dict):
        raise InputError(path, f"malformed GeoJSON: the top level is a JSON {type(doc).__name__}, not an object")
    kind = doc.get("type")
    if kind == "Feature":
        items = [doc]
    elif kind == "FeatureCollection":
        items = doc.get("features")
        if not isinstance(items, list):
            raise InputError(path, "malformed GeoJSON: the FeatureCollection has no 'features' array")
    else:
        raise InputError(path, f"GeoJSON type {kind!r} is not a FeatureCollection")
    return [_feature_record(f, i, path) for i, f in enumerate(items)], doc.get("crs")


def _raw(value) -> msgspec.Raw:
    try:
        return msgspec.Raw(msgspec.json.encode(value))
    except (TypeError, ValueError, OverflowError):
        return msgspec.Raw(json.dumps(value, default=str).encode("utf-8"))


def _feature_record(f, i: int, path) -> _Feature:
    if not isinstance(f, dict):
        raise InputError(path, f"malformed GeoJSON: feature {i} is not a GeoJSON Feature object")
    p, g = f.get("properties"), f.get("geometry")
    props = msgspec.Raw() if p is None else _raw(p)
    if g is None:
        return _Feature(None, props)
    if not isinstance(g, dict) or not isinstance(g.get("type"), str):
        return _Feature(_Geometry(type=f"(a JSON {type(g).__name__} without a type)" if isinstance(g, dict)
                                  else f"(a JSON {type(g).__name__})"), props)
    return _Feature(_Geometry(type=g["type"],
                              coordinates=_raw(g["coordinates"]) if "coordinates" in g else msgspec.Raw(),
                              geometries=_raw(g["geometries"]) if "geometries" in g else msgspec.Raw()), props)


def crs_from_member(member, path):
    """The pyproj CRS of a legacy GeoJSON ``crs`` member (None when absent): ``{"type": "name",
    "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}`` or ``{"type": "EPSG", "properties":
    {"code": 32616}}``. OGC CRS84 (lon/lat, as GeoJSON coordinates always are) is EPSG:4326."""
    from pyproj import CRS

    if member is None:
        return None
    try:
        kind = str(member.get("type", "")).lower()
        props = member.get("properties") or {}
        if kind == "name":
            crs = CRS.from_user_input(props["name"])
        elif kind == "epsg":
            crs = CRS.from_epsg(int(props["code"]))
        else:
            raise ValueError(f"crs type {member.get('type')!r} is not 'name' or 'EPSG'")
    except Exception as e:
        raise InputError(path, f"cannot read the crs member {json.dumps(member)[:200]}: {e}") from None
    if crs.to_epsg() is None and crs.equals(CRS.from_user_input("OGC:CRS84")):
        crs = CRS.from_epsg(4326)
    return crs


def resolve_crs(file_crs, override: str):
    """The label file's CRS: legacy member > configured override > RFC 7946 (EPSG:4326).
    ``file_crs``: the member's CRS (``crs_from_member``) or None."""
    from pyproj import CRS

    if file_crs is not None:
        return CRS.from_user_input(file_crs), "the file's crs member"
    if override:
        if os.path.isfile(override):  # allow pointing at a raster to borrow its CRS
            import rasterio

            with rasterio.open(override) as src:
                return CRS.from_wkt(src.crs.to_wkt()), f"the CRS of {override}"
        return CRS.from_user_input(override), "[data] label_crs"
    return CRS.from_epsg(4326), "the file has no crs member, so RFC 7946 says EPSG:4326"


def _offsets(counts) -> np.ndarray:
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
        return Ragged(self.xy[np.repeat(rm, points)], _offsets(points[rm]), _offsets(rings[pm]),
                      _offsets(parts[mask]))


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
    return Ragged(xy.reshape(-1, 2), _offsets(npts), _offsets(nrings), _offsets(nparts)), np.zeros(0, np.int64)


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
    geoms, props, reasons, _ = _feature_geometries(features, start, stop, path)
    return geoms, props, reasons


def _geometry_dict(g: _Geometry) -> dict:
    out = {"type": g.type}
    if not len(g.coordinates) and not len(g.geometries):
        raise ValueError(f"a {g.type} without coordinates")
    if len(g.coordinates):
        out["coordinates"] = msgspec.json.decode(g.coordinates)
    if len(g.geometries):
        out["geometries"] = msgspec.json.decode(g.geometries)
    return out


_EMPTY_OBJECT = re.compile(rb"\s*(null|\{\s*\})?\s*")


def _props_texts(raws: list) -> list:
    """JSON text per feature (bytes-like), None for no properties (absent, null or {})."""
    out = list(raws)
    for i, r in enumerate(raws):
        if len(r) <= 16 and _EMPTY_OBJECT.fullmatch(bytes(r)):
            out[i] = None
    return out


def _feature_geometries(features: list, start: int, stop: int | None, path: str):
    """``feature_geometries`` and ``(positions, Ragged)`` of the vectorised ones (or None)."""
    from shapely.geometry import shape

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
            geoms[k] = shapely.force_2d(shape(_geometry_dict(g)))
        except Exception as e:  # unknown type, bad coordinates, ...
            reasons[k] = f"unreadable geometry: {e}"
    return geoms, props, reasons, built


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


def check_lonlat(bounds, path, crs_note: str, where: str = "") -> None:
    """Coordinates claimed to be lon/lat must look like lon/lat."""
    minx, miny, maxx, maxy = bounds
    if minx < -180.0001 or maxx > 180.0001 or miny < -90.0001 or maxy > 90.0001:
        raise InputError(path, (
            f"coordinates span x {minx:.6g}..{maxx:.6g}, y {miny:.6g}..{maxy:.6g}{where}, which are not "
            f"longitude/latitude, but {crs_note}. They look projected (metres): set [data] label_crs "
            f"(or --data-label-crs) to the file's CRS, e.g. EPSG:32616 or the raster's WKT"))


def _check_chunk_lonlat(geoms, path, note, where: str = "", built=None) -> None:
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


def _read_bytes(path) -> bytes:
    if not os.path.exists(path):
        raise InputError(path, "label file does not exist")
    if os.path.getsize(path) == 0:
        raise InputError(path, "label file is empty (0 bytes); expected a GeoJSON FeatureCollection")
    with open(path, "rb") as f:
        return f.read()


def open_label_file(path, override: str = ""):
    """Parse a label file: ``(features, CRS, how the CRS was chosen, report)``."""
    path = str(path)
    features, member = parse_geojson(_read_bytes(path), path)
    crs, note = resolve_crs(crs_from_member(member, path), override)
    report = LabelReport(path=path, crs=crs.to_string() if crs.to_epsg() else crs.to_wkt(), read=len(features))
    return features, crs, note, report


def read_label_file(path, override: str = ""):
    """Read a GeoJSON label file whole. Returns (geoms, properties (dict or None per
    feature), CRS, report); the geometries of unreadable features are None and their
    reasons are in ``report.rejected`` already (``clean_geometries`` adds the rest)."""
    path = str(path)
    with gc_paused():
        features, crs, note, report = open_label_file(path, override)
        geoms, props, reasons, built = _feature_geometries(features, 0, None, path)
    for k, why in sorted(reasons.items()):
        report.rejected.append({"feature": k, "reason": why})
    if crs.to_epsg() == 4326:
        _check_chunk_lonlat(geoms, path, note, "", built)
    return geoms, [None if p is None else msgspec.json.decode(p) for p in props], crs, report


def transformer_to_4326(crs):
    """A function MultiPolygons -> EPSG:4326, or None when ``crs`` is EPSG:4326 already."""
    from pyproj import CRS, Transformer

    if CRS.from_user_input(crs).to_epsg() == 4326:
        return None
    tr = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    return lambda geoms: shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def to_4326(geoms: np.ndarray, crs) -> np.ndarray:
    fn = transformer_to_4326(crs)
    return geoms if fn is None else fn(geoms)


# binary COPY (PostgreSQL's documented format): a signature, then per row the field count and
# each field as a 4-byte length (-1: NULL) and the type's binary form; geometry's is (E)WKB
# and jsonb's a version byte 1 and the JSON text
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
COPY_COLUMNS = ("source", "feature_index", "srid", "repaired", "properties", "geom", "geom_4326")


def ewkb_fields(geoms, srid: int) -> list:
    """Binary COPY fields of shapely geometries: each a 4-byte big-endian length and the EWKB."""
    wkb = shapely.to_wkb(shapely.set_srid(geoms, srid), include_srid=True, byte_order=1).tolist()
    return [struct.pack(">i", len(w)) + w for w in wkb]


def ragged_ewkb_fields(rag: Ragged, srid: int) -> list:
    """``ewkb_fields`` of the MultiPolygons of ``rag``, byte for byte, written straight from
    its coordinates and offsets by numpy (no geometry objects, no per-row Python work but the
    final slicing): little-endian EWKB with the SRID flag on the MultiPolygon."""
    ng = rag.count
    if ng == 0:
        return []
    nparts, nrings, npts = np.diff(rag.geom_off), np.diff(rag.poly_off), np.diff(rag.ring_off)
    if len(nrings) == ng and len(npts) == ng:  # the usual label: one polygon, one ring
        return _single_ring_fields(rag, srid, npts)
    nq, nr = len(nrings), len(npts)
    GH, PH, RH = 4 + 13, 9, 4  # field length + MultiPolygon header; Polygon header; ring header
    ring_bytes = _offsets(RH + 16 * npts)  # bytes of the rings before ring k (and in all)
    poly_geom = np.repeat(np.arange(ng), nparts)
    ring_poly = np.repeat(np.arange(nq), nrings)
    # where each piece starts: the rings, polygon headers and geometry headers before it
    geom_pos = ring_bytes[rag.poly_off[rag.geom_off]] + PH * rag.geom_off + GH * np.arange(ng + 1)
    poly_pos = ring_bytes[rag.poly_off[:-1]] + PH * np.arange(nq) + GH * (poly_geom + 1)
    ring_pos = ring_bytes[:-1] + PH * (ring_poly + 1) + GH * (poly_geom[ring_poly] + 1)
    buf = np.empty(int(geom_pos[-1]), dtype=np.uint8)
    gh = np.zeros(ng, dtype=[("len", ">i4"), ("order", "u1"), ("type", "<u4"), ("srid", "<u4"), ("n", "<u4")])
    gh["len"] = np.diff(geom_pos) - 4
    gh["order"] = 1
    gh["type"] = 6 | 0x20000000  # MultiPolygon, with an SRID
    gh["srid"] = srid
    gh["n"] = nparts
    buf[geom_pos[:-1, None] + np.arange(GH)] = gh.view(np.uint8).reshape(ng, GH)
    if nq:
        ph = np.zeros(nq, dtype=[("order", "u1"), ("type", "<u4"), ("n", "<u4")])
        ph["order"] = 1
        ph["type"] = 3  # Polygon
        ph["n"] = nrings
        buf[poly_pos[:, None] + np.arange(PH)] = ph.view(np.uint8).reshape(nq, PH)
    if nr:
        buf[ring_pos[:, None] + np.arange(RH)] = npts.astype("<u4").view(np.uint8).reshape(nr, RH)
        coords = np.ascontiguousarray(rag.xy, dtype="<f8").view(np.uint8).reshape(-1)
        it = np.int32 if len(buf) < 2**31 else np.int64  # half the index traffic
        shift = (ring_pos + RH - 16 * rag.ring_off[:-1]).astype(it)
        buf[np.repeat(shift, 16 * npts) + np.arange(len(coords), dtype=it)] = coords
    data, pos = buf.tobytes(), geom_pos.tolist()
    return [data[a:b] for a, b in zip(pos[:-1], pos[1:])]


def _single_ring_fields(rag: Ragged, srid: int, npts: np.ndarray) -> list:
    """``ragged_ewkb_fields`` when every MultiPolygon has one polygon with one ring: a header
    that depends on the ring's size only, then the ring's coordinates as they lie in ``xy``."""
    heads = {}
    for m in np.unique(npts).tolist():
        size = 13 + 9 + 4 + 16 * m  # MultiPolygon header, Polygon header, ring header, points
        heads[m] = struct.pack(">i", size) + struct.pack("<BIII", 1, 6 | 0x20000000, srid, 1) + \
            struct.pack("<BIII", 1, 3, 1, m)
    coords = np.ascontiguousarray(rag.xy, dtype="<f8").tobytes()
    ends = (16 * rag.ring_off).tolist()
    return [heads[m] + coords[a:b] for m, a, b in zip(npts.tolist(), ends[:-1], ends[1:])]


def copy_binary_rows(source: str, srid: int, idx, geom_fields: list, geom_4326_fields: list, repaired,
                     props: list) -> bytes:
    """Rows of ``COPY ... (COPY_COLUMNS) FROM STDIN (FORMAT binary)``, without the header or
    trailer. ``geom_fields``, ``geom_4326_fields``: per row, as ``ewkb_fields`` makes them;
    ``props[i]``: the JSON text (bytes-like) of row i's properties, or None."""
    n = len(idx)
    if n == 0:
        return b""
    src = source.encode("utf-8")
    pj = list(props)
    nulls = [i for i, p in enumerate(pj) if p is None]
    for i in nulls:
        pj[i] = b""
    plen = np.fromiter(map(len, pj), np.int64, n)
    fixed = np.zeros(n, dtype=[("nfields", ">i2"), ("l_source", ">i4"), ("source", f"V{len(src)}"),
                               ("l_index", ">i4"), ("index", ">i4"), ("l_srid", ">i4"), ("srid", ">i4"),
                               ("l_repaired", ">i4"), ("repaired", "u1"), ("l_props", ">i4"), ("version", "u1")])
    fixed["nfields"] = len(COPY_COLUMNS)
    fixed["l_source"] = len(src)
    fixed["source"] = np.void(src)
    fixed["l_index"] = fixed["l_srid"] = 4
    fixed["index"] = idx
    fixed["srid"] = srid
    fixed["l_repaired"] = 1
    fixed["repaired"] = np.asarray(repaired, dtype=bool)
    fixed["l_props"] = plen + 1  # + the jsonb version byte
    fixed["l_props"][nulls] = -1
    fixed["version"] = 1
    buf, w = fixed.tobytes(), fixed.itemsize
    heads = [buf[i:i + w] for i in range(0, n * w, w)]
    for i in nulls:  # NULL: no version byte, no text
        heads[i] = heads[i][:-1]
    return b"".join([x for row in zip(heads, pj, geom_fields, geom_4326_fields) for x in row])


def label_chunks(features: list, source: str, srid: int, crs, report: LabelReport, *, path: str = "",
                 note: str = "", chunk: int | None = None):
    """The binary COPY stream of a parsed label file (header, rows, trailer), ``chunk``
    (default ``CHUNK``) features at a time, with ``report`` filled in as it goes (repaired,
    rejected, loaded).
    Raises InputError when coordinates said to be lon/lat are not.

    The rows of features that are kept as read (the usual case) get their EWKB straight from
    the coordinates (``ragged_ewkb_fields``); repaired and odd ones through shapely."""
    from pyproj import CRS, Transformer

    to4326 = None if CRS.from_user_input(crs).to_epsg() == 4326 else \
        Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)

    def reproject(rag: Ragged) -> Ragged:
        x, y = to4326.transform(rag.xy[:, 0], rag.xy[:, 1])
        return rag._replace(xy=np.column_stack([x, y]))

    chunk = chunk or CHUNK
    yield COPY_HEADER
    for s in range(0, len(features), chunk):
        geoms, props, reasons, built = _feature_geometries(features, s, s + chunk, path)
        polygonal = None
        if built is not None:
            polygonal = np.zeros(len(geoms), dtype=bool)
            polygonal[built[0]] = True  # non-empty MultiPolygons: polygon_coordinates allows no empty array
        if to4326 is None:  # lon/lat must look like lon/lat
            where = f" (features {s}..{s + len(geoms) - 1})" if len(features) > chunk else ""
            _check_chunk_lonlat(geoms, path, note, where, built)
        idx, mp, repaired = clean_geometries(geoms, report, offset=s, reasons=reasons, polygonal=polygonal)
        as_read = np.zeros(len(geoms), dtype=bool)  # kept unchanged, and vectorised
        if built is not None:
            as_read[built[0]] = True
            as_read[idx[repaired]] = False
            kept = np.zeros(len(geoms), dtype=bool)
            kept[idx] = True
            as_read &= kept
        if as_read.any():
            sel = as_read[built[0]]
            rows, rag = built[0][sel], built[1].take(sel)
            g = ragged_ewkb_fields(rag, srid)
            g4 = g if to4326 is None else ragged_ewkb_fields(reproject(rag), 4326)
            yield copy_binary_rows(source, srid, rows + s, g, g4, np.zeros(len(rows), dtype=bool),
                                   [props[i] for i in rows.tolist()])
        other = ~as_read[idx]
        if other.any():
            rows, mp, fixed = idx[other], mp[other], repaired[other]
            g = ewkb_fields(mp, srid)
            g4 = g if to4326 is None else ewkb_fields(to_4326(mp, crs), 4326)
            yield copy_binary_rows(source, srid, rows + s, g, g4, fixed, [props[i] for i in rows.tolist()])
        report.loaded += len(idx)
    yield COPY_TRAILER


class _ChunkReader:
    """A file-like object for ``copy_expert`` whose data is made by a background thread, so
    Python builds the next rows while the server stores the previous ones (psycopg2 sends
    with the GIL released, and shapely's vectorised calls release it too)."""

    def __init__(self, chunks, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(chunks,), daemon=True, name="labels-copy")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, chunks) -> None:
        try:
            for c in chunks:
                if not self._put(c):
                    return
        except BaseException as e:  # re-raised by read() in the caller's thread
            self.error = e
        self._put(None)

    def read(self, size: int = -1):
        if self._done:
            return b""
        c = self._queue.get()
        if c is None:
            self._done = True
            self._thread.join()
            if self.error is not None:
                raise self.error
            return b""
        return c

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def file_digest(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def source_name(path) -> str:
    return Path(path).stem


def partition_names(source: str) -> tuple[str, str]:
    """The two table names the ``labels`` partition of ``source`` alternates between (a rerun
    builds the new partition beside the old one, then drops the old): ``labels_<hash>_0`` and
    ``_1``, the hash (96 bits of SHA-256 of the UTF-8 name) making any file stem a short, safe
    identifier. sql/schema.sql's migration of an unpartitioned table names them the same way."""
    h = hashlib.sha256(source.encode("utf-8")).hexdigest()[:24]
    return f"labels_{h}_0", f"labels_{h}_1"


def load_labels(conn, path, override: str = "", progress=None) -> LabelReport:
    """Replace the rows of one label file in ``labels`` (caller commits; nothing locks
    ``labels`` until the final swap of the partitions). ``progress(message)``: optional."""
    from psycopg2 import sql as psql

    from tasks.db import load_sql, next_partition, srid_for_crs

    path = str(path)
    with gc_paused():
        features, crs, note, report = open_label_file(path, override)
        srid = srid_for_crs(conn, crs)
        source = source_name(path)
        child, old = next_partition(conn, "labels_partitions", partition_names(source))
        with conn.cursor() as cur:
            ident = {"child": psql.Identifier(child), "bound": psql.Identifier(f"{child}_source"),
                     "pkey": psql.Identifier(f"{child}_pkey"),
                     "geom_gix": psql.Identifier(f"{child}_geom_gix"),
                     "geom_4326_gix": psql.Identifier(f"{child}_geom_4326_gix")}
            params = {"source": source}

            def run(name):
                cur.execute(psql.SQL(load_sql(name)).format(**ident), params)

            run("labels_partition")
            if progress:
                progress(f"copying {len(features):,} features of {path}")
            reader = _ChunkReader(label_chunks(features, source, srid, crs, report, path=path, note=note))
            try:
                cur.copy_expert(psql.SQL(load_sql("labels_copy")).format(**ident), reader, size=1 << 20)
            except Exception:
                if reader.error is not None:  # psycopg2 reports it as a cancelled COPY
                    raise reader.error from None
                raise
            finally:
                reader.close()
            if progress:
                progress(f"indexing {report.loaded:,} labels of {path}")
            cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # the sorts of the index builds
            run("labels_index")
            run("labels_lock")
            for name in old:
                cur.execute(psql.SQL("DROP TABLE {}").format(psql.Identifier(name)))
            run("labels_attach")
    return report


# ---------------------------------------------------------------- the task


class LoadLabels(luigi.Task):
    """Loads one GeoJSON label file into PostGIS; rows and marker commit together."""

    path = luigi.Parameter(description="GeoJSON label file")

    def requires(self):
        from tasks.sources import LabelFile, using_demo

        if using_demo():
            from tasks.demo import GenerateDemo

            return GenerateDemo()
        return LabelFile(path=self.path)

    def update_id(self) -> str:
        ov = data().label_crs
        key = hashlib.sha1(f"{os.path.abspath(self.path)}|{ov}".encode()).hexdigest()[:12]
        return f"labels:{source_name(self.path)}:{key}"

    def output(self):
        from tasks.db import PostgresMarker

        return PostgresMarker(self.update_id(), "labels")

    def report_path(self) -> Path:
        return workdir() / "labels" / f"{source_name(self.path)}.report.json"

    def run(self):
        from tasks import db

        self.set_status_message(f"loading {self.path}")
        with db.connection() as conn:
            db.ensure_schema(conn)
            with conn.cursor() as cur:  # one loader per source at a time
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"labels:{source_name(self.path)}",))
                cur.execute("DELETE FROM table_updates WHERE update_id LIKE %s",
                            (f"labels:{source_name(self.path)}:%",))
            report = load_labels(conn, self.path, data().label_crs, progress=self.set_status_message)
            self.output().touch(conn)
        if report.repaired or report.rejected:
            log.warning("%s: %d invalid polygons repaired, %d features rejected (see %s)",
                        self.path, report.repaired, len(report.rejected), self.report_path())
        rp = self.report_path()
        rp.parent.mkdir(parents=True, exist_ok=True)
        tmp = rp.with_name(f".{rp.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(report.as_dict(), indent=1))
        os.replace(tmp, rp)
        self.set_status_message(f"{report.loaded} labels loaded, {report.repaired} repaired, {len(report.rejected)} rejected")
