"""footprints.labels.parse: the label file's CRS and the fast numpy reading of its polygons."""
import json

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import shape

from footprints.errors import InputError
from footprints.labels import LabelReport, clean_geometries, polygon_coordinates, read_label_file


def _fc(features, crs=None):
    fc = {"type": "FeatureCollection", "features": features}
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    return fc


def _poly(coords, **props):
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [coords]}}


SQUARE = [[36.0, -6.0], [36.001, -6.0], [36.001, -5.999], [36.0, -5.999], [36.0, -6.0]]


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


@pytest.mark.parametrize("content,problem", [
    ("", "empty"),
    ("{not json", "malformed GeoJSON"),
    ('{"type": "Topology", "objects": {}}', "not a FeatureCollection"),
])
def test_empty_or_malformed_geojson(tmp_path, content, problem):
    p = _write(tmp_path, "bad.geojson", content)
    with pytest.raises(InputError, match=rf"bad\.geojson: .*{problem}"):
        read_label_file(p)


def test_unreadable_crs_member_names_the_file(tmp_path):
    fc = _fc([_poly(SQUARE)])
    fc["crs"] = {"type": "link", "properties": {"href": "http://example.com/crs"}}
    with pytest.raises(InputError, match=r"crs\.geojson: cannot read the crs member"):
        read_label_file(_write(tmp_path, "crs.geojson", fc))


# ---------------------------------------------------------------- the fast reader

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


@settings(max_examples=60, deadline=None)
@given(st.lists(_geometry, min_size=1, max_size=12), st.sampled_from([None, 0, 2]))
def test_polygon_coordinates_read_what_shapely_reads(geoms, indent):
    """Any formatting: the numpy reader gives the same MultiPolygons, coordinate for coordinate."""
    texts = [json.dumps(g["coordinates"], indent=indent).encode() for g in geoms]
    rag, odd = polygon_coordinates(texts, [g["type"] == "MultiPolygon" for g in geoms])
    assert rag is not None and len(odd) == 0
    got = rag.geometries()
    assert len(got) == len(geoms)
    for a, g in zip(got, geoms):
        assert shapely.equals_exact(a, _as_multi(g), tolerance=0)


def test_polygon_coordinates_point_at_what_they_cannot_read():
    good = json.dumps(SQUARE).encode()
    texts = [b"[" + good + b"]",                       # 0 Polygon: fine
             b"[[[36, -6, 5], [36.1, -6, 5], [36, -5.9, 5], [36, -6, 5]]]",  # 1 3D
             b"[[[36], [36.1, -6], [36, -5.9], [36, -6]]]",  # 2 a one-number position
             b"[]",                                     # 3 empty
             b"[[]]",                                   # 4 an empty ring
             b'[[["36", -6], [36.1, -6], [36, -5.9], ["36", -6]]]',  # 5 strings
             b"[[36, -6], [36.1, -6], [36, -5.9], [36, -6]]",  # 6 nested too shallowly
             b"5",                                      # 7 not an array
             b"[[" + good + b"]]",                      # 8 MultiPolygon: fine
             b"[[[[36, -6], [36.1, -6], [36, -5.9], [36, -6]]]]"]  # 9 a Polygon nested too deeply
    multi = [False] * 8 + [True, False]
    rag, odd = polygon_coordinates(texts, multi)
    assert rag is None and sorted(odd.tolist()) == [1, 2, 3, 4, 5, 6, 7, 9]
    keep = [i for i in range(len(texts)) if i not in set(odd.tolist())]
    rag, odd = polygon_coordinates([texts[i] for i in keep], [multi[i] for i in keep])
    assert len(odd) == 0 and rag.count == 2 and len(rag.xy) == 10


# ---------------------------------------------------------------- bad label files (issue 11)


def test_feature_collection_without_features_is_valid_and_empty(tmp_path):
    geoms, props, crs, report = read_label_file(_write(tmp_path, "none.geojson", _fc([])))
    assert len(geoms) == 0 and props == [] and crs.to_epsg() == 4326
    assert report.read == 0 and not report.rejected


def test_null_points_lines_and_self_intersections_are_rejected_or_repaired_and_counted(tmp_path):
    """One file with every odd feature: null geometries, a Point and a LineString are rejected
    with their reason (listed in the load report); a self-intersecting polygon is repaired
    (MakeValid) and counted; the good polygon goes through untouched."""
    bowtie = [[36.0, -6.0], [36.001, -5.999], [36.001, -6.0], [36.0, -5.999], [36.0, -6.0]]
    feats = [_poly(SQUARE),
             {"type": "Feature", "properties": {}, "geometry": None},
             {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [36.0, -6.0]}},
             {"type": "Feature", "properties": {}, "geometry": {"type": "LineString",
                                                               "coordinates": [[36.0, -6.0], [36.001, -6.0]]}},
             _poly(bowtie)]
    geoms, _, _, report = read_label_file(_write(tmp_path, "odd.geojson", _fc(feats)))
    rep = LabelReport(path="odd.geojson")
    idx, out, fixed = clean_geometries(geoms, rep)
    assert list(idx) == [0, 4] and list(fixed) == [False, True] and rep.repaired == 1
    assert all(g.is_valid for g in out)
    assert rep.rejected == [{"feature": 1, "reason": "empty or missing geometry"},
                            {"feature": 2, "reason": "Point is not a polygon"},
                            {"feature": 3, "reason": "LineString is not a polygon"}]


def test_projected_coordinates_without_crs_member_are_an_error_naming_the_file(tmp_path):
    utm = [[500000, 4000000], [500010, 4000000], [500010, 4000010], [500000, 4000010], [500000, 4000000]]
    p = _write(tmp_path, "utm labels.geojson", _fc([_poly(utm)]))
    with pytest.raises(InputError) as e:
        read_label_file(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: coordinates span") and "not longitude/latitude" in msg and "label_crs" in msg
    assert "\n" not in msg
    geoms, _, crs, _ = read_label_file(p, override="EPSG:32616")  # the remedy it names
    assert crs.to_epsg() == 32616 and geoms[0].area == pytest.approx(100)
