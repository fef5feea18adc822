"""footprints.labels.clean: polygonal geometries kept as MultiPolygons, the rest rejected with reasons."""
import shapely

from footprints.labels import LabelReport, clean_geometries


def test_clean_geometries_rejects_empty():
    rep = LabelReport(path="x")
    idx, out, rep_flags = clean_geometries(
        [shapely.Polygon(), shapely.box(0, 0, 1, 1), None], rep)
    assert list(idx) == [1] and out[0].geom_type == "MultiPolygon"
    assert [r["feature"] for r in rep.rejected] == [0, 2]


def test_invalid_polygons_are_repaired_and_counted_and_others_rejected():
    bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    rep = LabelReport(path="x")
    idx, out, fixed = clean_geometries([shapely.box(0, 0, 1, 1), bowtie, shapely.Point(0, 0)], rep, offset=10)
    assert list(idx) == [0, 1] and list(fixed) == [False, True] and rep.repaired == 1
    assert all(g.geom_type == "MultiPolygon" and g.is_valid for g in out)
    assert shapely.get_num_geometries(out[1]) == 2
    assert rep.rejected == [{"feature": 12, "reason": "Point is not a polygon"}]
