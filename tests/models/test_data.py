"""models/data.py: augmentation, band statistics, crops, the tile dataset, item checks."""
import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from footprints.errors import InputError
from models.data import Augment, TileCache, TileDataset, augment_pair, band_statistics, effective_crop, inspect_items

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


# ---------------------------------------------------------------- the input pipeline


def test_dataset_batches_are_seeded_per_epoch_and_bounded(tmp_path, make_items):
    items = make_items(tmp_path, n=3, size=48)
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


def test_validation_batches_are_centre_crops_in_order(tmp_path, make_items):
    items = make_items(tmp_path, n=3, size=48)
    for it in items:
        it.update(width=48, height=48)
    ds = TileDataset(items, batch_size=2, crop=32, training=False)
    assert len(ds) == 2
    x, _ = ds[0]
    with rasterio.open(items[1]["tile"]) as src:
        ref = np.moveaxis(src.read(), 0, -1)[8:40, 8:40]
    np.testing.assert_array_equal(x[1], ref)
    assert ds[1][0].shape[0] == 1


def test_endless_batches_run_epoch_after_epoch_in_order(tmp_path, make_items):
    """What fit reads on the TensorFlow backend: each epoch's batches in order, the next epoch's
    crops after them (from the dataset's starting epoch: a resumed run goes on where it
    stopped), read ahead by worker threads; the validation set repeats itself."""
    from models.data import endless_batches, tf_input

    items = make_items(tmp_path, n=3, size=48)
    for it in items:
        it.update(width=48, height=48)
    ds = TileDataset(items, batch_size=2, crop=32, training=True, seed=5, samples_per_epoch=6,
                     augment=Augment(), initial_epoch=2, workers=2, max_queue_size=3)
    got = [b for _, b in zip(range(7), endless_batches(ds))]
    want = [ds.batch(i, e) for e, i in [(2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (3, 2), (4, 0)]]
    for (gx, gy), (wx, wy) in zip(got, want):
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)
    assert not np.array_equal(got[0][0], got[3][0])  # epoch 3 drew other crops
    assert ds.epoch == 2  # reading ahead leaves the dataset's own epoch alone
    val = TileDataset(items, batch_size=2, crop=32, training=False)
    shapes = [x.shape[0] for _, (x, _) in zip(range(5), endless_batches(val))]
    assert shapes == [2, 1, 2, 1, 2]
    # the tf.data pipeline yields the same arrays
    for (tx, ty), (wx, wy) in zip(tf_input(ds).take(4).as_numpy_iterator(), want):
        np.testing.assert_array_equal(tx, wx)
        np.testing.assert_array_equal(ty, wy)


def test_inspect_items_names_bad_files(tmp_path, make_items):
    items = make_items(tmp_path / "a", n=2, size=32)
    odd = make_items(tmp_path / "b", n=1, size=32, bands=1)
    with pytest.raises(InputError, match=r"t0\.tile\.tif: 1 bands"):
        inspect_items(items + odd, "training")
    assert inspect_items(items, "training") == {"bands": 3, "dtype": "uint8", "nodata": None, "n_classes": 3}
