"""footprints/stitch.py: tile plans, the mosaic writer, uint8 probabilities, stitching."""
import tempfile
from dataclasses import asdict

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from footprints.stitch import MosaicWriter, output_profile, plan_tile, predict_tiles, to_uint8
from footprints.tiling import axis_cores, axis_starts, tile_grid


def _open_out(path, width, height, bands, dtype="float32"):
    prof = output_profile(width, height, bands, "EPSG:32616", Affine(0.5, 0, 500000, 0, -0.5, 4000000), "none", dtype)
    return rasterio.open(path, "w", **prof)


def test_plan_tile_crops_off_grid_tiles_onto_the_pooling_grid():
    # a shifted last tile at 90 (image 170 wide, tiles 80): cropped by 2 px to 92, core kept
    t = {"col_off": 90, "row_off": 0, "width": 80, "height": 80, "core_col_off": 117, "core_row_off": 0,
         "core_width": 53, "core_height": 56}
    p = plan_tile(t, 4)
    assert (p.in_col, p.in_row, p.core_col, p.core_row, p.aligned) == (2, 0, 25, 0, True)
    # a core that starts within the crop: the tile stays as it is, flagged
    t2 = {**t, "core_col_off": 91}
    assert plan_tile(t2, 4).in_col == 0 and not plan_tile(t2, 4).aligned
    assert plan_tile(t, 1) == plan_tile({**t}, 1) and plan_tile(t, 1).in_col == 0


def test_to_uint8_rounds_and_clips():
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 0.5, 1.0, 1.2, -0.1, 0.999])), [0, 128, 255, 255, 0, 255])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 90), st.integers(1, 90), st.integers(4, 40), st.data())
def test_mosaic_writer_assembles_any_core_partition(width, height, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    block = data.draw(st.sampled_from([1, 7, 16, 256]))
    xs, ys = axis_starts(width, size, overlap), axis_starts(height, size, overlap)
    cores = [(r, c) for r in axis_cores(ys, size, height) for c in axis_cores(xs, size, width)]
    rng = np.random.default_rng(width * 1000 + height)
    full = rng.integers(0, 256, (height, width, 2)).astype(np.uint8)

    class Sink:  # records every strip written
        def __init__(self):
            self.width, self.height, self.count, self.dtypes = width, height, 2, ["uint8"]
            self.out = np.zeros((height, width, 2), np.uint8)
            self.writes = []

        def write(self, arr, window):
            r0, n = int(window.row_off), int(window.height)
            self.out[r0:r0 + n] = np.moveaxis(arr, 0, -1)
            self.writes.append((r0, n))

    sink = Sink()
    w = MosaicWriter(sink, block_rows=block)
    for (r, h), (c, wd) in cores:
        w.add(r, c, full[r:r + h, c:c + wd])
    w.close()
    np.testing.assert_array_equal(sink.out, full)
    # strips end on block rows (except the last one) and never overlap
    ends = [r0 + n for r0, n in sink.writes]
    assert all(e % block == 0 for e in ends[:-1]) and ends[-1] == height
    assert [r0 for r0, _ in sink.writes] == [0] + ends[:-1]
    with pytest.raises(ValueError, match="already written"):
        w.add(0, 0, full[:1, :1])


def test_mosaic_writer_rejects_overlapping_and_missing_cores(tmp_path):
    with _open_out(tmp_path / "a.tif", 8, 4, 1, "uint8") as dst:
        w = MosaicWriter(dst, block_rows=256)
        w.add(0, 0, np.zeros((4, 5, 1), np.uint8))
        with pytest.raises(ValueError, match="overlaps another core"):
            w.add(0, 4, np.zeros((4, 4, 1), np.uint8))
    with _open_out(tmp_path / "b.tif", 8, 4, 1, "uint8") as dst:
        w = MosaicWriter(dst, block_rows=256)
        w.add(0, 0, np.zeros((4, 5, 1), np.uint8))
        with pytest.raises(ValueError, match="incomplete"):
            w.close()


@settings(max_examples=10, deadline=None)
@given(st.integers(20, 90), st.integers(20, 90), st.sampled_from([16, 24, 40]), st.integers(0, 15), st.sampled_from([1, 4]))
def test_predict_tiles_stitches_an_identity_model_exactly(width, height, size, overlap, align):
    """Any ``predict_fn`` (here: the input itself, like the oracle) comes back pixel for pixel."""
    rng = np.random.default_rng(width * 100 + height)
    img = rng.integers(0, 256, (height, width, 2)).astype(np.uint8)
    tiles = [asdict(s) for s in tile_grid(width, height, size, overlap)]
    read = lambda t: img[t["row_off"]:t["row_off"] + t["height"], t["col_off"]:t["col_off"] + t["width"]]  # noqa: E731
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/p.tif"
        with _open_out(path, width, height, 2, "uint8") as dst:
            stats = predict_tiles(tiles, read, lambda x: x / np.float32(255), dst, batch_size=3, align=align)
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(np.moveaxis(src.read(), 0, -1), img)
    assert stats["tiles"] == len(tiles)


def test_threaded_keeps_order_with_several_workers_and_raises_errors():
    import time as _time

    from footprints.stitch import _threaded

    def slow(i):
        _time.sleep(0.001 * ((7 * i) % 5))  # finish out of order
        return i * i

    assert list(_threaded(slow, range(40), depth=3, workers=3)) == [i * i for i in range(40)]

    def boom(i):
        if i == 5:
            raise ValueError("tile 5 is broken")
        return i

    got = []
    try:
        for v in _threaded(boom, range(20), workers=2):
            got.append(v)
    except ValueError as e:
        assert "tile 5" in str(e)
    else:
        raise AssertionError("the worker's error was not raised")
    assert got == [0, 1, 2, 3, 4]




def test_uint8_batches_padded_with_whole_grey_levels_and_planar_quantizing():
    from footprints.stitch import fill_values, pad_to, to_uint8_planar

    np.testing.assert_array_equal(fill_values([99.6, -3.0, 300.2], np.uint8), [100, 0, 255])
    np.testing.assert_array_equal(fill_values([99.6, 1.5], np.float32), np.float32([99.6, 1.5]))
    a = np.full((2, 3, 2), 7, np.uint8)
    p = pad_to(a, 4, 5, [120.4, 9.5])
    assert p.dtype == np.uint8 and (p[:2, :3] == 7).all() and (p[2:, :, 0] == 120).all() and (p[:2, 3:, 1] == 10).all()
    prob = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32) * 1.4 - 0.2
    out = np.zeros((3, 9, 6), np.uint8)[:, 2:7]  # a strided slice, like a mosaic strip's
    to_uint8_planar(prob, out=out)
    np.testing.assert_array_equal(out, np.moveaxis(to_uint8(prob), -1, 0))


def test_predict_tiles_hands_the_network_the_image_dtype_and_stitches_from_threads(tmp_path):
    """uint8 imagery reaches ``predict_fn`` as uint8 (padding included); cores quantized by
    several stitching threads into a band-interleaved file come back exactly."""
    width, height = 300, 290
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    tiles = [asdict(s) for s in tile_grid(width, height, 64, 16)]
    read = lambda t: img[t["row_off"]:t["row_off"] + t["height"], t["col_off"]:t["col_off"] + t["width"]]  # noqa: E731
    seen = set()

    def fn(x):
        seen.add(x.dtype)
        return x / np.float32(255)

    path = tmp_path / "p.tif"
    prof = output_profile(width, height, 3, "EPSG:32616", Affine(0.5, 0, 500000, 0, -0.5, 4000000))
    assert prof["interleave"] == "band" and prof["compress"] == "zstd" and prof["predictor"] == 1
    with rasterio.open(path, "w", **prof) as dst:
        predict_tiles(tiles, read, fn, dst, batch_size=5, align=16, pad_values=[127.6] * 3, readers=4)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(np.moveaxis(src.read(), 0, -1), img)
    assert seen == {np.dtype(np.uint8)}
