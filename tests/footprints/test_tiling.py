"""footprints/tiling.py: the tile grid (windows cover the raster, cores partition it), the tile
writer and the index GeoJSON."""
import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import shape

from footprints.errors import InputError
from footprints.tiling import axis_starts, tile_grid, tile_records, write_index_geojson, write_tiles

# ---------------------------------------------------------------- grid properties

grid_args = st.integers(1, 300).flatmap(
    lambda ts: st.tuples(st.integers(1, 1200), st.integers(1, 1200), st.just(ts), st.integers(0, ts - 1)))


@settings(max_examples=60, deadline=None)
@given(grid_args)
def test_windows_cover_raster_exactly_and_cores_partition(args):
    w, h, ts, ov = args
    specs = tile_grid(w, h, ts, ov)
    cover = np.zeros((h, w), np.int32)
    core = np.zeros((h, w), np.int32)
    for s in specs:
        assert 0 <= s.col_off and s.col_off + s.width <= w  # never outside the raster
        assert 0 <= s.row_off and s.row_off + s.height <= h
        assert s.width == min(ts, w) and s.height == min(ts, h)
        cover[s.row_off:s.row_off + s.height, s.col_off:s.col_off + s.width] += 1
        core[s.core_row_off:s.core_row_off + s.core_height, s.core_col_off:s.core_col_off + s.core_width] += 1
        # the core lies inside the window
        assert s.col_off <= s.core_col_off and s.core_col_off + s.core_width <= s.col_off + s.width
        assert s.row_off <= s.core_row_off and s.core_row_off + s.core_height <= s.row_off + s.height
    assert cover.min() >= 1, "every pixel lies in at least one tile"
    assert (core == 1).all(), "every pixel lies in exactly one tile's core"
    # windows cover the raster exactly: union of windows == raster extent
    assert min(s.col_off for s in specs) == 0 and max(s.col_off + s.width for s in specs) == w
    assert min(s.row_off for s in specs) == 0 and max(s.row_off + s.height for s in specs) == h


@settings(max_examples=60, deadline=None)
@given(grid_args)
def test_overlaps_are_as_configured(args):
    n, _, ts, ov = args
    starts = axis_starts(n, ts, ov)
    if n <= ts:
        assert starts == [0]
        return
    overlaps = [a + ts - b for a, b in zip(starts[:-1], starts[1:])]
    assert all(o == ov for o in overlaps[:-1]), "regular tiles overlap exactly as configured"
    assert ov <= overlaps[-1] < ts, "the shifted last tile overlaps at least as configured"
    assert starts[-1] + ts == n


def test_bad_grid_arguments():
    with pytest.raises(ValueError, match="overlap"):
        axis_starts(100, 10, 10)
    with pytest.raises(ValueError, match="tile size"):
        axis_starts(100, 0, 0)


# ---------------------------------------------------------------- writing tiles and the index


T = Affine(0.5, 0, 500000, 0, -0.5, 4000000)


def test_write_tiles_and_index_geojson(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (3, 70, 90)).astype("uint8")
    src = tmp_path / "img.tif"
    with rasterio.open(src, "w", driver="GTiff", width=90, height=70, count=3, dtype="uint8", crs="EPSG:32616",
                       transform=T) as dst:
        dst.write(arr)
    specs = tile_grid(90, 70, 32, 8)
    out = tmp_path / "tiles"
    out.mkdir()
    assert write_tiles(src, out, specs, compress="deflate") == len(specs)
    records = tile_records(specs, T)
    for r in records:
        with rasterio.open(out / r["path"]) as tile:
            assert tile.transform == Affine(*r["transform"]) and tile.crs.to_epsg() == 32616
            np.testing.assert_array_equal(tile.read(), arr[:, r["row_off"]:r["row_off"] + r["height"],
                                                            r["col_off"]:r["col_off"] + r["width"]])
    write_index_geojson(out / "index.geojson", records, "EPSG:32616")
    fc = json.loads((out / "index.geojson").read_text())
    assert [f["properties"]["tile_id"] for f in fc["features"]] == [s.tile_id for s in specs]
    for f in fc["features"]:
        g = shape(f["geometry"])
        assert g.exterior.is_ccw and -90 < g.centroid.x < -84 and 30 < g.centroid.y < 40  # lon/lat, RFC 7946


# ---------------------------------------------------------------- bad inputs (issue 11)


def _geotiff(path, arr, nodata=None):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype.name, crs="EPSG:32616", nodata=nodata,
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
        dst.write(arr)


@pytest.mark.parametrize("dtype,nodata", [("uint8", 0), ("float32", float("nan"))])
def test_all_nodata_raster_is_an_error_naming_it(tmp_path, dtype, nodata):
    src = tmp_path / "blank.tif"
    _geotiff(src, np.full((3, 40, 50), nodata, dtype), nodata=nodata)
    out = tmp_path / "tiles"
    out.mkdir()
    with pytest.raises(InputError, match=rf"^{src}: every pixel is nodata \((0|nan)\)"):
        write_tiles(src, out, tile_grid(50, 40, 32, 8))
    arr = np.full((3, 40, 50), nodata, dtype)
    arr[:, 39, 49] = 7  # one real pixel in the last tile: valid
    _geotiff(src, arr, nodata=nodata)
    assert write_tiles(src, out, tile_grid(50, 40, 32, 8), workers=2) == 4


def test_raster_smaller_than_a_tile_gives_one_shrunken_tile(tmp_path):
    src = tmp_path / "small.tif"
    _geotiff(src, np.arange(3 * 20 * 30, dtype=np.uint8).reshape(3, 20, 30))
    specs = tile_grid(30, 20, 512, 64)
    assert len(specs) == 1 and (specs[0].width, specs[0].height) == (30, 20)
    assert (specs[0].core_width, specs[0].core_height) == (30, 20)
    out = tmp_path / "tiles"
    out.mkdir()
    assert write_tiles(src, out, specs) == 1
    with rasterio.open(out / f"{specs[0].tile_id}.tif") as t:
        assert (t.width, t.height, t.count) == (30, 20, 3)


def test_unreadable_pixels_are_an_error_naming_the_raster(tmp_path):
    src = tmp_path / "cut.tif"
    _geotiff(src, np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 3 // 4])  # the header survives, some strips do not
    out = tmp_path / "tiles"
    out.mkdir()
    with pytest.raises(InputError, match=rf"^{src}: corrupt: cannot read pixels"):
        write_tiles(src, out, tile_grid(64, 64, 32, 0))
