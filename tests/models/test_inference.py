"""models/inference.py with footprints/stitch.py: stitched tiles equal the whole-image prediction."""
import functools
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

import models
from footprints.stitch import context_windows, output_profile, predict_tiles
from models.inference import predict_whole, window_tiles


@pytest.fixture(autouse=True)
def _clear_session():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def _open_out(path, width, height, bands, dtype="float32"):
    prof = output_profile(width, height, bands, "EPSG:32616", Affine(0.5, 0, 500000, 0, -0.5, 4000000), "none", dtype)
    return rasterio.open(path, "w", **prof)


def _read(path):
    with rasterio.open(path) as src:
        return np.moveaxis(src.read(), 0, -1)


# ---------------------------------------------------------------- seams


def _scene(h, w, seed=0):
    """A smooth random field with a few bright rectangles (3 bands)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 20, (h, w, 3)).astype(np.float32)
    for _ in range(8):
        r, c = rng.integers(0, h - 20), rng.integers(0, w - 20)
        img[r:r + rng.integers(6, 20), c:c + rng.integers(6, 20)] += 90
    return img


def _tiled(tmp_path, name, img, fn, tiles, align, pad):
    h, w = img.shape[:2]
    read = lambda t: img[t["row_off"]:t["row_off"] + t["height"], t["col_off"]:t["col_off"] + t["width"]]  # noqa
    with _open_out(tmp_path / f"{name}.tif", w, h, 3) as dst:
        stats = predict_tiles(tiles, read, fn, dst, batch_size=3, align=align, pad_values=pad)
    return _read(tmp_path / f"{name}.tif"), stats


def _net(depth, seed=11):
    net = models.inference_model(models.build_unet(3, 3, depth=depth, base_filters=4, seed=seed,
                                                   mean=[100] * 3, std=[30] * 3), "float32")
    net.jit_compile = False
    return lambda x: np.asarray(net.predict_on_batch(x))


@pytest.mark.parametrize("depth,tile,overlap", [(2, 80, 48), (4, 256, 224)])
def test_overlapping_tiles_equal_the_whole_image_and_plain_tiles_do_not(tmp_path, depth, tile, overlap, capsys):
    """[predict] context = 0 (the tile files as they are) with an overlap of 2x the receptive
    margin: every kept core sees all of its context."""
    margin = models.receptive_margin(depth)
    assert overlap // 2 >= margin
    h, w = (150, 170) if depth == 2 else (300, 330)
    img = _scene(h, w)
    fn, align, pad = _net(depth), 2 ** depth, [100.0] * 3
    whole = predict_whole(fn, img, align, pad)
    tiled, stats = _tiled(tmp_path, "ov", img, fn, window_tiles(w, h, tile, overlap), align, pad)
    assert stats["tiles"] > 4 and stats["misaligned"] == 0
    r = margin  # the interior: away from the image border
    diff = np.abs(tiled - whole)[r:-r, r:-r]
    assert diff.max() <= 1e-3, diff.max()
    # the same tiles without overlap: visible seams
    plain, _ = _tiled(tmp_path, "plain", img, fn, window_tiles(w, h, tile - overlap, 0), align, pad)
    seam = np.abs(plain - whole)[r:-r, r:-r]
    with capsys.disabled():
        print(f"\n[seams] depth {depth}: max |tiled - whole| in the interior: overlap {overlap}: {diff.max():.1e}; "
              f"no overlap: {seam.max():.3f} ({int((seam > 1e-3).sum())} values > 1e-3)")
    assert seam.max() > 1e-3


@settings(max_examples=6, deadline=None)
@given(st.integers(33, 140), st.integers(33, 140), st.sampled_from([32, 48, 64]), st.integers(0, 31))
def test_context_windows_make_any_tiling_exact(w, h, tile, overlap):
    """[predict] context = receptive margin: equal to the whole image everywhere, borders too,
    for any tiling (even without overlap)."""
    depth = 2
    fn, align, pad = _net2(), 4, [100.0] * 3
    img = _scene(h, w, seed=w * h)
    whole = predict_whole(fn, img, align, pad)
    tiles = context_windows(window_tiles(w, h, tile, overlap), w, h, models.receptive_margin(depth), align)
    assert len({(t["width"], t["height"]) for t in tiles if t["col_off"] + t["width"] < w
                and t["row_off"] + t["height"] < h}) <= 1  # one window size away from the border
    assert all(t["col_off"] % align == 0 and t["row_off"] % align == 0 for t in tiles)
    with tempfile.TemporaryDirectory() as d:
        got, stats = _tiled(Path(d), "ctx", img, fn, tiles, align, pad)
    assert stats["misaligned"] == 0
    assert np.abs(got - whole).max() <= 1e-5


@functools.lru_cache(maxsize=None)
def _net2():
    return _net(2, seed=3)  # one model for all hypothesis examples (no retracing)


@settings(max_examples=6, deadline=None)
@given(st.integers(33, 140), st.integers(33, 140), st.sampled_from([32, 48]), st.integers(0, 15),
       st.sampled_from([64, 96, 160]))
def test_grouped_context_windows_are_exact_and_fewer(w, h, tile, overlap, window):
    """[predict] window: neighbouring cores predicted together in one window give the same
    mosaic as the whole image, with fewer (larger) windows."""
    from models.inference import plan_windows

    depth = 2
    fn, align, pad = _net2(), 4, [100.0] * 3
    img = _scene(h, w, seed=w * h + 1)
    whole = predict_whole(fn, img, align, pad)
    tiles = window_tiles(w, h, tile, overlap)
    margin = models.receptive_margin(depth)
    wins, batch = plan_windows(tiles, w, h, margin, align, window, 8)
    per_tile, _ = plan_windows(tiles, w, h, margin, align, 0, 8)
    assert len(wins) <= len(per_tile) and batch >= 1
    covered = sum(t["core_width"] * t["core_height"] for t in wins)
    assert covered == w * h  # the merged cores still partition the image
    with tempfile.TemporaryDirectory() as d:
        got, stats = _tiled(Path(d), "grp", img, fn, wins, align, pad)
    assert stats["misaligned"] == 0
    assert np.abs(got - whole).max() <= 1e-5


def _assert_context_windows_equal_the_whole_image(tmp_path, name, base, net, seed):
    """``net`` (``base`` or a wrapper of it) on context windows planned from ``base``'s
    arch_margin/arch_alignment, stitched: equal to the whole-image prediction. Returns the
    image and that prediction."""
    from models.inference import plan_windows
    from models.unet import arch_alignment, arch_margin, model_info

    net.jit_compile = False
    fn = lambda x: np.asarray(net.predict_on_batch(x))  # noqa: E731
    arch = model_info(base)["arch"]
    align, margin = arch_alignment(arch), arch_margin(arch)
    h, w = 150, 170
    img = _scene(h, w, seed=seed)
    whole = predict_whole(fn, img, align, [100.0] * 3)
    wins, _ = plan_windows(window_tiles(w, h, 64, 8), w, h, margin, align, 96, 8)
    got, stats = _tiled(tmp_path, name, img, fn, wins, align, [100.0] * 3)
    assert stats["misaligned"] == 0
    assert np.abs(got - whole).max() <= 1e-5
    return img, whole, align


def _small_unet(**kw):
    return models.inference_model(models.build_unet(3, 3, depth=2, base_filters=4, seed=2, **kw,
                                                    mean=[100] * 3, std=[30] * 3), "float32")


@pytest.mark.parametrize("low_res", [{"input_scale": 2}, {"fold": 2}])
def test_half_resolution_model_tiles_equal_the_whole_image(tmp_path, low_res):
    """[train] input_scale = 2 or fold = 2: context windows from arch_margin/arch_alignment stay exact."""
    net = _small_unet(**low_res)
    _assert_context_windows_equal_the_whole_image(tmp_path, "half", net, net, seed=9)


def test_test_time_augmented_tiles_equal_the_whole_image(tmp_path):
    """[predict] tta = 8 on a folded model: every symmetry maps a context window onto one with
    the same margins and grid, so the stitched mosaic is still the whole image's prediction."""
    from models.unet import test_time_augmented

    base = _small_unet(fold=2)
    img, whole, align = _assert_context_windows_equal_the_whole_image(
        tmp_path, "tta", base, test_time_augmented(base, 8), seed=11)
    plain = predict_whole(lambda x: np.asarray(base.predict_on_batch(x)), img, align, [100.0] * 3)
    assert np.abs(whole - plain).max() > 1e-3  # the average is not the plain prediction


def test_auto_inference_precision_keeps_a_float32_model_in_float32_on_cpus(monkeypatch):
    """[predict] precision = auto: a float32-trained model runs in float32 on an AMX CPU (bf16
    would move its probabilities), a bf16-trained one in bf16; on a GPU both get the GPU's policy;
    an explicit precision is taken as asked."""
    import models.hardware as hw
    import models.inference as inf

    monkeypatch.setattr(hw, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    for mod in (hw, inf):
        monkeypatch.setattr(mod, "gpu_devices", lambda: [])
    assert inf.predict_precision("auto", {"precision": "float32"}) == "float32"
    assert inf.predict_precision("auto", {"precision": "mixed_bfloat16"}) == "mixed_bfloat16"
    assert inf.predict_precision("auto", {}) == "mixed_bfloat16"  # a model without the record
    assert inf.predict_precision("mixed_bfloat16", {"precision": "float32"}) == "mixed_bfloat16"
    for mod in (hw, inf):
        monkeypatch.setattr(mod, "gpu_devices", lambda: ["gpu:0"])
    monkeypatch.setattr(hw, "gpu_has_bf16", lambda: True)
    assert inf.predict_precision("auto", {"precision": "float32"}) == "mixed_bfloat16"
