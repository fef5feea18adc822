"""`footprints evaluate` as a command: JSON on stdout, files, exit codes, messages."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from footprints import cli

REPO = Path(__file__).parents[2]
FIXTURES = REPO / ".." / "shared" / "fixtures" / "spacenet"
TRUTH = FIXTURES / "eval" / "SN2_sample_truth.csv"
PREDS = FIXTURES / "eval" / "SN2_sample_preds.csv"
EXPECTED = json.loads((FIXTURES / "EXPECTED.json").read_text())[
    "eval/SN2 (SN2_sample_truth.csv vs SN2_sample_preds.csv)"]


def _footprints() -> list[str]:
    script = Path(sys.executable).parent / "footprints"
    assert script.exists(), (f"console script {script} missing: run "
                             f"`{sys.executable} -m pip install --no-deps -e .` in {REPO}")
    return [str(script)]


def test_console_script_reproduces_expected(tmp_path):
    out = tmp_path / "metrics.json"
    proc = subprocess.run(_footprints() + ["evaluate", "--truth", str(TRUTH), "--proposals", str(PREDS),
                                           "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"total", "by_aoi", "by_image", "pairing", "min_area"}
    assert result["pairing"] == "by image id" and result["min_area"] == 20.0  # SpaceNet CSV truth: 20 px²
    ref = EXPECTED["min_area_20"]
    for aoi, r in ref["per_AOI"].items():
        got = result["by_aoi"][aoi]
        assert (got["tp"], got["fp"], got["fn"]) == (r["TruePos"], r["FalsePos"], r["FalseNeg"])
        assert (got["precision"], got["recall"], got["f1"]) == (r["Precision"], r["Recall"], r["F1Score"])
    for img, r in ref["per_image"].items():
        got = result["by_image"][img]
        assert (got["tp"], got["fp"], got["fn"], got["f1"]) == (r["TruePos"], r["FalsePos"], r["FalseNeg"], r["F1Score"])
    tot = ref["total_all_images_summed"]
    assert (result["total"]["tp"], result["total"]["fp"], result["total"]["fn"]) == (87, 57, 82)
    assert result["total"]["f1"] == tot["F1Score"]
    assert json.loads(out.read_text()) == result


def test_console_script_missing_input_exits_2_naming_the_file(tmp_path):
    missing = tmp_path / "absent_preds.csv"
    proc = subprocess.run(_footprints() + ["evaluate", "--truth", str(TRUTH), "--proposals", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "absent_preds.csv" in proc.stderr and "no such file" in proc.stderr
    assert proc.stdout == ""


def test_main_min_area_and_iou_options(capsys):
    assert cli.main(["evaluate", "--truth", str(TRUTH), "--proposals", str(PREDS), "--min-area", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["by_aoi"]["AOI_5_Khartoum"]["fn"] == EXPECTED["min_area_0 (sensitivity, same code)"][
        "per_AOI"]["AOI_5_Khartoum"]["FalseNeg"] == 77
    assert cli.main(["evaluate", "--truth", str(TRUTH), "--proposals", str(PREDS), "--iou", "0.3"]) == 0
    looser = json.loads(capsys.readouterr().out)
    assert looser["total"]["tp"] >= 87  # a lower threshold never loses matches here
    assert looser["total"]["tp"] + looser["total"]["fp"] == 87 + 57


def test_main_per_image_csv(tmp_path, capsys):
    pc = tmp_path / "per_image.csv"
    assert cli.main(["evaluate", "--truth", str(TRUTH), "--proposals", str(PREDS), "--per-image-csv", str(pc)]) == 0
    capsys.readouterr()
    df = pd.read_csv(pc)
    assert len(df) == 6 and df["fn"].sum() == 82


def test_main_malformed_csv_exits_2(tmp_path, capsys):
    bad = tmp_path / "preds.csv"
    bad.write_text("image,wkt\nx,POLYGON EMPTY\n")
    assert cli.main(["evaluate", "--truth", str(TRUTH), "--proposals", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "footprints evaluate: error:" in err and str(bad) in err and "PolygonWKT_Pix" in err


def test_main_bad_iou_exits_2(capsys):
    assert cli.main(["evaluate", "--truth", str(TRUTH), "--proposals", str(PREDS), "--iou", "1.5"]) == 2
    assert "IoU threshold" in capsys.readouterr().err


def test_main_reports_bad_rows_on_stderr_and_carries_on(tmp_path, capsys):
    preds = tmp_path / "preds.csv"
    lines = PREDS.read_text().splitlines()
    lines.insert(3, 'AOI_2_Vegas_img5979,99,"POLYGON ((1 2, 3",5')  # becomes line 4
    preds.write_text("\n".join(lines) + "\n")
    assert cli.main(["evaluate", "--truth", str(TRUTH), "--proposals", str(preds)]) == 0
    cap = capsys.readouterr()
    result = json.loads(cap.out)
    assert (result["total"]["tp"], result["total"]["fp"], result["total"]["fn"]) == (87, 57, 82)
    assert f"{preds} (line 4): unparseable WKT" in cap.err
    assert result["problems"] and "line 4" in result["problems"][0]


def test_usage_errors_exit_2(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--truth", str(TRUTH)])
    assert e.value.code == 2
    assert "--proposals" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2


def test_parser_lists_evaluate_and_stays_open_for_more():
    parser = cli.build_parser()
    assert "evaluate" in parser.format_help()
    assert cli._add_evaluate in cli.SUBCOMMANDS


def test_evaluate_two_single_geojson_files_scores_one_image(tmp_path, capsys):
    def fc(path, boxes):
        path.write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {}, "geometry": {
                "type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}}
            for x0, y0, x1, y1 in boxes]}))
        return str(path)

    t = fc(tmp_path / "gt.geojson", [(0, 0, 10, 10), (20, 0, 30, 10)])
    p = fc(tmp_path / "pred.geojson", [(0, 0, 10, 10), (20, 0, 30, 10)])
    assert cli.main(["evaluate", "--truth", t, "--proposals", p]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"]["f1"] == 1.0 and list(out["by_image"]) == ["gt"]


def test_evaluate_directories_with_nothing_in_common_exit_2(tmp_path, capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    empty = '{"type": "FeatureCollection", "features": []}'
    (tmp_path / "t" / "a.geojson").write_text(empty)
    (tmp_path / "p" / "b.geojson").write_text(empty)
    assert cli.main(["evaluate", "--truth", str(tmp_path / "t"), "--proposals", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "no image in common" in err and "'a'" in err and "'b'" in err
