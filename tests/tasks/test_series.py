"""Image series in the task layer: grouping the configured images (SpaceNet 7 layout), the split,
the keys, and TrackBuildings / WriteOutputs / Evaluate on hand-made buildings in PostGIS."""
import json

import pytest

from footprints.errors import InputError
from footprints.names import sn7_image_name
from tasks import keys
from tasks.sources import aoi_of, demo_dir, is_series, label_path, list_images, series
from tasks.split import split_images


def _sn7(tmp_path, aois=("L15-0331E-1257N_1327_3160_13", "L15-0357E-1223N_1429_3296_13"),
         dates=("2018_01", "2018_02", "2018_03")):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for a in aois:
        for d in dates:
            name = sn7_image_name(a, d)
            (tmp_path / "images" / f"{name}.tif").write_bytes(b"x")
            (tmp_path / "labels" / f"{name}_Buildings.geojson").write_text("{}")
    return tmp_path


def test_a_spacenet7_layout_is_a_series(tmp_path, luigi_config):
    d = _sn7(tmp_path)
    luigi_config("data", "images", str(d / "images"))
    luigi_config("data", "labels", str(d / "labels"))
    groups = series()
    assert list(groups) == ["L15-0331E-1257N_1327_3160_13", "L15-0357E-1223N_1429_3296_13"]
    assert list(groups["L15-0331E-1257N_1327_3160_13"]) == ["2018_01", "2018_02", "2018_03"]
    first = groups["L15-0331E-1257N_1327_3160_13"]["2018_01"]
    assert label_path(first).name == f"{first}_Buildings.geojson"
    assert is_series() and aoi_of(first) == "L15-0331E-1257N_1327_3160_13"
    assert series([first]) == {"L15-0331E-1257N_1327_3160_13": {"2018_01": first}}
    # with 2 AOIs: one trains, the other is tested, each with all its dates
    out = split_images()
    assert {aoi_of(i) for i in out["train"]} == {"L15-0331E-1257N_1327_3160_13"} and len(out["train"]) == 3
    assert {aoi_of(i) for i in out["test"]} == {"L15-0357E-1223N_1429_3296_13"} and len(out["test"]) == 3
    # an empty pattern: no series
    luigi_config("data", "series_pattern", "")
    assert series() == {} and not is_series() and aoi_of(first) is None


def test_a_dataset_half_series_is_an_error_naming_both_kinds(tmp_path, luigi_config):
    d = _sn7(tmp_path, aois=("A",), dates=("2018_01",))
    (d / "images" / "plain.tif").write_bytes(b"x")
    luigi_config("data", "images", str(d / "images"))
    with pytest.raises(InputError, match=r"plain.tif: does not match \[data\] series_pattern"):
        series()


def test_the_temporal_demo_is_a_series_and_the_plain_demo_is_not(luigi_config, workdir):
    assert not is_series() and list_images()[0] == "demo_00"
    plain_split = keys.split_key(list_images())
    assert keys.outputs_dir().name == keys.run_key()
    luigi_config("data", "demo_dates", "3")
    luigi_config("data", "demo_scenes", "2")
    assert demo_dir().name.endswith("_d3")
    assert list_images()[:2] == ["global_monthly_2018_01_mosaic_demo_00", "global_monthly_2018_01_mosaic_demo_01"]
    assert list(series()) == ["demo_00", "demo_01"]
    assert keys.split_key(list_images()) != plain_split
    assert keys.outputs_dir().name == f"{keys.run_key()}_greedy_iou0.25"
    luigi_config("track", "method", "hungarian")
    assert keys.outputs_dir().name.endswith("_hungarian_iou0.25")
    assert keys.run_key() == keys.run_key()  # [track] never keys the buildings


def test_new_options_at_their_defaults_leave_every_key_as_it_was(luigi_config):
    """[data] demo_dates / series_pattern at their defaults and [track] are not in the keys, so the
    directories of existing (single-date) workspaces stay valid."""
    params = keys.run_params()
    assert "track" not in params
    assert "demo_dates" not in params["data"] and "series_pattern" not in params["data"]
    before = keys.run_key()
    luigi_config("track", "min_iou", "0.5")
    assert keys.run_key() == before
    luigi_config("data", "demo_dates", "2")
    assert keys.run_key() != before and keys.run_params()["data"]["demo_dates"] == 2
    assert json.dumps(keys.split_params(["a"]))  # still serialisable
