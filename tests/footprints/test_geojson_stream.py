"""footprints.geojson_stream: the chunked reader gives what the whole-file reader gives.

Documents of every shape (members before and after the features, nested properties whose
strings hold brackets, braces, commas, colons, escaped quotes and backslashes, any indentation,
a BOM), read in chunks of a few features and blocks of a few bytes, so that every boundary
falls everywhere; and the same documents damaged: both readers reject them, or both read
the same features.
"""
from __future__ import annotations

import codecs
import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footprints import geojson_stream
from footprints.errors import InputError
from footprints.geojson import parse_geojson
from footprints.geojson_stream import FeatureStream

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_tricky = st.lists(st.sampled_from(list('ab{}[],:"\\/ \n\tü€') + ['\\"', '"\\', "\\\\"]), max_size=8).map("".join)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False, width=32), _tricky)
_json = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(_tricky, inner, max_size=3)), max_leaves=8)
_xy = st.tuples(st.floats(-180, 180, width=32), st.floats(-90, 90, width=32)).map(list)
_ring = st.lists(_xy, min_size=3, max_size=5).map(lambda r: r + [r[0]])
_geometry = st.one_of(
    st.none(),
    st.builds(lambda c: {"type": "Polygon", "coordinates": c}, st.lists(_ring, min_size=1, max_size=2)),
    st.builds(lambda c: {"type": "MultiPolygon", "coordinates": [c]}, st.lists(_ring, min_size=1, max_size=2)),
    st.builds(lambda c: {"type": "Point", "coordinates": c}, _xy),
    st.builds(lambda gs: {"type": "GeometryCollection", "geometries": gs},
              st.lists(st.builds(lambda c: {"type": "Point", "coordinates": c}, _xy), max_size=2)),
)
_CRS = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}


@st.composite
def _feature(draw):
    members = {"type": "Feature", "properties": draw(st.one_of(st.none(), st.dictionaries(_tricky, _json, max_size=4))),
               "geometry": draw(_geometry)}
    if draw(st.booleans()):
        members["id"] = draw(_tricky)
    keys = draw(st.permutations(list(members)))
    return {k: members[k] for k in keys}


@st.composite
def _document(draw):
    """(the document's bytes, its features)"""
    features = draw(st.lists(_feature(), max_size=9))
    members = {"type": "FeatureCollection", "features": features}
    if draw(st.booleans()):
        members["crs"] = _CRS
    if draw(st.booleans()):
        members["name"] = draw(_tricky)
    if draw(st.booleans()):
        members["bbox"] = [-1.5, -2, 3, 4]
    if draw(st.booleans()):
        members["meta"] = draw(_json)
    keys = draw(st.permutations(list(members)))
    doc = {k: members[k] for k in keys}
    fmt = draw(st.sampled_from([{}, {"indent": 0}, {"indent": 2}, {"indent": "\t"}, {"separators": (",", ":")},
                                {"ensure_ascii": False}, {"indent": 1, "ensure_ascii": False}]))
    text = json.dumps(doc, **fmt).encode("utf-8")
    pad = draw(st.sampled_from([b"", b"\n", b" \r\n\t"]))
    bom = codecs.BOM_UTF8 if draw(st.booleans()) else b""
    return bom + pad + text + pad


def _plain(record):
    """A feature record as plain values (raw JSON decoded): the two readers' raw texts may be
    laid out differently when one of them read the feature generically (which also keeps
    null properties as absent ones: both are no properties)."""
    def dec(raw):
        return msgspec.json.decode(raw) if len(raw) else "<absent>"

    g = record.geometry
    props = dec(record.properties)
    return (None if g is None else (g.type, dec(g.coordinates), dec(g.geometries)),
            "<absent>" if props is None else props)


def _whole(path):
    try:
        features, crs = parse_geojson(path.read_bytes(), str(path))
    except InputError as e:
        return "error", str(e)
    return "ok", [_plain(f) for f in features], crs


def _streamed(path, chunk, block):
    try:
        stream = FeatureStream(path, chunk=chunk, block=block)
        out, sizes = [], []
        for start, records in stream.chunks():
            assert start == len(out)
            out += [_plain(f) for f in records]
            sizes.append(len(records))
    except InputError as e:
        return "error", str(e)
    assert all(n == chunk for n in sizes[:-1]) and all(0 < n <= chunk for n in sizes), sizes
    assert stream.read == len(out)
    return "ok", out, stream.crs_member


@SETTINGS
@given(_document(), st.integers(1, 4), st.sampled_from([1, 2, 7, 64, 4096]))
def test_stream_reads_what_the_whole_file_reader_reads(tmp_path, data, chunk, block):
    path = tmp_path / "doc.geojson"
    path.write_bytes(data)
    whole = _whole(path)
    assert whole[0] == "ok"
    assert _streamed(path, chunk, block) == whole


@SETTINGS
@given(_document(), st.integers(1, 3), st.sampled_from([3, 16, 4096]), st.data())
def test_a_damaged_document_is_rejected_by_both_or_read_alike(tmp_path, data, chunk, block, draw):
    """Cut short, a byte dropped, or a structural character put in: both readers reject it
    (an InputError naming the file) or both read the same features."""
    where = draw.draw(st.integers(0, len(data)))
    how = draw.draw(st.sampled_from(["cut", "drop", "insert"]))
    if how == "cut":
        data = data[:where]
    elif how == "drop":
        data = data[:where] + data[where + 1:]
    else:
        data = data[:where] + draw.draw(st.sampled_from([b",", b"]", b"}", b"[", b"{", b'"', b":", b"\\"])) + data[where:]
    path = tmp_path / "doc.geojson"
    path.write_bytes(data)
    if not data:
        return  # an empty file: both name it (tests/footprints/labels/test_parse.py)
    whole, streamed = _whole(path), _streamed(path, chunk, block)
    assert whole[0] == streamed[0], (whole, streamed)
    if whole[0] == "ok":
        assert streamed == whole
    else:
        assert streamed[1].startswith(f"{path}: "), streamed


def _fc_text(n: int, before: str = "", after: str = "") -> bytes:
    feature = {"type": "Feature", "properties": {"s": 'a "quoted" {[x]}, \\ and: more'},
               "geometry": {"type": "Polygon", "coordinates": [[[1, 2], [3, 4], [5, 6], [1, 2]]]}}
    body = ",\n".join(json.dumps(feature) for _ in range(n))
    return f'{{{before}"type": "FeatureCollection", "features": [\n{body}\n]{after}}}'.encode()


def test_a_crs_member_after_the_features_is_read_before_them(tmp_path, monkeypatch):
    monkeypatch.setattr(geojson_stream, "TAIL", 256)  # the tail read is far smaller than the features
    path = tmp_path / "late crs.geojson"
    path.write_bytes(_fc_text(50, after=f', "crs": {json.dumps(_CRS)}'))
    stream = FeatureStream(path, chunk=7, block=100)
    assert stream.crs_member == _CRS
    assert sum(len(r) for _, r in stream.chunks()) == 50


def test_a_crs_member_behind_a_large_member_after_the_features_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(geojson_stream, "TAIL", 256)
    path = tmp_path / "hidden.geojson"
    path.write_bytes(_fc_text(20, after=f', "crs": {json.dumps(_CRS)}, "big": "{"x" * 1000}"'))
    assert FeatureStream(path).crs_member is None  # not found ahead of the features...
    with pytest.raises(InputError, match=r"hidden\.geojson: cannot use the 'crs' member after the features: .*move "
                                         r"it before 'features'"):
        list(FeatureStream(path, chunk=5, block=64).chunks())  # ...and found after them


def test_malformed_files_get_the_whole_file_readers_message(tmp_path):
    for text in (_fc_text(30)[:-40], _fc_text(30).replace(b"]]]", b"]]", 1), b"{not json", b"[1, 2]",
                 _fc_text(3) + b" x", _fc_text(3, after=', "name": tru')):
        path = tmp_path / "bad.geojson"
        path.write_bytes(text)
        with pytest.raises(InputError) as whole:
            parse_geojson(text, str(path))
        with pytest.raises(InputError) as streamed:
            list(FeatureStream(path, chunk=4, block=50).chunks())
        assert str(streamed.value) == str(whole.value)


def test_a_large_malformed_file_names_the_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(geojson_stream, "WHOLE_LIMIT", 100)  # as a file too large to read whole
    path = tmp_path / "cut.geojson"
    text = _fc_text(30)
    path.write_bytes(text[:len(text) // 2])
    with pytest.raises(InputError, match=r"cut\.geojson: malformed GeoJSON: .* \(at byte [\d,]+\)$"):
        list(FeatureStream(path, chunk=4, block=64).chunks())


def test_odd_documents_go_to_the_whole_file_reader(tmp_path):
    """A single Feature; a FeatureCollection without features; not a FeatureCollection."""
    single = {"type": "Feature", "properties": {"a": 1}, "geometry": None}
    path = tmp_path / "one.geojson"
    path.write_text(json.dumps(single))
    assert [len(r) for _, r in FeatureStream(path).chunks()] == [1]
    for doc, problem in (({"type": "FeatureCollection"}, "no 'features' array"),
                         ({"type": "Topology", "features": []}, "not a FeatureCollection"),
                         ({"features": []}, "type None is not a FeatureCollection")):
        path.write_text(json.dumps(doc))
        with pytest.raises(InputError, match=problem):
            list(FeatureStream(path).chunks())


def test_memory_holds_a_chunk_not_the_file(tmp_path):
    """The scanner's buffer never holds much more than a block and a chunk."""
    path = tmp_path / "many.geojson"
    path.write_bytes(_fc_text(2000))
    stream = FeatureStream(path, chunk=10, block=256)
    scanner = stream._events.gi_frame.f_locals["self"]
    peak = 0
    for _ in stream.chunks():
        peak = max(peak, len(scanner.buf))
    assert stream.read == 2000 and peak < 10 * 300 + 2 * 256, peak
