"""tasks/tune.py: TuneThreshold on the val split, `auto` in [polygonize], and the run key."""
import json
from pathlib import Path

import luigi
import pytest

from tasks import keys
from tasks.polygonize import Polygonize
from tasks.tune import TuneThreshold, polygon_values


def _small_demo(luigi_config, scenes=3):
    for section, option, value in [("data", "demo_scenes", scenes), ("data", "demo_size", 256),
                                   ("tiling", "tile_size", 128), ("tiling", "overlap", 32),
                                   ("model", "name", "oracle")]:
        luigi_config(section, option, value)


def test_auto_keys_the_run_by_the_tuning_not_by_values(workdir, luigi_config):
    _small_demo(luigi_config)
    params = keys.run_params()
    assert params["polygonize"]["threshold"] == "auto" and params["tune"] == keys.tune_key()
    auto = keys.run_key()
    luigi_config("tune", "min_areas_m2", "5,10")  # another grid: another tuning, another run
    assert keys.run_key() != auto and keys.tuning_json().name.startswith("tuning-")
    luigi_config("polygonize", "threshold", "0.5")
    luigi_config("polygonize", "min_area_m2", "5.0")
    params = keys.run_params()
    assert params["polygonize"]["threshold"] == 0.5 and params["polygonize"]["min_area_m2"] == 5.0
    assert "tune" not in params  # numbers key the run as they always did
    assert "tuning" not in Polygonize(image="demo_00").requires()


def test_test_time_augmentation_keys_predictions_tuning_and_run(workdir, luigi_config):
    """[predict] tta changes the probabilities: its predictions, its tuning file and its run
    are its own, so a tuning of plain predictions is never reused for averaged ones."""
    _small_demo(luigi_config)
    luigi_config("model", "name", "unet")
    default = keys.tuning_json()
    assert default.name == "tuning.json"  # the default tta 8: where `footprints serve` reads it
    luigi_config("predict", "tta", "1")
    plain = (keys.prediction_key(), keys.tune_key(), keys.tuning_json(), keys.run_key())
    assert plain[0].endswith("-ctxauto") and plain[2].name.startswith("tuning-")
    for n in ("2", "8"):
        luigi_config("predict", "tta", n)
        tta = (keys.prediction_key(), keys.tune_key(), keys.tuning_json(), keys.run_key())
        assert tta[0] == plain[0] + f"-tta{n}"
        assert all(a != b for a, b in zip(plain, tta))
        assert tta[2].parent == plain[2].parent  # beside the same model


def test_one_fixed_value_tunes_the_other(workdir, luigi_config):
    _small_demo(luigi_config)
    assert keys.tuning_json().name == "tuning.json"  # the defaults: beside the model, as `footprints serve` reads it
    assert keys.tune_grid()["thresholds"] == [round(0.3 + 0.05 * i, 10) for i in range(11)]
    luigi_config("polygonize", "threshold", "0.6")
    assert keys.tune_grid() == {"thresholds": [0.6], "min_areas_m2": [2.0, 5.0, 10.0, 20.0]}
    assert "tuning" in Polygonize(image="demo_00").requires()
    for bad in ("1.5", "high"):
        luigi_config("polygonize", "threshold", bad)
        with pytest.raises(ValueError, match=r"\[polygonize\] threshold"):
            keys.run_key()
    luigi_config("polygonize", "threshold", "auto")
    luigi_config("tune", "thresholds", "0.8:0.2:0.1")
    with pytest.raises(ValueError, match=r"\[tune\] thresholds"):
        keys.tune_grid()


def test_tune_threshold_on_the_oracle(pg, workdir, luigi_config):
    """The oracle's probabilities are 0 or 1: every grid point scores F1 = 1 on the val image, and
    the tie goes to the point nearest the untuned defaults."""
    _small_demo(luigi_config)
    task = TuneThreshold()
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    out = Path(task.output().path)
    assert out.name == "tuning.json" and out.with_suffix(".png").stat().st_size > 0
    t = json.loads(out.read_text())
    assert t["val_images"] == ["demo_01"] and not t["fallback"] and t["key"] == keys.tune_key()
    assert len(t["results"]) == 11 * 4 and {r["f1"] for r in t["results"]} == {1.0}
    assert (t["threshold"], t["min_area_m2"], t["f1"]) == (0.5, 5.0, 1.0)
    assert "44 grid points" in t["why"]
    assert polygon_values() == (0.5, 5.0)
    # the tuning reused PredictImage's probabilities: only the val image was predicted
    assert [p.name for p in (workdir / "predictions").rglob("*.tif")] == ["demo_01.tif"]


def test_typed_tuning_finds_buildings_of_every_class(pg, workdir, luigi_config):
    """The typed demo (class channels Complete, Incomplete, Foundation, then boundary and contact):
    TuneThreshold finds buildings on the union of the class channels, as Polygonize does, so the
    oracle scores F1 = 1 everywhere (with the first class taken as the footprint it would miss
    the other classes' buildings and read two class channels as boundary and contact)."""
    _small_demo(luigi_config)
    luigi_config("data", "demo_typed", "true")
    luigi_config("tune", "thresholds", "0.5")
    luigi_config("tune", "min_areas_m2", "5")
    task = TuneThreshold()
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    t = json.loads(Path(task.output().path).read_text())
    assert t["val_images"] == ["demo_01"] and not t["fallback"]
    (r,) = t["results"]
    assert (r["f1"], r["fp"], r["fn"]) == (1.0, 0, 0) and r["tp"] > 0, r


def test_no_val_split_falls_back_with_a_warning(pg, workdir, luigi_config):
    _small_demo(luigi_config, scenes=2)  # one train, one test image
    task = TuneThreshold()
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    t = json.loads(Path(task.output().path).read_text())
    assert t["fallback"] and (t["threshold"], t["min_area_m2"]) == (0.5, 5.0) and t["val_images"] == []
    assert polygon_values() == (0.5, 5.0)


def test_a_block_split_tunes_on_the_val_blocks(pg, workdir, luigi_config, fixtures_dir):
    for s, o, v in [("data", "images", fixtures_dir / "imagery" / "sample_geotiff.tif"),
                    ("data", "labels", fixtures_dir / "imagery" / "geotiff_labels.geojson"),
                    ("model", "name", "oracle"), ("tiling", "tile_size", 64), ("tiling", "overlap", 16),
                    ("split", "method", "block"), ("split", "buffer", 4), ("split", "test_fraction", 0),
                    ("split", "val_fraction", 0.4), ("tune", "thresholds", "0.5"),
                    ("tune", "min_areas_m2", "0,5")]:
        luigi_config(s, o, v)
    task = TuneThreshold()
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    t = json.loads(Path(task.output().path).read_text())
    assert t["scored_on"] == "blocks" and t["val_images"] == ["sample_geotiff"]
    assert Path(task.output().path).name.startswith("tuning-")  # not the default grid
    assert [(r["min_area_m2"], r["f1"]) for r in t["results"]] == [(0.0, 1.0), (5.0, 1.0)]
    assert 0 < t["results"][0]["tp"] < 100  # the val blocks' buildings only
