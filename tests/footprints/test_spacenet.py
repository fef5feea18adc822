"""The SpaceNet metric on frames: solaris' reference numbers, matching rules, invariants."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from footprints import evalio
from footprints import spacenet as sn
from footprints.names import aoi_of_image_id

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


def _sn2_frames():
    truth, _ = evalio.read_spacenet_csv(TRUTH, role="truth")
    preds, _ = evalio.read_spacenet_csv(PREDS)
    return truth, preds


def test_sn2_frames_reproduce_solaris_exactly():
    truth, preds = _sn2_frames()
    assert_matches_expected(sn.evaluate_frames(truth, preds, min_area=sn.SPACENET_MIN_AREA), EXPECTED_SN2["min_area_20"])
    assert_matches_expected(sn.evaluate_frames(truth, preds, min_area=0),
                            EXPECTED_SN2["min_area_0 (sensitivity, same code)"])


def test_sn2_iou_by_building_matches_solaris():
    truth, preds = _sn2_frames()
    ref = pd.read_csv(EVAL / "SN2_sample_iou_by_building.csv")
    assert list(ref["ImageId"]) == list(truth["image_id"])
    exact = sn.iou_by_building(truth, sn.match_frames(truth, preds, iou=0.5, min_area=20, prune=False))
    assert np.abs(exact["iou_score"].to_numpy() - ref["iou_score"].to_numpy()).max() < 1e-9
    # pruning never changes the matches; per-building values above the threshold stay exact
    pruned = sn.match_frames(truth, preds, iou=0.5, min_area=20, prune=True)
    assert (pruned.truth_match == exact["matched_proposal"].to_numpy()).all()
    high = ref["iou_score"].to_numpy() > 0.5
    assert np.abs(pruned.truth_best_iou[high] - ref["iou_score"].to_numpy()[high]).max() < 1e-9



# ---------------------------------------------------------------- matching rules


SPIKE = "POLYGON ((0 0, 10 0, 10 10, 5 10, 5 12, 5 10, 0 10, 0 0))"  # invalid; buffer(0) -> the square


def _frames(truth_geoms, props, image="I_img1"):
    """props: list of (geometry, confidence)."""
    t = sn.make_frame([image] * len(truth_geoms), truth_geoms)
    p = sn.make_frame([image] * len(props), [g for g, _ in props], [c for _, c in props])
    return t, p


def test_min_area_filter_is_ge_for_truth_and_gt_for_proposals():
    t, p = _frames([box(0, 0, 4, 5), box(100, 0, 104, 4)], [(box(0, 0, 4, 5), 1.0), (box(200, 0, 204, 5), 1.0)])
    r = sn.evaluate_frames(t, p, min_area=20)
    # GT of area 20 kept (and matched by nothing: the identical proposal of area 20 is dropped);
    # GT of area 16 dropped; proposal of area 20 dropped: neither TP nor FP
    assert r["total"] == sn.prf(0, 0, 1)
    assert sn.evaluate_frames(t, p, min_area=0)["total"] == sn.prf(1, 1, 1)


def test_iou_threshold_is_strict():
    t, p = _frames([box(0, 0, 2, 1)], [(box(0, 0, 1, 1), 1.0)])  # IoU exactly 0.5
    assert sn.evaluate_frames(t, p, iou=0.5)["total"] == sn.prf(0, 1, 1)
    assert sn.evaluate_frames(t, p, iou=0.49)["total"] == sn.prf(1, 0, 0)


def test_greedy_by_confidence_not_best_pair_first():
    gt = box(0, 0, 10, 10)
    weak = box(0, 0, 10, 6.5)     # IoU 0.65, high confidence
    strong = box(0, 0, 10, 9.5)   # IoU 0.95, low confidence
    t, p = _frames([gt], [(strong, 0.1), (weak, 0.9)])
    m = sn.match_frames(t, p)
    assert list(m.prop_match) == [-1, 0]  # the confident proposal takes the building first
    assert m.prop_iou[1] == pytest.approx(0.65)
    assert m.truth_best_iou[0] == pytest.approx(0.65)


def test_each_proposal_takes_its_best_remaining_truth():
    a, b = box(0, 0, 10, 10), box(8, 0, 18, 10)
    t, p = _frames([a, b], [(box(7, 0, 17, 10), 0.9), (box(0, 0, 10, 10), 0.5)])
    m = sn.match_frames(t, p)
    assert list(m.prop_match) == [1, 0]  # first proposal: IoU 0.82 with b beats 0.54 with a


def test_images_never_match_across_each_other():
    sq = box(0, 0, 10, 10)
    t = sn.make_frame(["A_img1", "A_img2"], [sq, sq])
    p = sn.make_frame(["A_img2", "A_img3"], [sq, sq], [0.5, 0.9])
    r = sn.evaluate_frames(t, p)
    assert r["by_image"] == {"A_img1": sn.prf(0, 0, 1), "A_img2": sn.prf(1, 0, 0), "A_img3": sn.prf(0, 1, 0)}


def test_metres_far_from_origin_and_custom_aoi():
    # UTM-like coordinates: the per-image lanes must not lose candidates to rounding
    x0, y0 = 733601.25, 3724689.75
    tg = [box(x0 + i * 30, y0, x0 + i * 30 + 12, y0 + 9) for i in range(5)]
    t = sn.make_frame(["sceneA"] * 5 + ["sceneB"] * 5, tg + tg)
    p = sn.make_frame(["sceneA"] * 5 + ["sceneB"] * 5, tg + [shapely.affinity.translate(g, 1.0) for g in tg])
    r = sn.evaluate_frames(t, p, aoi_of=lambda img: "all")
    assert r["by_image"]["sceneA"] == sn.prf(5, 0, 0)
    assert r["by_image"]["sceneB"] == sn.prf(5, 0, 0)  # IoU 11/13 > 0.5
    assert r["by_aoi"] == {"all": sn.prf(10, 0, 0)}


def test_geodataframe_input_and_make_valid_repair():
    import geopandas as gpd

    spike = shapely.from_wkt(SPIKE)
    t = gpd.GeoDataFrame({"image_id": ["g_img1", "g_img1"]}, geometry=[box(0, 0, 10, 10), box(30, 0, 40, 10)])
    p = gpd.GeoDataFrame({"image_id": ["g_img1", "g_img1"], "confidence": [0.2, 0.9]},
                         geometry=[spike, None])
    for method in ("buffer0", "make_valid"):
        m = sn.match_frames(t, p, repair_method=method)
        assert list(m.prop_match) == [0, -1] and m.prop_iou[0] == pytest.approx(1.0)
    assert sn.evaluate_frames(t, p)["total"] == sn.prf(1, 0, 1)  # the missing geometry counts as nothing


def test_aoi_of_image_id():
    assert sn.aoi_of_image_id("AOI_2_Vegas_img3457") == "AOI_2_Vegas"
    assert sn.aoi_of_image_id("AOI_5_Khartoum_img1") == "AOI_5_Khartoum"
    assert sn.aoi_of_image_id("demo_scene") == "demo_scene"
    # the metric's own rule (no project imports) agrees with the one in footprints.names
    for img in ("AOI_2_Vegas_img3457", "demo_scene", "x_img", "a_img12b", "a_img1_img2", "_img3", "img4", ""):
        assert sn.aoi_of_image_id(img) == aoi_of_image_id(img), img


def test_prf_zero_division():
    assert sn.prf(0, 0, 0) == {"tp": 0, "fp": 0, "fn": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert sn.prf(0, 3, 0)["precision"] == 0.0



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
    return sn.make_frame(ids, geoms, conf)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(truth=st.lists(rect, max_size=12), props=st.lists(rect, max_size=12), data=st.data())
def test_matches_brute_force_solaris_loop(truth, props, data):
    conf = data.draw(st.lists(st.floats(0, 1), min_size=len(props), max_size=len(props)))
    iou = data.draw(st.sampled_from([0.0, 0.3, 0.5, 0.75]))
    min_area = data.draw(st.sampled_from([0.0, 20.0]))
    t, p = _frame_from(truth), _frame_from(props, conf)
    r = sn.evaluate_frames(t, p, iou=iou, min_area=min_area)
    ref = _brute_force(t, p, iou=iou, min_area=min_area)
    assert {k: (v["tp"], v["fp"], v["fn"]) for k, v in r["by_image"].items()} == ref


@settings(max_examples=40, deadline=None)
@given(truth=st.lists(rect, min_size=1, max_size=15))
def test_truth_against_itself_is_perfect(truth):
    # overlapping rectangles are fine: each proposal's best remaining GT is its own copy (IoU 1)
    t = _frame_from(truth)
    r = sn.evaluate_frames(t, t.copy())
    assert r["total"]["fn"] == 0 and r["total"]["fp"] == 0
    assert r["total"]["f1"] == 1.0


@settings(max_examples=40, deadline=None)
@given(truth=st.lists(rect, max_size=12), props=st.lists(rect, min_size=1, max_size=12), seed=st.integers(0, 2**32 - 1))
def test_independent_of_proposal_order_with_distinct_confidences(truth, props, seed):
    conf = np.linspace(0.05, 0.95, len(props))
    t, p = _frame_from(truth), _frame_from(props, conf)
    perm = np.random.default_rng(seed).permutation(len(p))
    shuffled = p.iloc[perm].reset_index(drop=True)
    assert sn.evaluate_frames(t, shuffled) == sn.evaluate_frames(t, p)


@settings(max_examples=40, deadline=None)
@given(truth=st.lists(rect, max_size=12), props=st.lists(rect, max_size=12))
def test_counts_partition_the_inputs(truth, props):
    t, p = _frame_from(truth), _frame_from(props)
    r = sn.evaluate_frames(t, p, min_area=0)
    assert r["total"]["tp"] + r["total"]["fp"] == len(p)
    assert r["total"]["tp"] + r["total"]["fn"] == len(t)
    assert sum(v["tp"] for v in r["by_aoi"].values()) == r["total"]["tp"]
