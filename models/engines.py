"""CPU inference engines for the same trained weights: Keras itself, or an ONNX export run by
ONNX Runtime or OpenVINO.

``[predict] engine``: ``keras`` (the backend's own kernels: TensorFlow's oneDNN on CPU, XLA with
JAX on GPUs), ``onnxruntime``, ``openvino``, or ``auto``: ONNX Runtime on a CPU-only TensorFlow
host in float32 when it is installed (``bench/inference.py`` measures it against Keras on the same
tiles), Keras otherwise. An engine that cannot load a model falls back to Keras with a warning
naming the engine and the reason; the outputs agree to float rounding (tests check it).

The ONNX file is exported once per model file (Keras' ``model.export(format="onnx")``, which uses
tf2onnx on the TensorFlow backend) and cached beside it as ``<stem>.<digest>.onnx``, written
atomically, so a retrained model never reuses a stale export.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import keras
import numpy as np

from footprints.atomic import atomic_path
from models.hardware import gpu_devices
from models.unet import arch_alignment, model_info

log = logging.getLogger(__name__)

ENGINES = ("auto", "keras", "onnxruntime", "openvino")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_engines() -> list[str]:
    """Engines that can run here (``keras`` always)."""
    out = ["keras"]
    onnx_export = keras.backend.backend() == "tensorflow" and _installed("tf2onnx")
    if onnx_export and _installed("onnxruntime"):
        out.append("onnxruntime")
    if onnx_export and _installed("openvino"):
        out.append("openvino")
    return out


def resolve_engine(requested: str, policy: str) -> str:
    """``auto``: ONNX Runtime on a CPU-only host in float32 when available, else Keras."""
    if requested not in ENGINES:
        raise ValueError(f"[predict] engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    if requested != "auto":
        return requested
    if policy == "float32" and not gpu_devices() and "onnxruntime" in available_engines():
        return "onnxruntime"
    return "keras"


def _digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _network(model):
    """The U-Net itself inside a test-time-augmented wrapper (the model where it is not one)."""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner[0] if inner else model


def onnx_file(model, model_path, tta: int = 1) -> Path:
    """The cached ONNX export of ``model`` (the float32 inference network of ``model_path``, with
    its uint8 output, averaged over ``tta`` symmetries)."""
    model_path = Path(model_path)
    # "u8": the export of the network with its quantized output (models.unet.quantized)
    suffix = "u8" if tta == 1 else f"u8.tta{tta}"
    out = model_path.with_name(f"{model_path.stem}.{_digest(model_path)}.{suffix}.onnx")
    if not out.exists():
        bands = model.inputs[0].shape[-1]
        side = arch_alignment(model_info(_network(model))["arch"])
        model.predict_on_batch(np.zeros((1, side, side, bands), np.float32))  # export needs a called model
        with atomic_path(out) as tmp:
            model.export(str(tmp), format="onnx", verbose=False)
    return out


def _onnxruntime_fn(path: Path):
    import onnxruntime as ort  # noqa: PLC0415 - optional engine, imported only when chosen

    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def fn(x):
        return session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]

    return fn


def _openvino_fn(path: Path):
    import openvino as ov  # noqa: PLC0415 - optional engine, imported only when chosen

    core = ov.Core()
    # float32 as asked: OpenVINO's CPU plugin otherwise runs bf16 on CPUs with AMX/AVX512-BF16
    # (seen on a Xeon with AMX: probabilities off by up to 5/255 from Keras' float32)
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def fn(x):
        return next(iter(request.infer({0: np.ascontiguousarray(x, np.float32)}).values()))

    return fn


def engine_fn(engine: str, model, model_path, tta: int = 1):
    """``predict_fn(batch) -> probabilities`` of ``model`` (``model_path``'s network averaged over
    ``tta`` symmetries) on ``engine`` (not ``keras``)."""
    path = onnx_file(model, model_path, tta)
    if engine == "onnxruntime":
        return _onnxruntime_fn(path)
    if engine == "openvino":
        return _openvino_fn(path)
    raise ValueError(f"unknown engine {engine!r}")
