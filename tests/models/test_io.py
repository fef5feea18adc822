"""models/io.py: atomic save, load with clear errors."""
import keras
import numpy as np
import pytest

from models import build_unet, load_model, model_info, save_model_atomic


def test_save_load_roundtrip_is_atomic(tmp_path):
    keras.backend.clear_session()
    model = build_unet(2, 3, depth=2, base_filters=4, seed=1, mean=[5, 6], std=[2, 3], nodata=-1,
                       dtype_policy="mixed_bfloat16", info={"note": "x"})
    path = save_model_atomic(model, tmp_path / "m" / "model.keras")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.keras"]  # no temp dir left
    again = load_model(path)
    assert model_info(again) == model_info(model)
    x = np.random.default_rng(0).uniform(0, 10, (1, 16, 16, 2)).astype("float32")
    run = lambda m: keras.ops.convert_to_numpy(m(x, training=False))  # noqa: E731
    np.testing.assert_array_equal(run(again), run(model))
    assert again.get_layer("enc0_conv0").dtype_policy.name == "mixed_bfloat16"


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        load_model(tmp_path / "nope.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.keras"):
        load_model(bad)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(ValueError, match="plain.keras: not a footprints model"):
        load_model(tmp_path / "plain.keras")
    with pytest.raises(ValueError, match=r"\.keras"):
        save_model_atomic(plain, tmp_path / "model.h5")
