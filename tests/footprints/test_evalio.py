"""Evaluation inputs and reports: SpaceNet CSV and GeoJSON readers, bad rows, errors naming the
file, the report files, and solaris' numbers from the files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import shapely
from shapely.geometry import box, mapping

from footprints import evalio as ev
from footprints.errors import InputError
from footprints.spacenet import evaluate_frames, make_frame, prf

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
    assert "unreadable geometry" in problems[1].message


def test_geojson_odd_members_reported_per_feature(tmp_path):
    """A document msgspec's typed decoder refuses (a geometry that is a string) is read
    generically: the odd feature is reported, the others kept."""
    p = tmp_path / "odd.geojson"
    p.write_text('{"type": "FeatureCollection", "features": ['
                 '{"type": "Feature", "properties": {"confidence": 0.5}, "geometry": "POLYGON"},'
                 '{"type": "Feature", "properties": {"confidence": [1]},'
                 ' "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}},'
                 '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}'
                 ']}')
    frame, problems = ev.read_geojson(p, image_id="odd_img1")
    assert list(frame["image_id"]) == ["odd_img1"] and list(frame["line"]) == [2]
    assert [pr.where for pr in problems] == ["feature 0", "feature 1"]
    assert "unreadable geometry" in problems[0].message and "not a number" in problems[1].message


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
    assert result["by_image"]["A_img1"] == prf(2, 0, 1)
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
    assert result["total"] == prf(0, 1, 1)  # solaris: IoU 0 with an invalid GT polygon
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
    assert result["by_image"]["X_img1"] == prf(0, 0, 0)  # counted, no FN
    assert result["by_image"]["X_img2"] == prf(0, 0, 3)  # no predictions: all FN
    assert result["by_image"]["X_img3"] == prf(0, 1, 0)
    assert result["by_image"]["X_img4"] == prf(0, 1, 0)
    assert result["by_aoi"] == {"X": prf(0, 2, 3)}
    assert result["total"] == prf(0, 2, 3)


def test_header_only_proposals_count_everything_as_fn(tmp_path):
    truth = _write_csv(tmp_path / "t.csv", [("X_img2", 1, box(0, 0, 10, 10).wkt)], conf=False)
    preds = _write_csv(tmp_path / "p.csv", [])
    assert ev.evaluate_files(truth, preds)["total"] == prf(0, 0, 1)



# ---------------------------------------------------------------- errors naming the file


def test_missing_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(InputError, match="nope.csv"):
        ev.evaluate_files(missing, PREDS)


def test_csv_without_wkt_column_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,Geometry\nA_img1,POINT (1 1)\n")
    with pytest.raises(InputError, match=r"bad\.csv.*PolygonWKT_Pix"):
        ev.evaluate_files(TRUTH, bad)


def test_broken_json_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(InputError, match=r"bad\.geojson.*malformed GeoJSON"):
        ev.evaluate_files(bad, PREDS)


def test_missing_or_empty_geojson_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty.geojson"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.geojson.*empty"):
        ev.read_geojson(empty, role="truth")
    with pytest.raises(InputError, match=r"absent\.geojson.*does not exist"):
        ev.read_geojson(tmp_path / "absent.geojson")


def test_empty_truth_directory_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no GeoJSON files"):
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


def test_split_block_sums_a_subset_of_images():
    t = make_frame(["A_img1", "A_img2", "B_img1"], [box(0, 0, 10, 10)] * 3)
    p = make_frame(["A_img1", "A_img2"], [box(0, 0, 10, 10), box(50, 50, 60, 60)])
    result = evaluate_frames(t, p)
    block = ev.split_block(result, ["A_img1", "A_img2", "C_img9"])
    assert block == {"images": ["A_img1", "A_img2"], **prf(1, 1, 1)}
    assert ev.split_block(result, [])["images"] == []


def test_region_blocks_score_each_split_on_its_own_blocks():
    # one image, two blocks: x < 100 train, x > 120 test, a buffer between; the proposals are
    # right in the train block only
    regions = {"train": {"im": box(0, 0, 100, 100)}, "test": {"im": box(120, 0, 220, 100)}}
    truth = [box(10, 10, 20, 20), box(60, 60, 70, 70), box(130, 10, 140, 20), box(170, 50, 180, 60),
             box(105, 10, 115, 20)]  # the last one lies in the buffer
    props = [box(10, 10, 20, 20), box(60, 60, 70, 70), box(150, 80, 160, 90), box(104, 40, 116, 50)]
    t_ids, p_ids = ["im"] * len(truth), ["im"] * len(props)
    got = ev.region_blocks((t_ids, truth), (p_ids, props, [1.0] * len(props)), regions)
    assert got["train"] == {"images": ["im"], **prf(2, 0, 0), "scored_on": "blocks"}
    assert got["test"] == {"images": ["im"], **prf(0, 1, 2), "scored_on": "blocks"}
    whole = evaluate_frames(make_frame(t_ids, truth), make_frame(p_ids, props))["total"]
    assert whole == prf(2, 2, 3)  # what both splits reported before: the whole image


# ---------------------------------------------------------------- pairing truth and proposals


def test_two_single_geojson_files_are_one_image(tmp_path):
    # issue 11: gt.geojson vs pred.geojson of one scene used to be two images, F1 = 0
    t = _write_fc(tmp_path / "gt.geojson", [_feature(box(0, 0, 10, 10)), _feature(box(20, 0, 30, 10))])
    p = _write_fc(tmp_path / "pred.geojson", [_feature(box(0, 0, 10, 10.5), confidence=0.9)])
    result = ev.evaluate_files(t, p)
    assert result["by_image"] == {"gt": prf(1, 0, 1)}
    assert result["total"] == prf(1, 0, 1)
    assert result["pairing"].startswith("two single files")


def test_two_single_csvs_without_matching_imageid_are_one_image(tmp_path):
    truth = _write_csv(tmp_path / "t.csv", [("A_img1", 1, box(0, 0, 10, 10).wkt)], conf=False)
    preds = _write_csv(tmp_path / "p.csv", [("mine", 1, box(0, 0, 10, 10).wkt, 1.0)])
    assert ev.evaluate_files(truth, preds, min_area=0)["by_image"] == {"A_img1": prf(1, 0, 0)}
    # a CSV against a GeoJSON file: also one image
    g = _write_fc(tmp_path / "pred.geojson", [_feature(box(0, 0, 10, 10))])
    assert ev.evaluate_files(truth, g, min_area=0)["total"] == prf(1, 0, 0)


def test_single_files_with_matching_ids_keep_matching_by_id(tmp_path):
    truth = _write_csv(tmp_path / "t.csv", [("A_img1", 1, box(0, 0, 10, 10).wkt),
                                             ("A_img2", 1, box(0, 0, 10, 10).wkt)], conf=False)
    preds = _write_csv(tmp_path / "p.csv", [("A_img2", 1, box(0, 0, 10, 10).wkt, 1.0)])
    r = ev.evaluate_files(truth, preds, min_area=0)
    assert r["by_image"] == {"A_img1": prf(0, 0, 1), "A_img2": prf(1, 0, 0)} and r["pairing"] == "by image id"


def test_files_of_several_images_with_nothing_in_common_are_an_error(tmp_path):
    truth = _write_csv(tmp_path / "t.csv", [("A_img1", 1, box(0, 0, 10, 10).wkt),
                                             ("A_img2", 1, box(0, 0, 10, 10).wkt)], conf=False)
    preds = _write_csv(tmp_path / "p.csv", [("B_img1", 1, box(0, 0, 10, 10).wkt, 1.0)])
    with pytest.raises(InputError, match=r"no image in common .*'A_img1', 'A_img2'.*'B_img1'"):
        ev.evaluate_files(truth, preds)


def test_directories_with_no_common_image_are_an_error_listing_names(tmp_path):
    tdir, pdir = tmp_path / "truth", tmp_path / "preds"
    tdir.mkdir()
    pdir.mkdir()
    for i in range(7):
        _write_fc(tdir / f"scene_{i}.geojson", [_feature(box(0, 0, 10, 10))])
    _write_fc(pdir / "RGB_scene_0.geojson", [_feature(box(0, 0, 10, 10))])
    with pytest.raises(InputError) as e:
        ev.evaluate_files(tdir, pdir)
    msg = str(e.value)
    assert "no image in common" in msg and "file names" in msg and "\n" not in msg
    assert "'scene_0'" in msg and "(7 in all)" in msg and "'RGB_scene_0'" in msg
    # one directory against one file: still matched by name, so also an error
    with pytest.raises(InputError, match="no image in common"):
        ev.evaluate_files(tdir, pdir / "RGB_scene_0.geojson")
    # an empty proposals directory is not an error: every building is a miss
    empty = tmp_path / "none"
    empty.mkdir()
    assert ev.evaluate_files(tdir, empty)["total"] == prf(0, 0, 7)


def test_two_label_files_of_one_stem_in_a_directory_are_an_error(tmp_path):
    _write_fc(tmp_path / "a.geojson", [_feature(box(0, 0, 10, 10))])
    _write_fc(tmp_path / "a.json", [_feature(box(0, 0, 10, 10))])
    with pytest.raises(InputError, match=r"a\.json: same image name 'a' as .*a\.geojson"):
        ev.geojson_files(tmp_path)
