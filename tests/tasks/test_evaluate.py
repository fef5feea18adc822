"""SpaceNet evaluation: solaris' reference numbers, file formats, bad rows, matching rules, invariants."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import box, mapping

from tasks import evaluate as ev

FIXTURES = Path(__file__).parents[2] / ".." / "shared" / "fixtures" / "spacenet"
EVAL = FIXTURES / "eval"
TRUTH = EVAL / "SN2_sample_truth.csv"
PREDS = EVAL / "SN2_sample_preds.csv"
EXPECTED_SN2 = json.loads((FIXTURES / "EXPECTED.json").read_text())[
    "eval/SN2 (SN2_sample_truth.csv vs SN2_sample_preds.csv)"]

KEYS = {"TruePos": "tp", "FalsePos": "fp", "FalseNeg": "fn",
        "Precision": "precision", "Recall": "recall", "F1Score": "f1"}


def _as_ours(ref: dict) -> dict:
    out = {ours: ref[theirs] for theirs, ours in KEYS.items()}
    for k in ("tp", "fp", "fn"):
        assert float(out[k]).is_integer()
        out[k] = int(out[k])
    return out


def assert_matches_expected(result: dict, expected: dict) -> None:
    """Exact equality (counts and floats) per image, per AOI and in total."""
    assert set(result["by_image"]) == set(expected["per_image"])
    for img, ref in expected["per_image"].items():
        assert result["by_image"][img] == _as_ours(ref), img
    assert set(result["by_aoi"]) == set(expected["per_AOI"])
    for aoi, ref in expected["per_AOI"].items():
        assert result["by_aoi"][aoi] == _as_ours(ref), aoi
    assert result["total"] == _as_ours(expected["total_all_images_summed"])


# ---------------------------------------------------------------- the reference numbers


def test_sn2_csv_reproduces_solaris_exactly():
    result = ev.evaluate_files(TRUTH, PREDS)  # SpaceNet CSV: min_area 20 by default
    assert_matches_expected(result, EXPECTED_SN2["min_area_20"])
    assert result["by_aoi"]["AOI_2_Vegas"]["f1"] == 0.8860759493670887
    assert (result["by_aoi"]["AOI_5_Khartoum"]["tp"], result["by_aoi"]["AOI_5_Khartoum"]["fp"],
            result["by_aoi"]["AOI_5_Khartoum"]["fn"]) == (52, 55, 75)
    assert "problems" not in result


def test_sn2_min_area_zero_sensitivity():
    result = ev.evaluate_files(TRUTH, PREDS, min_area=0)
    assert_matches_expected(result, EXPECTED_SN2["min_area_0 (sensitivity, same code)"])


def test_sn2_iou_by_building_matches_solaris():
    truth, _ = ev.read_spacenet_csv(TRUTH, role="truth")
    preds, _ = ev.read_spacenet_csv(PREDS)
    ref = pd.read_csv(EVAL / "SN2_sample_iou_by_building.csv")
    assert list(ref["ImageId"]) == list(truth["image_id"])
    exact = ev.iou_by_building(truth, ev.match_frames(truth, preds, iou=0.5, min_area=20, prune=False))
    assert np.abs(exact["iou_score"].to_numpy() - ref["iou_score"].to_numpy()).max() < 1e-9
    # pruning never changes the matches; per-building values above the threshold stay exact
    pruned = ev.match_frames(truth, preds, iou=0.5, min_area=20, prune=True)
    assert (pruned.truth_match == exact["matched_proposal"].to_numpy()).all()
    high = ref["iou_score"].to_numpy() > 0.5
    assert np.abs(pruned.truth_best_iou[high] - ref["iou_score"].to_numpy()[high]).max() < 1e-9


# ---------------------------------------------------------------- GeoJSON inputs


def _sn2_frames():
    truth, _ = ev.read_spacenet_csv(TRUTH, role="truth")
    preds, _ = ev.read_spacenet_csv(PREDS)
    return truth, preds


def _feature(geom, **props):
    return {"type": "Feature", "properties": props, "geometry": None if geom is None else mapping(geom)}


def _write_fc(path: Path, features) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


def test_geojson_files_give_the_same_numbers(tmp_path):
    truth, preds = _sn2_frames()
    t = _write_fc(tmp_path / "truth.geojson",
                  (_feature(g, ImageId=i) for i, g in zip(truth["image_id"], truth["geometry"])))
    p = _write_fc(tmp_path / "preds.geojson",
                  (_feature(g, ImageId=i, confidence=float(c))
                   for i, g, c in zip(preds["image_id"], preds["geometry"], preds["confidence"])))
    # GeoJSON: no area filter by default -> the min_area 0 numbers; --min-area 20 -> the SpaceNet ones
    assert_matches_expected(ev.evaluate_files(t, p), EXPECTED_SN2["min_area_0 (sensitivity, same code)"])
    assert_matches_expected(ev.evaluate_files(t, p, min_area=20), EXPECTED_SN2["min_area_20"])


def test_geojson_directories_matched_by_file_name(tmp_path):
    truth, preds = _sn2_frames()
    tdir, pdir = tmp_path / "truth", tmp_path / "preds"
    tdir.mkdir()
    pdir.mkdir()
    for img, grp in truth.groupby("image_id"):
        _write_fc(tdir / f"{img}.geojson", (_feature(g) for g in grp["geometry"] if not g.is_empty))
    for img, grp in preds.groupby("image_id"):
        _write_fc(pdir / f"{img}.geojson",
                  (_feature(g, Confidence=float(c)) for g, c in zip(grp["geometry"], grp["confidence"])
                   if not g.is_empty))
    result = ev.evaluate_files(tdir, pdir, min_area=20)
    assert_matches_expected(result, EXPECTED_SN2["min_area_20"])  # empty FeatureCollection = empty image


def test_geojson_image_id_from_property_or_stem(tmp_path):
    sq = box(0, 0, 10, 10)
    t = _write_fc(tmp_path / "scene_7.geojson", [_feature(sq), _feature(box(20, 0, 30, 10), image="other_img1")])
    frame, problems = ev.read_geojson(t, role="truth")
    assert list(frame["image_id"]) == ["scene_7", "other_img1"]
    assert list(frame["confidence"]) == [1.0, 1.0]
    assert problems == []


def test_geojson_bad_features_reported_not_fatal(tmp_path):
    p = tmp_path / "preds.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature(box(0, 0, 10, 10), confidence=0.9),
        {"type": "Feature", "properties": {}, "geometry": None},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1]]]}},
        _feature(box(0, 0, 1, 1), confidence="high"),
    ]}))
    frame, problems = ev.read_geojson(p)
    assert len(frame) == 1
    wheres = [(pr.where, pr.path) for pr in problems]
    assert wheres == [("feature 1", str(p)), ("feature 2", str(p)), ("feature 3", str(p))]
    assert "null geometry" in problems[0].message and "not a number" in problems[2].message


# ---------------------------------------------------------------- bad rows and edge cases


def _write_csv(path: Path, rows, conf=True) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ImageId", "BuildingId", "PolygonWKT_Pix"] + (["Confidence"] if conf else []))
        for r in rows:
            w.writerow(r)
    return path


SPIKE = "POLYGON ((0 0, 10 0, 10 10, 5 10, 5 12, 5 10, 0 10, 0 0))"  # invalid; buffer(0) -> the square


def test_invalid_wkt_rows_are_reported_and_repaired(tmp_path):
    assert not shapely.from_wkt(SPIKE).is_valid
    truth = _write_csv(tmp_path / "t.csv", [
        ("A_img1", 1, box(0, 0, 10, 10).wkt),
        ("A_img1", 2, box(50, 50, 60, 60).wkt),
        ("A_img1", 3, box(100, 100, 110, 110).wkt),
    ], conf=False)
    preds = _write_csv(tmp_path / "p.csv", [
        ("A_img1", 1, SPIKE, 0.9),                               # line 2: invalid, repaired -> TP
        ("A_img1", 2, "POLYGON ((50 50, 60 50, 60", 0.8),         # line 3: unparseable -> skipped
        ("A_img1", 3, box(50, 50, 60, 60).wkt, "n/a"),            # line 4: bad confidence -> skipped
        ("A_img1", 4, "LINESTRING (100 100, 110 110)", 0.7),      # line 5: no area -> ignored
        ("A_img1", 5, box(100, 100, 110, 110).wkt, 0.6),          # line 6: TP
    ])
    found: list = []
    result = ev.evaluate_files(truth, preds, min_area=0, problems=found)
    assert result["by_image"]["A_img1"] == ev.prf(2, 0, 1)
    lines = {pr.where: pr.message for pr in found}
    assert set(lines) == {"line 2", "line 3", "line 4", "line 5"}
    assert all(pr.path == str(preds) for pr in found)
    assert "repaired" in lines["line 2"] and "unparseable" in lines["line 3"]
    assert result["problems"] == [str(pr) for pr in found]
    assert f"{preds} (line 3)" in result["problems"][1]


def test_invalid_ground_truth_scores_iou_zero(tmp_path):
    truth = _write_csv(tmp_path / "t.csv", [("A_img1", 1, SPIKE)], conf=False)
    preds = _write_csv(tmp_path / "p.csv", [("A_img1", 1, box(0, 0, 10, 10).wkt, 1.0)])
    found: list = []
    result = ev.evaluate_files(truth, preds, min_area=0, problems=found)
    assert result["total"] == ev.prf(0, 1, 1)  # solaris: IoU 0 with an invalid GT polygon
    assert [pr.where for pr in found] == ["line 2"] and "IoU 0" in found[0].message


def test_empty_image_and_image_without_predictions(tmp_path):
    truth = _write_csv(tmp_path / "t.csv", [
        ("X_img1", -1, "POLYGON EMPTY"),
        ("X_img2", 1, box(0, 0, 10, 10).wkt),
        ("X_img2", 2, box(20, 0, 30, 10).wkt),
        ("X_img2", 3, box(40, 0, 50, 10).wkt),
        ("X_img3", -1, "POLYGON EMPTY"),
    ], conf=False)
    preds = _write_csv(tmp_path / "p.csv", [
        ("X_img3", 1, box(0, 0, 10, 10).wkt, 1.0),   # a proposal on an image with no buildings: FP
        ("X_img4", 1, box(0, 0, 10, 10).wkt, 1.0),   # an image only in the proposals: FP
    ])
    result = ev.evaluate_files(truth, preds)
    assert result["by_image"]["X_img1"] == ev.prf(0, 0, 0)  # counted, no FN
    assert result["by_image"]["X_img2"] == ev.prf(0, 0, 3)  # no predictions: all FN
    assert result["by_image"]["X_img3"] == ev.prf(0, 1, 0)
    assert result["by_image"]["X_img4"] == ev.prf(0, 1, 0)
    assert result["by_aoi"] == {"X": ev.prf(0, 2, 3)}
    assert result["total"] == ev.prf(0, 2, 3)


def test_header_only_proposals_count_everything_as_fn(tmp_path):
    truth = _write_csv(tmp_path / "t.csv", [("X_img2", 1, box(0, 0, 10, 10).wkt)], conf=False)
    preds = _write_csv(tmp_path / "p.csv", [])
    assert ev.evaluate_files(truth, preds)["total"] == ev.prf(0, 0, 1)


def _frames(truth_geoms, props, image="I_img1"):
    """props: list of (geometry, confidence)."""
    t = ev.make_frame([image] * len(truth_geoms), truth_geoms)
    p = ev.make_frame([image] * len(props), [g for g, _ in props], [c for _, c in props])
    return t, p


def test_min_area_filter_is_ge_for_truth_and_gt_for_proposals():
    t, p = _frames([box(0, 0, 4, 5), box(100, 0, 104, 4)], [(box(0, 0, 4, 5), 1.0), (box(200, 0, 204, 5), 1.0)])
    r = ev.evaluate_frames(t, p, min_area=20)
    # GT of area 20 kept (and matched by nothing: the identical proposal of area 20 is dropped);
    # GT of area 16 dropped; proposal of area 20 dropped: neither TP nor FP
    assert r["total"] == ev.prf(0, 0, 1)
    assert ev.evaluate_frames(t, p, min_area=0)["total"] == ev.prf(1, 1, 1)


def test_iou_threshold_is_strict():
    t, p = _frames([box(0, 0, 2, 1)], [(box(0, 0, 1, 1), 1.0)])  # IoU exactly 0.5
    assert ev.evaluate_frames(t, p, iou=0.5)["total"] == ev.prf(0, 1, 1)
    assert ev.evaluate_frames(t, p, iou=0.49)["total"] == ev.prf(1, 0, 0)


def test_greedy_by_confidence_not_best_pair_first():
    gt = box(0, 0, 10, 10)
    weak = box(0, 0, 10, 6.5)     # IoU 0.65, high confidence
    strong = box(0, 0, 10, 9.5)   # IoU 0.95, low confidence
    t, p = _frames([gt], [(strong, 0.1), (weak, 0.9)])
    m = ev.match_frames(t, p)
    assert list(m.prop_match) == [-1, 0]  # the confident proposal takes the building first
    assert m.prop_iou[1] == pytest.approx(0.65)
    assert m.truth_best_iou[0] == pytest.approx(0.65)


def test_each_proposal_takes_its_best_remaining_truth():
    a, b = box(0, 0, 10, 10), box(8, 0, 18, 10)
    t, p = _frames([a, b], [(box(7, 0, 17, 10), 0.9), (box(0, 0, 10, 10), 0.5)])
    m = ev.match_frames(t, p)
    assert list(m.prop_match) == [1, 0]  # first proposal: IoU 0.82 with b beats 0.54 with a


def test_images_never_match_across_each_other():
    sq = box(0, 0, 10, 10)
    t = ev.make_frame(["A_img1", "A_img2"], [sq, sq])
    p = ev.make_frame(["A_img2", "A_img3"], [sq, sq], [0.5, 0.9])
    r = ev.evaluate_frames(t, p)
    assert r["by_image"] == {"A_img1": ev.prf(0, 0, 1), "A_img2": ev.prf(1, 0, 0), "A_img3": ev.prf(0, 1, 0)}


def test_metres_far_from_origin_and_custom_aoi():
    # UTM-like coordinates: the per-image lanes must not lose candidates to rounding
    x0, y0 = 733601.25, 3724689.75
    tg = [box(x0 + i * 30, y0, x0 + i * 30 + 12, y0 + 9) for i in range(5)]
    t = ev.make_frame(["sceneA"] * 5 + ["sceneB"] * 5, tg + tg)
    p = ev.make_frame(["sceneA"] * 5 + ["sceneB"] * 5, tg + [shapely.affinity.translate(g, 1.0) for g in tg])
    r = ev.evaluate_frames(t, p, aoi_of=lambda img: "all")
    assert r["by_image"]["sceneA"] == ev.prf(5, 0, 0)
    assert r["by_image"]["sceneB"] == ev.prf(5, 0, 0)  # IoU 11/13 > 0.5
    assert r["by_aoi"] == {"all": ev.prf(10, 0, 0)}


def test_geodataframe_input_and_make_valid_repair():
    import geopandas as gpd

    spike = shapely.from_wkt(SPIKE)
    t = gpd.GeoDataFrame({"image_id": ["g_img1", "g_img1"]}, geometry=[box(0, 0, 10, 10), box(30, 0, 40, 10)])
    p = gpd.GeoDataFrame({"image_id": ["g_img1", "g_img1"], "confidence": [0.2, 0.9]},
                         geometry=[spike, None])
    for method in ("buffer0", "make_valid"):
        m = ev.match_frames(t, p, repair_method=method)
        assert list(m.prop_match) == [0, -1] and m.prop_iou[0] == pytest.approx(1.0)
    assert ev.evaluate_frames(t, p)["total"] == ev.prf(1, 0, 1)  # the missing geometry counts as nothing


def test_aoi_of_image_id():
    assert ev.aoi_of_image_id("AOI_2_Vegas_img3457") == "AOI_2_Vegas"
    assert ev.aoi_of_image_id("AOI_5_Khartoum_img1") == "AOI_5_Khartoum"
    assert ev.aoi_of_image_id("demo_scene") == "demo_scene"


def test_prf_zero_division():
    assert ev.prf(0, 0, 0) == {"tp": 0, "fp": 0, "fn": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert ev.prf(0, 3, 0)["precision"] == 0.0


# ---------------------------------------------------------------- errors naming the file


def test_missing_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(ev.EvaluationInputError, match="nope.csv"):
        ev.evaluate_files(missing, PREDS)


def test_csv_without_wkt_column_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,Geometry\nA_img1,POINT (1 1)\n")
    with pytest.raises(ev.EvaluationInputError, match=r"bad\.csv.*PolygonWKT_Pix"):
        ev.evaluate_files(TRUTH, bad)


def test_broken_json_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(ev.EvaluationInputError, match=r"bad\.geojson.*not valid JSON"):
        ev.evaluate_files(bad, PREDS)


def test_empty_truth_directory_is_an_error(tmp_path):
    with pytest.raises(ev.EvaluationInputError, match="no GeoJSON files"):
        ev.evaluate_files(tmp_path, PREDS)


# ---------------------------------------------------------------- report files


def test_write_report_is_atomic_and_complete(tmp_path):
    result = ev.evaluate_files(TRUTH, PREDS)
    mj, pc = tmp_path / "run" / "metrics.json", tmp_path / "run" / "per_image.csv"
    ev.write_report(result, mj, pc)
    assert json.loads(mj.read_text()) == result
    per_image = pd.read_csv(pc)
    assert list(per_image["ImageId"]) == sorted(EXPECTED_SN2["min_area_20"]["per_image"])
    assert per_image["tp"].sum() == result["total"]["tp"] == 87
    assert set(per_image["AOI"]) == {"AOI_2_Vegas", "AOI_5_Khartoum"}
    assert sorted(x.name for x in mj.parent.iterdir()) == ["metrics.json", "per_image.csv"]  # no temp left


# ---------------------------------------------------------------- properties


def _brute_force(t: pd.DataFrame, p: pd.DataFrame, iou=0.5, min_area=0.0):
    """solaris' loop, literally: all pairs, per image, confidence order, best remaining GT."""
    out = {}
    images = sorted(set(t["image_id"]) | set(p["image_id"]))
    order = np.argsort(-p["confidence"].to_numpy(), kind="stable")
    for img in images:
        gts = [g for i, g in zip(t["image_id"], t["geometry"]) if i == img and g.area >= min_area]
        remaining = list(range(len(gts)))
        tp = fp = 0
        for k in order:
            if p["image_id"].iloc[k] != img or not p["geometry"].iloc[k].area > min_area:
                continue
            pg = p["geometry"].iloc[k]
            best, bj = -1.0, None
            for j in remaining:
                if pg.intersects(gts[j]):
                    v = pg.intersection(gts[j]).area / pg.union(gts[j]).area
                    if v > best:
                        best, bj = v, j
            if bj is not None and best > iou:
                remaining.remove(bj)
                tp += 1
            else:
                fp += 1
        out[img] = (tp, fp, sum(1 for j in remaining if gts[j].area > 0))
    return out


rect = st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 12), st.integers(1, 12),
                 st.sampled_from(["S_img1", "S_img2", "T_img1"]))


def _frame_from(rects, conf=None):
    ids = [r[4] for r in rects]
    geoms = [box(x, y, x + w, y + h) for x, y, w, h, _ in rects]
    return ev.make_frame(ids, geoms, conf)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(truth=st.lists(rect, max_size=12), props=st.lists(rect, max_size=12), data=st.data())
def test_matches_brute_force_solaris_loop(truth, props, data):
    conf = data.draw(st.lists(st.floats(0, 1), min_size=len(props), max_size=len(props)))
    iou = data.draw(st.sampled_from([0.0, 0.3, 0.5, 0.75]))
    min_area = data.draw(st.sampled_from([0.0, 20.0]))
    t, p = _frame_from(truth), _frame_from(props, conf)
    r = ev.evaluate_frames(t, p, iou=iou, min_area=min_area)
    ref = _brute_force(t, p, iou=iou, min_area=min_area)
    assert {k: (v["tp"], v["fp"], v["fn"]) for k, v in r["by_image"].items()} == ref


@settings(max_examples=40, deadline=None)
@given(truth=st.lists(rect, min_size=1, max_size=15))
def test_truth_against_itself_is_perfect(truth):
    # overlapping rectangles are fine: each proposal's best remaining GT is its own copy (IoU 1)
    t = _frame_from(truth)
    r = ev.evaluate_frames(t, t.copy())
    assert r["total"]["fn"] == 0 and r["total"]["fp"] == 0
    assert r["total"]["f1"] == 1.0


@settings(max_examples=40, deadline=None)
@given(truth=st.lists(rect, max_size=12), props=st.lists(rect, min_size=1, max_size=12), seed=st.integers(0, 2**32 - 1))
def test_independent_of_proposal_order_with_distinct_confidences(truth, props, seed):
    conf = np.linspace(0.05, 0.95, len(props))
    t, p = _frame_from(truth), _frame_from(props, conf)
    perm = np.random.default_rng(seed).permutation(len(p))
    shuffled = p.iloc[perm].reset_index(drop=True)
    assert ev.evaluate_frames(t, shuffled) == ev.evaluate_frames(t, p)


@settings(max_examples=40, deadline=None)
@given(truth=st.lists(rect, max_size=12), props=st.lists(rect, max_size=12))
def test_counts_partition_the_inputs(truth, props):
    t, p = _frame_from(truth), _frame_from(props)
    r = ev.evaluate_frames(t, p, min_area=0)
    assert r["total"]["tp"] + r["total"]["fp"] == len(p)
    assert r["total"]["tp"] + r["total"]["fn"] == len(t)
    assert sum(v["tp"] for v in r["by_aoi"].values()) == r["total"]["tp"]
