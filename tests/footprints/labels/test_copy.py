"""footprints.labels.copy, the fast binary COPY encoder, against its references: shapely's own
EWKB writer (``shapely.to_wkb(..., hex=False, include_srid=True)``) and PostGIS reading the stream."""
import io
import json
import struct

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import shape

from footprints.geo import to_4326
from footprints.geojson import parse_geojson
from footprints.labels import (
    COPY_COLUMNS,
    COPY_HEADER,
    COPY_TRAILER,
    LabelReport,
    Ragged,
    ewkb_fields,
    label_chunks,
    ragged_ewkb_fields,
)
from footprints.labels.parse import resolve_crs


def _reference(geoms, srid: int) -> list:
    """The binary COPY fields of MultiPolygons as shapely writes them: length, then little-endian EWKB."""
    out = []
    for g in geoms:
        w = shapely.to_wkb(shapely.set_srid(g, srid), hex=False, include_srid=True, byte_order=1)
        out.append(struct.pack(">i", len(w)) + w)
    return out


def _ragged(mp) -> Ragged:
    _, xy, (ring_off, poly_off, geom_off) = shapely.to_ragged_array(np.asarray(mp, dtype=object))
    return Ragged(xy, ring_off, poly_off, geom_off)


HOLE = shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)], [[(2, 2), (2, 4), (4, 4), (4, 2), (2, 2)],
                                                                     [(6, 6), (6, 8), (8, 8), (8, 6), (6, 6)]])
L_SHAPE = shapely.Polygon([(0, 0), (3, 0), (3, 1), (1, 1), (1, 2), (0, 2)])
CASES = {
    "polygons": [shapely.MultiPolygon([shapely.box(0, 0, 1, 1)]), shapely.MultiPolygon([L_SHAPE]),
                 shapely.MultiPolygon([shapely.box(-84.5, 33.7, -84.4999, 33.7001)])],
    "multipolygons": [shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)]),
                      shapely.MultiPolygon([L_SHAPE, shapely.box(5, 5, 6, 7), shapely.box(-1, -1, -0.5, -0.5)])],
    "holes": [shapely.MultiPolygon([HOLE]), shapely.MultiPolygon([HOLE, shapely.box(20, 20, 21, 21)])],
}
CASES["mixed"] = [g for gs in CASES.values() for g in gs]


def test_ewkb_of_each_kind_is_shapelys_byte_for_byte():
    for kind, geoms in CASES.items():
        mp = np.array(geoms, dtype=object)
        for srid in (4326, 32616, 900001):
            ref = _reference(mp, srid)
            assert ewkb_fields(mp, srid) == ref, kind
            assert ragged_ewkb_fields(_ragged(mp), srid) == ref, kind
            back = shapely.from_wkb([f[4:] for f in ref])
            assert all(shapely.equals_exact(a, b, 0) for a, b in zip(back, mp))
            assert set(shapely.get_srid(back).tolist()) == {srid}


_coord = st.floats(min_value=-1e7, max_value=1e7, allow_nan=False, allow_infinity=False)


@st.composite
def _ring(draw):
    pts = draw(st.lists(st.tuples(_coord, _coord), min_size=3, max_size=7))
    return [list(p) for p in pts] + [list(pts[0])]


_polygon = st.lists(_ring(), min_size=1, max_size=3)
_geometry = st.one_of(st.builds(lambda c: {"type": "Polygon", "coordinates": c}, _polygon),
                      st.builds(lambda c: {"type": "MultiPolygon", "coordinates": c},
                                st.lists(_polygon, min_size=1, max_size=3)))


def _as_multi(g):
    g = shape(g)
    return g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g])


@settings(max_examples=40, deadline=None)
@given(st.lists(_geometry, min_size=1, max_size=10), st.sampled_from([4326, 32616, 900001]),
       st.lists(st.booleans(), min_size=10, max_size=10))
def test_ewkb_written_by_numpy_is_shapelys_byte_for_byte(geoms, srid, mask):
    mp = np.array([_as_multi(g) for g in geoms], dtype=object)
    rag = _ragged(mp)
    assert ragged_ewkb_fields(rag, srid) == _reference(mp, srid) == ewkb_fields(mp, srid)
    keep = np.array(mask[:len(mp)])
    assert ragged_ewkb_fields(rag.take(keep), srid) == _reference(mp[keep], srid)


# ---------------------------------------------------------------- the stream

def parse_copy(stream: bytes) -> list:
    """The rows of a binary COPY stream (PostgreSQL's documented format), each a list of raw field
    values (None for NULL); asserts the header, the field counts and the trailer."""
    assert stream.startswith(COPY_HEADER) and stream.endswith(COPY_TRAILER)
    pos, rows = len(COPY_HEADER), []
    while True:
        (n,) = struct.unpack_from(">h", stream, pos)
        pos += 2
        if n == -1:
            break
        assert n == len(COPY_COLUMNS)
        row = []
        for _ in range(n):
            (size,) = struct.unpack_from(">i", stream, pos)
            pos += 4
            row.append(None if size == -1 else stream[pos:pos + size])
            pos += max(size, 0)
        rows.append(row)
    assert pos == len(stream)
    return rows


def _decode(row) -> dict:
    source, index, srid, repaired, props, geom, geom_4326 = row
    assert props is None or props[:1] == b"\x01"  # jsonb's version byte
    return {"source": source.decode("utf-8"), "feature_index": struct.unpack(">i", index)[0],
            "srid": struct.unpack(">i", srid)[0], "repaired": repaired == b"\x01",
            "properties": None if props is None else json.loads(props[1:]),
            "geom": bytes(geom), "geom_4326": bytes(geom_4326)}


UTM_SQUARE = [[500000, 4000000], [500010, 4000000], [500010, 4000010], [500000, 4000010], [500000, 4000000]]
BOWTIE = [[500000, 4000000], [500010, 4000010], [500010, 4000000], [500000, 4000010], [500000, 4000000]]


def _document():
    """A UTM label file: the fast path (polygons, a hole, a multipolygon) and the shapely path
    (a repaired bowtie), properties of every kind, and a rejected point."""
    hole = [UTM_SQUARE, [[500002, 4000002], [500002, 4000004], [500004, 4000004], [500004, 4000002], [500002, 4000002]]]
    far = [[x + 100, y] for x, y in UTM_SQUARE]
    feats = [{"type": "Feature", "properties": {"n": 0, "name": "Ünïcode"}, "geometry": {"type": "Polygon", "coordinates": [UTM_SQUARE]}},
             {"type": "Feature", "properties": None, "geometry": {"type": "Polygon", "coordinates": hole}},
             {"type": "Feature", "properties": {"n": 2}, "geometry": {"type": "MultiPolygon", "coordinates": [[UTM_SQUARE], [far]]}},
             {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [BOWTIE]}},
             {"type": "Feature", "properties": {"n": 4}, "geometry": {"type": "Point", "coordinates": [500000, 4000000]}}]
    return {"type": "FeatureCollection", "features": feats,
            "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}}


def _stream(chunk=None):
    doc = _document()
    features, _ = parse_geojson(json.dumps(doc).encode(), "t.geojson")
    crs, _ = resolve_crs(32616, "")
    report = LabelReport(path="t.geojson")
    stream = b"".join(label_chunks(features, "t", 32616, crs, report, path="t.geojson", chunk=chunk))
    return doc, crs, report, stream


def _expected(doc):
    """feature index -> (MultiPolygon, repaired?) the loader must write, made the shapely way."""
    out = {}
    for i, f in enumerate(doc["features"][:4]):
        g = shape(f["geometry"])
        repaired = not g.is_valid
        g = shapely.make_valid(g) if repaired else g
        out[i] = (g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]), repaired)
    return out


def test_label_chunks_stream_decodes_to_shapelys_rows():
    for chunk in (None, 2):  # one chunk; and chunks of two (features 0-1, 2-3, 4)
        doc, crs, report, stream = _stream(chunk)
        rows = [_decode(r) for r in parse_copy(stream)]
        assert report.loaded == 4 and report.repaired == 1
        assert report.rejected == [{"feature": 4, "reason": "Point is not a polygon"}]
        expected = _expected(doc)
        assert sorted(r["feature_index"] for r in rows) == [0, 1, 2, 3]
        for r in rows:
            mp, repaired = expected[r["feature_index"]]
            assert r["source"] == "t" and r["srid"] == 32616 and r["repaired"] == repaired
            got = shapely.from_wkb(r["geom"])
            # as read: numpy's EWKB; repaired: shapely's writer. Either way shapely's bytes
            assert r["geom"] == _reference([mp], 32616)[0][4:]
            assert shapely.get_srid(got) == 32616
            g4 = shapely.from_wkb(r["geom_4326"])
            assert shapely.get_srid(g4) == 4326
            assert shapely.equals_exact(g4, to_4326(got, crs), tolerance=1e-9)
        props = {r["feature_index"]: r["properties"] for r in rows}
        assert props == {0: {"n": 0, "name": "Ünïcode"}, 1: None, 2: {"n": 2}, 3: None}


def test_label_chunks_stream_goes_through_a_real_postgis_copy(pg):
    doc, _, _, stream = _stream()
    expected = _expected(doc)
    with pg.cursor() as cur:
        cur.execute("CREATE TEMP TABLE copy_check (source text, feature_index integer, srid integer, repaired boolean, "
                    "properties jsonb, geom geometry(MultiPolygon), geom_4326 geometry(MultiPolygon, 4326))")
        cur.copy_expert(f"COPY copy_check ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT binary)", io.BytesIO(stream))
        cur.execute("SELECT feature_index, source, srid, repaired, properties, ST_SRID(geom), ST_AsBinary(geom), "
                    "ST_IsValid(geom), ST_SRID(geom_4326) FROM copy_check ORDER BY 1")
        rows = cur.fetchall()
    pg.rollback()
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    for index, source, srid, repaired, props, geom_srid, wkb, valid, srid_4326 in rows:
        mp, fixed = expected[index]
        assert (source, srid, geom_srid, srid_4326, repaired, valid) == ("t", 32616, 32616, 4326, fixed, True)
        assert shapely.equals_exact(shapely.from_wkb(bytes(wkb)), mp, 0)
        assert props == (doc["features"][index]["properties"] or None)
