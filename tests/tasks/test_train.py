"""tasks/train.py: augmentation, statistics, the input pipeline, resume after a kill."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.train import (Augment, TileCache, TileDataset, TrainParams, augment_pair, band_statistics,
                         effective_crop, inspect_items, resolve_precision)

REPO = Path(__file__).resolve().parents[2]


def write_pair(d: Path, name: str, image: np.ndarray, mask: np.ndarray, nodata=None, x0=500000.0):
    """(bands, H, W) image and mask -> GeoTIFFs with a real UTM CRS."""
    d.mkdir(parents=True, exist_ok=True)
    tr = Affine(0.5, 0, x0, 0, -0.5, 4000000)
    paths = {}
    for kind, arr, nd in (("tile", image, nodata), ("mask", mask, None)):
        p = d / f"{name}.{kind}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                           dtype=arr.dtype, crs="EPSG:32616", transform=tr, nodata=nd) as dst:
            dst.write(arr)
        paths[kind] = str(p)
    return paths


def synthetic_items(d: Path, n=4, size=64, bands=3, classes=3, seed=0, dtype="uint8"):
    """Bright rectangles (buildings) on a noisy background, with their masks."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        img = rng.integers(40, 90, (bands, size, size)).astype(dtype)
        m = np.zeros((classes, size, size), "uint8")
        for _ in range(3):
            r, c = rng.integers(2, size - 16, 2)
            h, w = rng.integers(6, 14, 2)
            img[:, r:r + h, c:c + w] = 200
            m[0, r:r + h, c:c + w] = 255
            if classes == 3:
                m[1, r:r + h, c] = m[1, r:r + h, c + w - 1] = 255
        items.append(write_pair(d, f"t{i}", img, m, x0=500000.0 + i * size))
    return items


# ---------------------------------------------------------------- augmentation and statistics


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 31), st.booleans(), st.booleans())
def test_augmentation_moves_image_and_mask_together(seed, flips, rotations):
    rng0 = np.random.default_rng(seed)
    mask = (rng0.random((16, 16, 1)) > 0.5).astype(np.uint8) * 255
    image = np.concatenate([mask.astype(np.float32), rng0.random((16, 16, 2)).astype(np.float32)], -1)
    aug = Augment(flips, rotations, brightness=0.0, contrast=0.0)
    img, msk = augment_pair(image, mask, np.random.default_rng(seed), aug)
    np.testing.assert_array_equal(img[..., 0], msk[..., 0])  # band 0 carried the mask: same geometry
    img2, msk2 = augment_pair(image, mask, np.random.default_rng(seed), aug)
    np.testing.assert_array_equal(img, img2)  # seeded: the same draw gives the same result
    if not flips and not rotations:
        np.testing.assert_array_equal(msk, mask)


def test_brightness_contrast_spare_nodata_and_masks():
    image = np.full((8, 8, 2), 100.0, np.float32)
    image[0, 0] = 0  # nodata pixel
    mask = np.zeros((8, 8, 1), np.uint8)
    aug = Augment(False, False, brightness=0.5, contrast=0.5)
    changed = False
    for seed in range(5):
        img, msk = augment_pair(image, mask, np.random.default_rng(seed), aug, mean=[80, 80], std=[10, 10],
                                nodata=0, value_range=(0, 255))
        np.testing.assert_array_equal(img[0, 0], [0, 0])
        np.testing.assert_array_equal(msk, mask)
        changed |= not np.allclose(img[1:], 100)
        assert img.min() >= 0 and img.max() <= 255
    assert changed


def test_band_statistics_match_numpy_and_skip_nodata():
    rng = np.random.default_rng(1)
    arrays = [rng.integers(1, 4000, (10, 12, 8)).astype(np.uint16) for _ in range(3)]
    arrays[0][:3] = 0  # nodata rows
    mean, std = band_statistics(arrays, nodata=0)
    valid = np.concatenate([a.reshape(-1, 8)[np.any(a.reshape(-1, 8) != 0, axis=1)] for a in arrays]).astype(float)
    np.testing.assert_allclose(mean, valid.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, valid.std(0), rtol=1e-6)
    assert band_statistics([np.full((2, 2, 1), 7.0)])[1] == [1.0]  # constant band: std 1, not 0
    with pytest.raises(ValueError, match="no valid pixels"):
        band_statistics([np.zeros((2, 2, 1))], nodata=0)


def test_effective_crop():
    assert effective_crop(256, [(512, 512), (512, 400)], 16) == 256
    assert effective_crop(0, [(512, 512), (300, 900)], 16) == 288
    with pytest.raises(ValueError, match="smaller than the network's alignment"):
        effective_crop(0, [(10, 10)], 16)


def test_params_defaults_are_the_config_defaults():
    assert TrainParams.from_config() == TrainParams()


def test_loss_schedule_phases():
    assert TrainParams(epochs=10, warmup_epochs=3, warmup_loss="bce", loss="jaccard").phases() == \
        [(0, 3, "bce"), (3, 10, "jaccard")]
    assert TrainParams(epochs=10, warmup_epochs=0, loss="bce+jaccard").phases() == [(0, 10, "bce+jaccard")]
    assert "precision" not in TrainParams().significant() and "seed" in TrainParams().significant()


def test_resolve_precision_reads_the_cpu(monkeypatch):
    import tasks.train as t

    monkeypatch.setattr(t, "gpu_devices", lambda: [])
    monkeypatch.setattr(t, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(t, "cpu_flags", lambda: {"avx2"})
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("mixed_float16") == "mixed_float16"
    monkeypatch.setattr(t, "gpu_devices", lambda: ["gpu:0"])
    monkeypatch.setattr(t, "gpu_has_bf16", lambda: False)
    assert resolve_precision("auto") == "mixed_float16"


# ---------------------------------------------------------------- the input pipeline


def test_dataset_batches_are_seeded_per_epoch_and_bounded(tmp_path):
    items = synthetic_items(tmp_path, n=3, size=48)
    for it in items:
        it.update(width=48, height=48)
    cache = TileCache(48 * 48 * 3 * 2)  # room for two decoded arrays only
    ds = TileDataset(items, batch_size=2, crop=32, training=True, seed=5, samples_per_epoch=6,
                     augment=Augment(), cache=cache)
    assert len(ds) == 3
    x, y = ds[1]
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32
    assert y.shape == (2, 32, 32, 3) and set(np.unique(y)) <= {0.0, 1.0}
    again = TileDataset(items, batch_size=2, crop=32, training=True, seed=5, samples_per_epoch=6, augment=Augment())
    np.testing.assert_array_equal(again[1][0], x)  # same seed, same epoch: same batch
    ds.on_epoch_end()
    assert not np.array_equal(ds[1][0], x)  # the next epoch draws new crops
    assert cache._bytes <= cache.max_bytes
    # footprint pixels in the mask are the bright pixels of the image (geometry kept)
    geo_only = TileDataset(items, batch_size=2, crop=32, training=True, seed=5, samples_per_epoch=6,
                           augment=Augment(brightness=0.0, contrast=0.0))
    for xb, yb in (geo_only[0], geo_only[2]):
        assert ((xb[..., 0] == 200) == (yb[..., 0] == 1)).all()


def test_validation_batches_are_centre_crops_in_order(tmp_path):
    items = synthetic_items(tmp_path, n=3, size=48)
    for it in items:
        it.update(width=48, height=48)
    ds = TileDataset(items, batch_size=2, crop=32, training=False)
    assert len(ds) == 2
    x, _ = ds[0]
    with rasterio.open(items[1]["tile"]) as src:
        ref = np.moveaxis(src.read(), 0, -1)[8:40, 8:40]
    np.testing.assert_array_equal(x[1], ref)
    assert ds[1][0].shape[0] == 1


def test_inspect_items_names_bad_files(tmp_path):
    items = synthetic_items(tmp_path / "a", n=2, size=32)
    odd = synthetic_items(tmp_path / "b", n=1, size=32, bands=1)
    with pytest.raises(ValueError, match=r"t0\.tile\.tif: 1 bands"):
        inspect_items(items + odd, "training")
    assert inspect_items(items, "training") == {"bands": 3, "dtype": "uint8", "nodata": None, "n_classes": 3}


# ---------------------------------------------------------------- training: kill and resume


_TRAIN_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {repo!r})
    import keras
    from tasks.train import train_model, TrainParams

    class DieAfterEpoch1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0 and os.environ.get("DIE") == "1":
                print("DYING", flush=True)
                os._exit(9)   # like kill -9: no cleanup, no exception handling

    class Seen(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            print("EPOCH_BEGIN", epoch + 1, flush=True)

    items = json.loads(open({items!r}).read())
    params = TrainParams(depth=2, base_filters=4, epochs=3, batch_size=2, crop_size=32, samples_per_epoch=4,
                         warmup_epochs=1, loss="jaccard", patience=0, workers=1)
    out = train_model(items[:3], items[3:], {run!r}, params, callbacks=[Seen(), DieAfterEpoch1()], verbose=0)
    print("DONE", out, flush=True)
""")


def _run(script: Path, die: bool):
    env = {**os.environ, "DIE": "1" if die else "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)


def test_killed_run_resumes_after_the_last_completed_epoch(tmp_path):
    items = synthetic_items(tmp_path / "data", n=4, size=48)
    (tmp_path / "items.json").write_text(json.dumps(items))
    run = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(_TRAIN_SCRIPT.format(repo=str(REPO), items=str(tmp_path / "items.json"), run=str(run)))

    first = _run(script, die=True)
    assert first.returncode == 9, first.stderr[-3000:]
    assert "DYING" in first.stdout and "EPOCH_BEGIN 2" not in first.stdout
    assert not (run / "model.keras").exists()
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1 and [r["epoch"] for r in state["history"]] == [1]

    second = _run(script, die=False)
    assert second.returncode == 0, second.stderr[-3000:]
    begun = [int(line.split()[1]) for line in second.stdout.splitlines() if line.startswith("EPOCH_BEGIN")]
    assert begun == [2, 3]  # continues at epoch 2, epoch 1 is not trained again
    history = (run / "history.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in history[1:]] == [1, 2, 3]
    assert history[0].startswith("epoch,loss_spec")
    assert [r.split(",")[1] for r in history[1:]] == ["bce", "jaccard", "jaccard"]  # the loss schedule
    # the final model exists once, nothing temporary is left behind
    assert sorted(p.name for p in run.glob("*.keras")) == ["model.keras"]
    assert not list(run.rglob(".tmp-*")) and not list(run.rglob(".model-*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["state.json"]
    assert (run / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "logs").rglob("events.out.tfevents*"))
    summary = json.loads((run / "model.json").read_text())
    assert summary["epochs_run"] == 3 and 1 <= summary["best_epoch"] <= 3

    third = _run(script, die=False)  # a finished run is not trained again
    assert "EPOCH_BEGIN" not in third.stdout and "DONE" in third.stdout
