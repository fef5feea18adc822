"""tasks/predict.py: tile plans, the mosaic writer, seamless stitching, the oracle, the real chip."""
import functools
import json
from pathlib import Path

import keras
import luigi
import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

import models
from tasks.predict import (MosaicWriter, Predict, PredictImage, context_windows, output_profile, parse_context,
                           plan_tile, predict_tiles, predict_whole, to_uint8, window_tiles)
from tasks.tiling import axis_cores, axis_starts


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


# ---------------------------------------------------------------- pure parts


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


def test_parse_context():
    assert parse_context("auto") == "auto" and parse_context(" 64 ") == 64 and parse_context(0) == 0
    with pytest.raises(ValueError, match="context"):
        parse_context("-3")
    with pytest.raises(ValueError, match="context"):
        parse_context("wide")


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
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        got, stats = _tiled(Path(d), "ctx", img, fn, tiles, align, pad)
    assert stats["misaligned"] == 0
    assert np.abs(got - whole).max() <= 1e-5


@functools.lru_cache(maxsize=None)
def _net2():
    return _net(2, seed=3)  # one model for all hypothesis examples (no retracing)


# ---------------------------------------------------------------- the tasks on the real SpaceNet chip


def _chip(luigi_config, fixtures_dir, tile_size=256, overlap=64, kind="footprint"):
    luigi_config("data", "images", str(fixtures_dir / "imagery" / "sample_geotiff.tif"))
    luigi_config("data", "labels", str(fixtures_dir / "imagery" / "geotiff_labels.geojson"))
    luigi_config("tiling", "tile_size", tile_size)
    luigi_config("tiling", "overlap", overlap)
    luigi_config("masks", "kind", kind)


def test_oracle_reproduces_the_reference_mask(pg, workdir, luigi_config, fixtures_dir):
    _chip(luigi_config, fixtures_dir, tile_size=256, overlap=64)
    luigi_config("model", "name", "oracle")
    task = PredictImage(image="sample_geotiff")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    out = Path(task.output().path)
    assert out.parent.name.startswith("oracle-ts256_ov64") and out.name == "sample_geotiff.tif"
    with rasterio.open(out) as src, rasterio.open(fixtures_dir / "masks" / "sample_fp_mask_from_geojson.tif") as ref, \
            rasterio.open(fixtures_dir / "imagery" / "sample_geotiff.tif") as img:
        assert (src.count, src.dtypes[0], src.crs, src.transform) == (1, "uint8", img.crs, img.transform)
        assert src.descriptions == ("footprint",)
        np.testing.assert_array_equal(src.read(1), ref.read(1))  # every tile core stitched in place


def test_real_uint16_chip_trains_and_predicts_end_to_end(pg, workdir, luigi_config, fixtures_dir):
    from tasks.train import TrainModel

    _chip(luigi_config, fixtures_dir, tile_size=256, overlap=64)
    for k, v in dict(depth=2, base_filters=4, epochs=2, batch_size=2, crop_size=64, samples_per_epoch=4,
                     workers=1, patience=0).items():
        luigi_config("train", k, v)
    task = PredictImage(image="sample_geotiff")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    model_path = Path(TrainModel().output().path)
    run = model_path.parent
    assert model_path.is_file() and (run / "history.csv").is_file() and (run / "training_curve.png").is_file()
    info = models.model_info(models.load_model(model_path))
    assert info["arch"]["input_bands"] == 1 and info["data"] == {"dtype": "uint16", "nodata": 0.0}
    assert info["mean"][0] > 255  # statistics of the uint16 pixels, nodata excluded
    summary = json.loads((run / "model.json").read_text())
    n_tiles = len(json.loads((workdir / "tiles" / "sample_geotiff" / "ts256_ov64" / "index.json").read_text())["tiles"])
    assert summary["epochs_run"] == 2 and summary["train_tiles"] == n_tiles == 25 and summary["val_tiles"] == 0
    assert summary["iou"] is not None  # one image: no validation split, selection on training IoU
    src_path = fixtures_dir / "imagery" / "sample_geotiff.tif"
    out = Path(task.output().path)
    assert out.parent.name == f"{run.name}-ctxauto"
    with rasterio.open(out) as p, rasterio.open(src_path) as s:
        assert (p.width, p.height, p.crs, p.transform) == (s.width, s.height, s.crs, s.transform)
        assert p.count == 1 and p.dtypes[0] == "uint8" and p.profile["tiled"]
        prob, img = p.read(1), s.read(1)
    assert prob.std() > 0  # a real prediction, not a constant
    assert (prob[img == 0] == 0).all()  # nodata pixels get probability 0

    # the inference-only entry on the raw image file gives the same probabilities
    adhoc = Predict(model_file=str(model_path), image_path=str(src_path), output_path=str(workdir / "adhoc.tif"))
    assert luigi.build([adhoc], local_scheduler=True, log_level="WARNING")
    np.testing.assert_array_equal(_read(workdir / "adhoc.tif")[..., 0], prob)


def test_predict_names_the_file_when_bands_do_not_match(tmp_path, workdir):
    net = models.build_unet(3, 1, depth=2, base_filters=4, seed=0)
    model_path = models.save_model_atomic(net, tmp_path / "m.keras")
    img = tmp_path / "one_band.tif"
    with rasterio.open(img, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8", crs="EPSG:32616",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))
    task = Predict(model_file=str(model_path), image_path=str(img))
    with pytest.raises(ValueError, match=r"one_band\.tif: the image has 1 bands, the model was trained on 3"):
        task.run()
