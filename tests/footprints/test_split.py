"""footprints/split.py: by-image and block splits."""
import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from footprints.geo import window_bounds
from footprints.split import (
    auto_block_size,
    block_split,
    centroid_in,
    parse_block_size,
    parse_list,
    resolve_block_split,
    split_by_image,
    split_regions,
    tile_block_split,
    tile_entries,
)

DEMO = ["demo_00", "demo_01", "demo_02", "demo_03"]


def test_parse_list():
    assert parse_list(" a, b,,c ") == ["a", "b", "c"]
    assert parse_list("") == parse_list(None) == []


def test_demo_split_by_image():
    assert split_by_image(DEMO) == {"train": ["demo_00", "demo_01"], "val": ["demo_02"], "test": ["demo_03"]}
    assert split_by_image(reversed(DEMO)) == split_by_image(DEMO)  # order of the input does not matter


def test_explicit_lists_win_and_the_rest_trains():
    got = split_by_image(DEMO, val=["demo_00"], test=["demo_01"])
    assert got == {"train": ["demo_02", "demo_03"], "val": ["demo_00"], "test": ["demo_01"]}


def test_bad_lists_are_named():
    with pytest.raises(ValueError, match="test_images names 'demo_09'"):
        split_by_image(DEMO, test=["demo_09"])
    with pytest.raises(ValueError, match="both val_images and test_images"):
        split_by_image(DEMO, val=["demo_01"], test=["demo_01"])
    with pytest.raises(ValueError, match="leave no training image"):
        split_by_image(DEMO[:3], val_fraction=0.5, test_fraction=0.5)


def test_small_datasets():
    assert split_by_image(["a"]) == {"train": ["a"], "val": [], "test": []}
    assert split_by_image(["a", "b"]) == {"train": ["a"], "val": [], "test": ["b"]}
    assert split_by_image(list("abcdefghij")) == {"train": list("abcdef"), "val": ["g", "h"], "test": ["i", "j"]}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text("abcdef", min_size=1, max_size=4), min_size=1, max_size=20, unique=True),
       st.floats(0, 0.4), st.floats(0, 0.4))
def test_image_split_partitions_the_images(images, vf, tf):
    n = len(images)
    try:
        got = split_by_image(images, val_fraction=vf, test_fraction=tf)
    except ValueError as e:  # only when the rounded val and test counts (each >= 1) take every image
        assert "leave no training image" in str(e)
        assert 3 <= n and n * (vf + tf) + 2 >= n
        return
    flat = [im for s in ("train", "val", "test") for im in got[s]]
    assert sorted(flat) == sorted(images)  # every image exactly once
    assert got["train"]


def _tiles(n_cols, n_rows, size, step, x0=500000.0, y0=4000000.0, px=0.5):
    return [{"tile_id": f"{c}_{r}", "width": size, "height": size,
             "transform": list(Affine(px, 0, x0 + c * step * px, 0, -px, y0 - r * step * px))[:6]}
            for r in range(n_rows) for c in range(n_cols)]


def _gap(a, b):
    """Distance between two axis-aligned boxes (0 when they touch or overlap)."""
    dx = max(a[0] - b[2], b[0] - a[2], 0.0)
    dy = max(a[1] - b[3], b[1] - a[3], 0.0)
    return float(np.hypot(dx, dy))


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.integers(2, 8), st.sampled_from([64, 128]), st.integers(0, 63),
       st.floats(40.0, 200.0), st.floats(0.0, 20.0), st.integers(0, 5))
def test_block_split_never_lets_splits_touch(nc, nr, size, ov, block, buffer, seed):
    tiles = _tiles(nc, nr, size, size - ov)
    got = block_split(tiles, block, buffer, seed, 0.3, 0.3)
    assert sum(len(v) for v in got.values()) == len(tiles)
    boxes = {s: [window_bounds(t["transform"], t["width"], t["height"]) for t in got[s]] for s in ("train", "val", "test")}
    for s1 in boxes:
        for s2 in boxes:
            if s1 < s2:
                for a in boxes[s1]:
                    for b in boxes[s2]:
                        assert _gap(a, b) >= buffer - 1e-6, (s1, s2, a, b)
    # deterministic and independent of the order of the tiles
    again = block_split(list(reversed(tiles)), block, buffer, seed, 0.3, 0.3)
    assert {s: sorted(t["tile_id"] for t in v) for s, v in again.items()} == \
           {s: sorted(t["tile_id"] for t in v) for s, v in got.items()}


def test_block_split_keeps_tiles_inside_one_block():
    # 100 m blocks, 32 m tiles: a tile inside a block is kept, one across a block line is not
    inside = tile_block_split((510.0, 10.0, 542.0, 42.0), 100.0, 0.0, 0, 0.3, 0.3)
    assert inside in ("train", "val", "test")
    edge = tile_block_split((0.0, 0.0, 100.0, 100.0), 100.0, 0.0, 0, 0.3, 0.3)
    assert edge is not None  # a window ending exactly on a block line stays in its block
    with pytest.raises(ValueError, match="block_size"):
        tile_block_split((0, 0, 1, 1), 0.0, 0.0, 0, 0.3, 0.3)


def test_tile_entries_join_tiles_and_masks(tmp_path):
    tiles = {"tiles": [{"tile_id": "a", "path": "a.tif", "width": 8, "height": 8, "transform": (1, 0, 0, 0, -1, 8)}]}
    masks = {"tiles": [{"tile_id": "a", "path": "a.tif", "building_px": 5}]}
    (e,) = tile_entries("im", tiles, tmp_path / "t", masks, tmp_path / "m")
    assert e == {"image": "im", "tile_id": "a", "tile": str(tmp_path / "t" / "a.tif"), "mask": str(tmp_path / "m" / "a.tif"),
                 "width": 8, "height": 8, "transform": [1, 0, 0, 0, -1, 8], "building_px": 5}
    with pytest.raises(ValueError, match="no mask for tile a of image im"):
        tile_entries("im", tiles, tmp_path / "t", {"tiles": []}, tmp_path / "m")


# ---------------------------------------------------------------- block_size = auto, and empty splits


def _scene_300m(seed_x=0.0):
    # one 300 m scene at 0.5 m: 600 px, 64 px tiles with a 16 px overlap (11 x 11 tiles)
    return _tiles(11, 11, 64, 48, x0=500000.0 + seed_x) + _tiles(1, 11, 64, 48, x0=500000.0 + 536 * 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auto_block_size_gives_every_split_tiles_on_one_scene(seed):
    tiles = _scene_300m()
    # the case: 1000 m blocks put the whole scene in one split
    with pytest.raises(ValueError, match=r"\[split\] block_size = 1000 leaves the .* empty"):
        resolve_block_split(tiles, "1000", 10.0, seed, 0.2, 0.2)
    got, info = resolve_block_split(tiles, "auto", 10.0, seed, 0.2, 0.2)
    assert all(got[s] for s in ("train", "val", "test")), {s: len(v) for s, v in got.items()}
    assert info["block_size"] == "auto" and 0 < info["block_size_used"] < 300
    # the same as an explicit split at the size and origin it chose, and deterministic
    size, origin = auto_block_size(tiles, 10.0, seed, 0.2, 0.2)
    assert (size, list(origin)) == (info["block_size_used"], info["origin"])
    again = block_split(list(reversed(tiles)), size, 10.0, seed, 0.2, 0.2, origin)
    assert {k: sorted(t["tile_id"] for t in v) for k, v in again.items()} == \
           {k: sorted(t["tile_id"] for t in v) for k, v in got.items()}


def test_a_split_with_fraction_zero_may_be_empty_and_impossible_auto_is_named():
    tiles = _scene_300m()
    got, _ = resolve_block_split(tiles, "auto", 10.0, 0, 0.0, 0.3)
    assert got["train"] and got["test"] and not got["val"]
    with pytest.raises(ValueError, match=r"block_size = auto: no block size .*\[split\] buffer"):
        resolve_block_split(_tiles(2, 2, 64, 48), "auto", 50.0, 0, 0.2, 0.2)


@pytest.mark.parametrize("bad", ["0", "-5", "big", "inf"])
def test_block_size_setting_is_checked(bad):
    assert parse_block_size("auto") is None and parse_block_size(" AUTO ") is None
    assert parse_block_size("250") == 250.0
    with pytest.raises(ValueError, match=r"\[split\] block_size must be 'auto' or a size > 0"):
        parse_block_size(bad)


def test_split_regions_and_centroids():
    tiles = [dict(t, image="im") for t in _tiles(2, 1, 64, 64)]  # two 32 m tiles side by side
    regions = split_regions({"train": tiles[:1], "test": tiles[1:], "val": []})
    assert set(regions) == {"train", "test", "val"} and regions["val"] == {}
    assert regions["train"]["im"].bounds == (500000.0, 3999968.0, 500032.0, 4000000.0)
    b = [shapely.box(500010, 3999980, 500020, 3999990),   # inside the first tile
         shapely.box(500028, 3999980, 500040, 3999990),   # centroid 500034: the second tile
         shapely.Polygon()]
    assert centroid_in(b, regions["train"]["im"]).tolist() == [True, False, False]
    assert centroid_in(b, regions["test"]["im"]).tolist() == [False, True, False]
    assert centroid_in([], regions["test"]["im"]).tolist() == []
