"""Building types (issue 9, part 1): per-class masks, class-agnostic polygons with per-class
confidences, the class-aware metric, the label class rule, the output columns, the CLI and the
typed demo."""
import io
import json
import struct

import numpy as np
import pytest
import shapely
from affine import Affine

from footprints import cli
from footprints import outputs as fo
from footprints.demo import generate_scene, generate_typed_scene
from footprints.demo.typed import CONDITIONS
from footprints.errors import InputError
from footprints.geojson import parse_geojson
from footprints.labels import COPY_COLUMNS, COPY_HEADER, COPY_TRAILER, LabelReport, label_chunks
from footprints.labels.classes import ClassRule
from footprints.labels.parse import resolve_crs
from footprints.masks import make_mask, mask_bands
from footprints.polygonize import polygonize_probabilities
from footprints.spacenet import class_scores, evaluate_frames, make_frame

PIX = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 100.0)  # 1 m pixels
CLASSES = ("Complete", "Incomplete", "Foundation")


def _geo(x0, y0, x1, y1):
    """A building in CRS units of ``PIX`` from pixel bounds (columns x0..x1, rows y0..y1)."""
    return shapely.box(x0, 100 - y1, x1, 100 - y0)


def test_masks_burn_one_footprint_band_per_class_and_boundary_contact_over_all():
    a, b = _geo(2, 2, 8, 8), _geo(8, 2, 14, 8)  # touching, of two classes
    m = make_mask([a, b], (16, 16), PIX, "3class", 1.0, 2.0, classes=[0, 2], n_classes=3)
    assert m.shape == (5, 16, 16) and mask_bands("3class", CLASSES) == [*CLASSES, "boundary", "contact"]
    assert (m[0, 2:8, 2:8] == 255).all() and (m[2, 2:8, 8:14] == 255).all() and not m[1].any()
    plain = make_mask([a, b], (16, 16), PIX, "3class", 1.0, 2.0)
    assert (m[3:] == plain[1:]).all()  # boundary and contact: all buildings together
    assert (np.maximum.reduce(m[:3]) == plain[0]).all()
    assert make_mask([a], (16, 16), PIX, "footprint", classes=[1], n_classes=3).shape == (3, 16, 16)


def test_buildings_are_found_on_the_union_of_classes_and_carry_confidences():
    p = np.zeros((3, 12, 20), np.float32)
    p[0, 2:8, 2:8] = 0.9   # a Complete building
    p[1, 2:8, 2:8] = 0.2
    p[2, 3:9, 11:17] = 0.6  # a Foundation
    p[0, 3:9, 11:17] = 0.3
    polys = polygonize_probabilities(p, PIX, n_classes=3)
    assert len(polys) == 2
    by_x = sorted(polys, key=lambda t: t[0].bounds[0])
    assert by_x[0][3] == pytest.approx((0.9, 0.2, 0.0)) and by_x[1][3] == pytest.approx((0.3, 0.0, 0.6))
    assert by_x[0][2] == pytest.approx(0.9) and by_x[1][2] == pytest.approx(0.6)  # score: the union's
    assert all(len(t) == 3 for t in polygonize_probabilities(p[:1], PIX))  # no types: as before


def test_a_class_match_needs_the_iou_and_the_same_class():
    g = [shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10), shapely.box(40, 0, 50, 10)]
    t = make_frame(["a"] * 3, g, classes=["Complete", "Foundation", None])
    p = make_frame(["a"] * 3, g, classes=["Complete", "Complete", "Incomplete"])
    r = class_scores(t, p, classes=CLASSES)
    assert r["by_class"]["Complete"] == {"tp": 1, "fp": 1, "fn": 0, "precision": 0.5, "recall": 1.0,
                                         "f1": pytest.approx(2 / 3)}
    assert r["by_class"]["Foundation"]["fn"] == 1 and r["by_class"]["Incomplete"]["fp"] == 1
    assert r["class_mean_f1"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    whole = evaluate_frames(t, p)  # the class-agnostic figures stay as they were
    assert whole["total"]["f1"] == 1.0 and "by_class" in whole


def test_the_class_rule_defaults_missing_values_rejects_unknown_ones_and_wants_the_field():
    rule = ClassRule("condition", CLASSES, "Complete")
    rep = LabelReport(path="x.geojson", class_field="condition")
    vals, bad = rule.resolve([b'{"condition": "Foundation"}', None, b'{"condition": ""}',
                              b'{"condition": "Ruin"}', b'{"other": 1}'], 0, rep)
    assert vals == [b"Foundation", b"Complete", b"Complete", None, b"Complete"]
    assert list(bad) == [3] and "'Ruin'" in bad[3] and "condition" in bad[3]
    assert rep.defaulted == 3 and rep.unknown_classes == {"Ruin": 1}
    rep2 = LabelReport(path="x.geojson", read=2)
    rule.resolve([b'{"type": "Complete"}', b'{"name": 1}'], 0, rep2)
    with pytest.raises(InputError, match=r"x.geojson.*'condition'.*seen: name, type"):
        rule.check_seen(rep2, "x.geojson")


def _square(x):
    return [[[x, 0], [x + 10, 0], [x + 10, 10], [x, 10], [x, 0]]]


def test_label_rows_carry_their_class_and_unknown_values_are_not_loaded():
    feats = [{"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": _square(500000 + 20 * i)}}
             for i, props in enumerate([{"condition": "Incomplete"}, {}, {"condition": "Shed"}])]
    doc = {"type": "FeatureCollection", "features": feats,
           "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32737"}}}
    features, _ = parse_geojson(json.dumps(doc).encode(), "t.geojson")
    crs, _ = resolve_crs(32737, "")
    rep = LabelReport(path="t.geojson", class_field="condition")
    stream = b"".join(label_chunks(features, "t", 32737, crs, rep, path="t.geojson",
                                   classes=ClassRule("condition", CLASSES, "Complete")))
    assert stream.startswith(COPY_HEADER) and stream.endswith(COPY_TRAILER)
    pos, classes = len(COPY_HEADER), []
    while True:
        (n,) = struct.unpack_from(">h", stream, pos)
        pos += 2
        if n == -1:
            break
        assert n == len(COPY_COLUMNS) + 1
        for k in range(n):
            (size,) = struct.unpack_from(">i", stream, pos)
            if k == n - 1:
                classes.append(stream[pos + 4:pos + 4 + size].decode())
            pos += 4 + max(size, 0)
    assert classes == ["Incomplete", "Complete"] and rep.loaded == 2
    assert rep.rejected == [{"feature": 2, "reason": "condition = 'Shed' is not one of the classes "
                                                     "Complete, Incomplete, Foundation ([data] classes)"}]
    d = rep.as_dict()
    assert (d["classes"], d["defaulted"], d["unknown_classes"]) == ({"Complete": 1, "Incomplete": 1}, 1, {"Shed": 1})
    assert "class_field" not in LabelReport(path="u").as_dict()  # one class: the report as it was


def _buildings():
    g = shapely.box(0, 0, 4, 3)
    return [{"building_id": 1, "score": 0.8, "area_m2": 3.0, "geom_pix": g, "geom": g,
             "geom_4326": shapely.box(39.0, -6.8, 39.0001, -6.7999), "class": "Incomplete",
             "conf": {"Complete": 0.25, "Incomplete": 0.75, "Foundation": 0.0}}]


def test_outputs_carry_class_and_lower_case_conf_columns_after_the_standard_ones():
    f = io.StringIO()
    fo.write_spacenet_csv(f, fo.spacenet_rows("img", _buildings(), classes=CLASSES), classes=CLASSES)
    header, row = f.getvalue().splitlines()
    assert header == ",".join(fo.CSV_HEADER) + ",class,conf_complete,conf_incomplete,conf_foundation"
    assert row.endswith(",0.8,Incomplete,0.25,0.75,0.0")
    props = fo.geojson_features("img", _buildings())[0]["properties"]
    assert props["class"] == "Incomplete" and props["conf_incomplete"] == 0.75 and "conf_foundation" in props
    plain = [{k: v for k, v in b.items() if k not in ("class", "conf")} for b in _buildings()]
    assert "class" not in fo.geojson_features("img", plain)[0]["properties"]
    rgb = fo.draw_legend(np.zeros((60, 120, 3), np.uint8), [(fo.CLASS_COLORS[0], "Complete")])
    assert (rgb[0, 0] == 0).all() and (rgb[10, 10] == fo.CLASS_COLORS[0]).all()


def _fc(path, items, field):
    feats = [{"type": "Feature", "properties": ({field: c} if c else {}),
              "geometry": {"type": "Polygon", "coordinates": [[[x, 0], [x + 10, 0], [x + 10, 10], [x, 10], [x, 0]]]}}
             for x, c in items]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return str(path)


def test_footprints_evaluate_class_field(tmp_path, capsys):
    t = _fc(tmp_path / "truth.geojson", [(0, "Complete"), (20, "Foundation")], "condition")
    p = _fc(tmp_path / "pred.geojson", [(0, "Complete"), (20, "Complete")], "class")  # the pipeline's own output
    assert cli.main(["evaluate", "--truth", t, "--proposals", p, "--class-field", "condition"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["total"]["f1"] == 1.0
    assert r["by_class"]["Complete"]["fp"] == 1 and r["by_class"]["Foundation"]["fn"] == 1
    assert r["class_mean_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert cli.main(["evaluate", "--truth", t, "--proposals", p, "--class-field", "kind"]) == 2
    err = capsys.readouterr().err
    assert "truth.geojson" in err and "'kind'" in err and "condition" in err


def test_the_typed_demo_draws_conditions_on_the_plain_layout_deterministically():
    img, t, crs, bs = generate_scene(5, size=256)
    img2, t2, _, bs2, conds = generate_typed_scene(5, size=256)
    assert t == t2 and len(bs) == len(bs2) and all(a.equals(b) for a, b in zip(bs, bs2))
    assert set(conds) <= {*CONDITIONS, None} and len(conds) == len(bs)
    assert (img != img2).any()  # incomplete buildings and foundations look different
    again = generate_typed_scene(5, size=256)
    assert (again[0] == img2).all() and again[4] == conds
