"""GeoJSON: the one reader and the one writer.

Reading: ``read(path)`` gives ``(features, crs member)`` (``footprints.geojson_stream`` reads
the same records chunk by chunk, in bounded memory, for the label loader). msgspec decodes the document into small
typed records that keep each geometry's ``coordinates`` and each feature's ``properties`` as raw
JSON text (no Python object per coordinate); ``geometry(record)`` and ``properties(record)``
decode one feature on demand. Labels, evaluation, the service and the tests all read through it.
Legacy ``crs`` members (``urn:ogc:def:crs:EPSG::32616``, OGC CRS84) are understood.

Writing: RFC 7946 (EPSG:4326 lon/lat, exterior rings counter-clockwise, holes clockwise, no
``crs`` member), streamed feature by feature, atomically when given a path.
"""
from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

import msgspec
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry import mapping, shape
from shapely.geometry.polygon import orient

from footprints.atomic import atomic_path
from footprints.errors import InputError

SUFFIXES = (".geojson", ".json")


# ---------------------------------------------------------------- reading


class GeometryRecord(msgspec.Struct, gc=False):
    """A GeoJSON geometry, its coordinates (or a collection's geometries) as raw JSON."""

    type: str
    coordinates: msgspec.Raw = msgspec.Raw()
    geometries: msgspec.Raw = msgspec.Raw()


class FeatureRecord(msgspec.Struct, gc=False):
    """A GeoJSON Feature, its properties as raw JSON (empty when absent)."""

    geometry: GeometryRecord | None = None
    properties: msgspec.Raw = msgspec.Raw()


class DocumentRecord(msgspec.Struct, gc=False):
    """A GeoJSON FeatureCollection, or a single Feature."""

    type: str | None = None
    features: list[FeatureRecord] | None = None
    crs: msgspec.Raw = msgspec.Raw()
    geometry: GeometryRecord | None = None
    properties: msgspec.Raw = msgspec.Raw()


_DECODER = msgspec.json.Decoder(DocumentRecord)


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
        features = [FeatureRecord(geometry=doc.geometry, properties=doc.properties)]
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


def _feature_record(f, i: int, path) -> FeatureRecord:
    if not isinstance(f, dict):
        raise InputError(path, f"malformed GeoJSON: feature {i} is not a GeoJSON Feature object")
    p, g = f.get("properties"), f.get("geometry")
    props = msgspec.Raw() if p is None else _raw(p)
    if g is None:
        return FeatureRecord(None, props)
    if not isinstance(g, dict) or not isinstance(g.get("type"), str):
        return FeatureRecord(GeometryRecord(type=f"(a JSON {type(g).__name__} without a type)" if isinstance(g, dict)
                                  else f"(a JSON {type(g).__name__})"), props)
    return FeatureRecord(GeometryRecord(type=g["type"],
                              coordinates=_raw(g["coordinates"]) if "coordinates" in g else msgspec.Raw(),
                              geometries=_raw(g["geometries"]) if "geometries" in g else msgspec.Raw()), props)


def crs_from_member(member, path):
    """The pyproj CRS of a legacy GeoJSON ``crs`` member (None when absent): ``{"type": "name",
    "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}`` or ``{"type": "EPSG", "properties":
    {"code": 32616}}``. OGC CRS84 (lon/lat, as GeoJSON coordinates always are) is EPSG:4326."""
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
    except (AttributeError, KeyError, TypeError, ValueError, CRSError) as e:
        raise InputError(path, f"cannot read the crs member {json.dumps(member)[:200]}: {e}") from None
    if crs.to_epsg() is None and crs.equals(CRS.from_user_input("OGC:CRS84")):
        crs = CRS.from_epsg(4326)
    return crs


def check_file(path, what: str = "GeoJSON file") -> None:
    """A missing, directory or empty (0-byte) file is an ``InputError`` naming it."""
    if not os.path.exists(path):
        raise InputError(path, f"{what} does not exist")
    if os.path.isdir(path):
        raise InputError(path, f"{what} is a directory")
    if os.path.getsize(path) == 0:
        raise InputError(path, f"{what} is empty (0 bytes); expected a GeoJSON FeatureCollection")


def read_bytes(path, what: str = "GeoJSON file") -> bytes:
    """The file's bytes (``check_file`` first)."""
    check_file(path, what)
    with open(path, "rb") as f:
        return f.read()


def read(path, what: str = "GeoJSON file") -> tuple[list, object]:
    """``(features, crs member or None)`` of a GeoJSON file (``parse_geojson`` records)."""
    return parse_geojson(read_bytes(path, what), str(path))


def geometry_dict(g) -> dict:
    """The GeoJSON geometry object of a record's geometry (decoded)."""
    out = {"type": g.type}
    if not len(g.coordinates) and not len(g.geometries):
        raise ValueError(f"a {g.type} without coordinates")
    if len(g.coordinates):
        out["coordinates"] = msgspec.json.decode(g.coordinates)
    if len(g.geometries):
        out["geometries"] = msgspec.json.decode(g.geometries)
    return out


def geometry(feature):
    """The shapely geometry (2D) of a feature record, or None when it has none.
    Raises ValueError (or shapely's errors) for unreadable coordinates."""
    if feature.geometry is None:
        return None
    return shapely.force_2d(shape(geometry_dict(feature.geometry)))


def properties(feature) -> dict:
    """A feature record's properties as a dict ({} when absent or null)."""
    if not len(feature.properties):
        return {}
    p = msgspec.json.decode(feature.properties)
    return p if isinstance(p, dict) else {}


# ---------------------------------------------------------------- writing


def rfc7946_geometry(geom) -> dict:
    """GeoJSON geometry of a lon/lat (multi)polygon with RFC 7946 winding: exterior rings
    counter-clockwise, holes clockwise."""
    if geom.geom_type == "Polygon":
        g = orient(geom, sign=1.0)
    elif geom.geom_type == "MultiPolygon":
        g = shapely.MultiPolygon([orient(p, sign=1.0) for p in geom.geoms])
    else:
        raise ValueError(f"only polygons go into a buildings GeoJSON, not {geom.geom_type}")
    return mapping(g)


def check_lonlat(geom, where: str) -> None:
    """A geometry that cannot be lon/lat is a bug upstream: GeoJSON is never written in pixels."""
    x0, y0, x1, y1 = geom.bounds
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise ValueError(f"{where}: geometry outside the lon/lat range {geom.bounds}; RFC 7946 needs EPSG:4326")


def feature(geom_4326, props: dict, fid=None) -> dict:
    """An RFC 7946 Feature of a lon/lat polygon."""
    check_lonlat(geom_4326, f"feature {fid}" if fid is not None else "feature")
    f = {"type": "Feature"}
    if fid is not None:
        f["id"] = fid
    f["geometry"] = rfc7946_geometry(geom_4326)
    f["properties"] = props
    return f


def write_features(f, features) -> None:
    """Stream a FeatureCollection to an open text file, feature by feature (bounded memory)."""
    f.write('{"type": "FeatureCollection", "features": [')
    for i, feat in enumerate(features):
        f.write(",\n" if i else "\n")
        f.write(json.dumps(feat, allow_nan=False))  # repr floats: full double precision
    f.write("\n]}\n")


def write(path, features) -> None:
    """Write a FeatureCollection atomically (temporary name, then rename)."""
    with atomic_path(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        write_features(f, features)
