"""Other inference engines on the same weights: same outputs, and a clean fallback to Keras."""
from __future__ import annotations

import logging

import keras
import numpy as np
import pytest

import models
from models import engines
from models.inference import load_predictor


@pytest.fixture
def model_file(tmp_path):
    keras.backend.clear_session()
    net = models.build_unet(3, 3, depth=2, base_filters=4, seed=5, mean=[100] * 3, std=[30] * 3)
    path = tmp_path / "model.keras"
    models.save_model_atomic(net, path)
    yield path
    keras.backend.clear_session()


def _x():
    return (np.random.default_rng(0).random((2, 64, 96, 3)) * 255).astype(np.float32)


def test_auto_is_keras_outside_float32_cpu():
    assert engines.resolve_engine("keras", "float32") == "keras"
    assert engines.resolve_engine("auto", "mixed_bfloat16") == "keras"
    with pytest.raises(ValueError, match="engine must be one of"):
        engines.resolve_engine("tensorrt", "float32")


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_engines_agree_with_keras(model_file, engine):
    if engine not in engines.available_engines():
        pytest.fail(f"{engine} is not installed; scripts/setup.sh installs it")
    ref_fn, ref_info = load_predictor(model_file, "float32", engine="keras")
    fn, info = load_predictor(model_file, "float32", engine=engine)
    assert info["engine"] == engine and ref_info["engine"] == "keras"
    x = _x()
    got, ref = fn(x), ref_fn(x)
    # both quantize round(255 p) where they run: uint8, equal up to float rounding at a .5 edge
    assert got.dtype == ref.dtype == np.uint8 and got.shape == ref.shape
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # the export is cached beside the model, keyed by the model file's content
    assert len(list(model_file.parent.glob("model.*.onnx"))) == 1


def test_an_engine_that_cannot_load_falls_back_to_keras(model_file, monkeypatch, caplog):
    def broken(engine, model, path, tta=1):
        raise RuntimeError("unsupported operator Foo")

    monkeypatch.setattr("models.inference.engine_fn", broken)
    with caplog.at_level(logging.WARNING):
        fn, info = load_predictor(model_file, "float32", engine="onnxruntime")
    assert info["engine"] == "keras"
    assert "onnxruntime engine cannot run this model" in caplog.text and "unsupported operator Foo" in caplog.text
    assert fn(_x()).shape == (2, 64, 96, 3)


def test_test_time_augmentation_runs_on_onnxruntime_around_the_one_export(model_file):
    """[predict] tta = 8 through ONNX Runtime: the same uint8 outputs as Keras' own in-graph
    8-way average, computed around the plain network's export (one file serves every tta)."""
    if "onnxruntime" not in engines.available_engines():
        pytest.fail("onnxruntime is not installed; scripts/setup.sh installs it")
    x = _x()
    plain, _ = load_predictor(model_file, "float32", engine="onnxruntime")
    ref_fn, _ = load_predictor(model_file, "float32", engine="keras", tta=8)
    fn, info = load_predictor(model_file, "float32", engine="onnxruntime", tta=8)
    assert info["engine"] == "onnxruntime" and info["tta"] == 8
    got, ref = fn(x), ref_fn(x)
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert np.abs(got.astype(np.int16) - plain(x).astype(np.int16)).max() > 1  # it is another network
    assert len(list(model_file.parent.glob("model.*.onnx"))) == 1
