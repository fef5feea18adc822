"""footprints/split.py, image series: an AOI's dates always go to one split."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from footprints.names import SN7_SERIES_PATTERN, series_key, sn7_image_name
from footprints.split import SPLITS, split_by_group


def _aoi(image):
    return series_key(image, SN7_SERIES_PATTERN)[0]


def _series(aois, dates):
    return [sn7_image_name(f"aoi{a}", f"2018_{d + 1:02d}") for a in range(aois) for d in range(dates)]


def test_the_demo_series_splits_by_aoi():
    images = [sn7_image_name(f"demo_{i:02d}", d) for i in range(4) for d in ("2018_01", "2018_02", "2018_03")]
    out = split_by_group(images, _aoi)
    assert {s: sorted({_aoi(i) for i in out[s]}) for s in SPLITS} == {
        "train": ["demo_00", "demo_01"], "val": ["demo_02"], "test": ["demo_03"]}
    assert all(len(out[s]) == 3 * len({_aoi(i) for i in out[s]}) for s in SPLITS)


def test_explicit_lists_name_aois_or_images_and_take_the_whole_series():
    images = _series(3, 2)
    out = split_by_group(images, _aoi, test=["aoi2"], val=[sn7_image_name("aoi1", "2018_02")])
    assert out["test"] == _series(3, 2)[4:] and out["val"] == _series(3, 2)[2:4] and out["train"] == _series(3, 2)[:2]
    with pytest.raises(ValueError, match="AOI 'aoi1' would be in two splits"):
        split_by_group(images, _aoi, train=[sn7_image_name("aoi1", "2018_01")], test=[sn7_image_name("aoi1", "2018_02")])
    with pytest.raises(ValueError, match="neither a labelled image nor an AOI"):
        split_by_group(images, _aoi, test=["aoi9"])


@given(st.integers(1, 9), st.integers(1, 5), st.sampled_from([0.0, 0.2, 0.3]), st.sampled_from([0.0, 0.2, 0.34]))
def test_no_aoi_is_in_two_splits(aois, dates, vf, tf):
    images = _series(aois, dates)
    out = split_by_group(images, _aoi, val_fraction=vf, test_fraction=tf)
    assert sorted(i for s in SPLITS for i in out[s]) == sorted(images)
    owner = {}
    for s in SPLITS:
        for im in out[s]:
            assert owner.setdefault(_aoi(im), s) == s
