"""footprints.names: SpaceNet image ids and label matching."""
from pathlib import Path

from footprints.names import match_label


def test_match_label_by_stem_and_spacenet_id():
    files = [Path("/l/scene_a.geojson"), Path("/l/buildings_AOI_2_Vegas_img12.geojson")]
    assert match_label("scene_a", files) == files[0]
    assert match_label("RGB-PanSharpen_AOI_2_Vegas_img12", files) == files[1]
    assert match_label("RGB-PanSharpen_AOI_2_Vegas_img1", files) is None
    assert match_label("other", files) is None


# ---------------------------------------------------------------- image series (SpaceNet 7)

import pytest  # noqa: E402

from footprints.errors import InputError  # noqa: E402
from footprints.names import SN7_SERIES_PATTERN, group_series, series_key, series_regex, sn7_image_name  # noqa: E402

SN7 = "global_monthly_2018_01_mosaic_L15-0331E-1257N_1327_3160_13"


def test_sn7_names_give_aoi_and_date():
    assert series_key(SN7, SN7_SERIES_PATTERN) == ("L15-0331E-1257N_1327_3160_13", "2018_01")
    assert sn7_image_name("L15-0331E-1257N_1327_3160_13", "2018_01") == SN7
    assert series_key("demo_00", SN7_SERIES_PATTERN) is None
    assert series_key(SN7, "") is None


def test_sn7_label_files_match_their_images():
    files = [Path(f"/l/{SN7}_Buildings.geojson"), Path("/l/global_monthly_2018_02_mosaic_X_Buildings.geojson")]
    assert match_label(SN7, files) == files[0]
    assert match_label("global_monthly_2018_02_mosaic_X", files) == files[1]
    assert match_label("global_monthly_2018_03_mosaic_X", files) is None


def test_group_series_sorts_dates_and_refuses_two_images_of_one_date():
    images = [sn7_image_name(a, d) for a in ("B", "A") for d in ("2019_01", "2018_12", "2018_02")] + ["other"]
    groups = group_series(images, SN7_SERIES_PATTERN)
    assert list(groups) == ["A", "B"]
    assert list(groups["A"]) == ["2018_02", "2018_12", "2019_01"]
    assert groups["B"]["2018_12"] == sn7_image_name("B", "2018_12")
    with pytest.raises(InputError, match="one image per AOI and date"):
        group_series(["x_aoi1_20200101", "y_aoi1_20200101"], r"_(?P<aoi>aoi\d+)_(?P<date>\d{8})$")
    assert group_series(["x_aoi1_20200101", "x_aoi1_20200201"], r"_(?P<aoi>aoi\d+)_(?P<date>\d{8})$") == {
        "aoi1": {"20200101": "x_aoi1_20200101", "20200201": "x_aoi1_20200201"}}


def test_a_bad_series_pattern_is_named():
    with pytest.raises(InputError, match="lacks the named group"):
        series_regex(r"(?P<aoi>.+)")
    with pytest.raises(InputError, match="not a regular expression"):
        series_regex(r"(?P<aoi>.+")
    assert series_regex("") is None
