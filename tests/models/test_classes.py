"""Building types in the models: a head channel per class (named), the masks' band names, and the
rare-class sampling of the training crops."""
import json

import keras
import numpy as np
import pytest
import rasterio
from affine import Affine

from models.data import TileDataset, inspect_items
from models.io import load_model
from models.losses import make_loss
from models.params import TrainParams
from models.training import train_model
from models.unet import build_unet, model_info, rebuild

NAMES = ["Complete", "Incomplete", "Foundation", "boundary", "contact"]


def _write(path, arr):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype, crs="EPSG:32737", transform=Affine(0.5, 0, 500000, 0, -0.5, 9000000)) as dst:
        dst.write(arr)


def _typed_items(d, n=6, size=64):
    """Tiles whose masks have 3 class bands + boundary + contact; only tile 0 holds the rare class
    (Foundation, a 4x4 block in a corner), as MakeMasks' index.json and class_px say."""
    d.mkdir(parents=True, exist_ok=True)
    items, records = [], []
    for i in range(n):
        m = np.zeros((5, size, size), np.uint8)
        m[0, 20:40, 20:40] = 255
        if i == 0:
            m[2, 56:60, 2:6] = 255
        _write(d / f"t{i}.tif", np.full((3, size, size), 90, np.uint8))
        _write(d / f"m{i}.tif", m)
        px = [int((m[k] > 0).sum()) for k in range(3)]
        items.append({"tile": str(d / f"t{i}.tif"), "mask": str(d / f"m{i}.tif"), "width": size, "height": size,
                      "class_px": px})
        records.append({"tile_id": f"t{i}", "path": f"m{i}.tif", "class_px": px})
    (d / "index.json").write_text(json.dumps({"bands": NAMES, "classes": NAMES[:3], "tiles": records}))
    return items


def test_the_head_has_one_named_channel_per_class_and_survives_a_rebuild():
    keras.backend.clear_session()
    m = build_unet(3, 5, depth=2, base_filters=4, channel_names=NAMES, batchnorm=False)
    assert m.output.shape[-1] == 5 and model_info(m)["classes"] == NAMES
    assert model_info(rebuild(m))["classes"] == NAMES
    with pytest.raises(ValueError, match="channel"):
        build_unet(3, 5, depth=2, base_filters=4)
    with pytest.raises(ValueError, match="names"):
        build_unet(3, 5, depth=2, base_filters=4, channel_names=NAMES[:3])
    y = np.zeros((1, 8, 8, 5), np.float32)
    loss = make_loss("bce", class_weights=[1, 1, 4, 1, 1])  # per channel, weighted
    assert float(loss(y, np.full_like(y, 0.1))) > 0


def test_masks_with_building_types_are_named_from_their_index(tmp_path):
    items = _typed_items(tmp_path)
    meta = inspect_items([dict(it) for it in items], "training")
    assert meta["n_classes"] == 5 and meta["channels"] == NAMES


def test_rare_classes_get_their_share_of_crops_centred_on_them(tmp_path):
    items = _typed_items(tmp_path)
    ds = TileDataset(items, batch_size=4, crop=32, training=True, seed=3, samples_per_epoch=40, class_share=0.2)
    order, target = ds.order(0), ds.target(0)
    assert (target == 2).sum() == 8 and (order[target == 2] == 0).all()  # 20% from the one tile that holds it
    for pos in np.flatnonzero(target == 2):
        _, msk = ds.sample(int(pos), 0)
        assert msk[..., 2].any()  # the crop shows the rare class
    again = TileDataset(items, batch_size=4, crop=32, training=True, seed=3, samples_per_epoch=40, class_share=0.2)
    assert (again.order(0) == order).all() and (again.target(0) == target).all()
    plain = TileDataset([{k: v for k, v in it.items() if k != "class_px"} for it in items], batch_size=4, crop=32,
                        training=True, seed=3, samples_per_epoch=40, class_share=0.2)
    off = TileDataset(items, batch_size=4, crop=32, training=True, seed=3, samples_per_epoch=40)
    assert (plain.order(0) == off.order(0)).all() and (off.target(0) == -1).all()  # no types: as before


def test_class_share_keys_models_only_when_changed():
    assert "class_share" not in TrainParams().significant()
    assert TrainParams(class_share=0.3).significant()["class_share"] == 0.3


def test_training_on_typed_masks_names_the_head_after_the_classes(tmp_path):
    keras.backend.clear_session()
    items = _typed_items(tmp_path / "data", n=4)
    params = TrainParams(depth=2, base_filters=4, epochs=1, batch_size=2, crop_size=32, samples_per_epoch=4,
                         patience=0, workers=1, cache_mb=8, precision="float32", class_weights=(1, 1, 3, 1, 1))
    path = train_model(items[:3], items[3:], tmp_path / "run", params, verbose=0)
    assert model_info(load_model(path))["classes"] == NAMES


def test_validation_iou_of_a_typed_head_is_the_union_of_the_class_channels(tmp_path):
    """The val tile's only building is of class 1 (class 0's band empty): the monitored val_iou is
    the IoU of the union of the class channels (Polygonize's footprint), as NumPy computes it."""
    from footprints.polygonize import class_footprint

    keras.backend.clear_session()
    items = _typed_items(tmp_path / "data", n=4)
    val = items[3]
    m = np.zeros((5, 64, 64), np.uint8)
    m[1, 8:56, 8:56] = 255  # one large Incomplete building
    _write(val["mask"], m)
    seen = []

    class Check(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with rasterio.open(val["tile"]) as src:
                x = np.moveaxis(src.read(), 0, -1)[None].astype("float32")
            pred = np.moveaxis(self.model.predict(x, verbose=0)[0], -1, 0)
            pp, tt = class_footprint(pred, 3)[0] >= 0.5, class_footprint(m / 255.0, 3)[0] >= 0.5
            tp, fp, fn = (tt & pp).sum(), (~tt & pp).sum(), (tt & ~pp).sum()
            seen.append((logs["val_iou"], tp / (tp + fp + fn)))

    params = TrainParams(depth=2, base_filters=4, epochs=2, batch_size=2, crop_size=32, samples_per_epoch=4,
                         patience=0, workers=1, cache_mb=8, precision="float32", learning_rate=0.05)
    train_model(items[:3], [val], tmp_path / "run", params, callbacks=[Check()], verbose=0)
    assert len(seen) == 2
    for got, want in seen:
        assert got == pytest.approx(want, abs=1e-6)
