"""CPU inference engines for the same trained weights: Keras itself, or an ONNX export run by
ONNX Runtime or OpenVINO.

``[predict] engine``: ``keras`` (the backend's own kernels: TensorFlow's oneDNN on CPU, XLA with
JAX on GPUs), ``onnxruntime``, ``openvino``, or ``auto``: ONNX Runtime on a CPU-only TensorFlow
host in float32 when it is installed (``bench/inference.py`` measures it against Keras on the same
tiles), Keras otherwise. An engine that cannot load a model falls back to Keras with a warning
naming the engine and the reason; the outputs agree to float rounding (tests check it).

The ONNX file is exported once per model file (Keras' ``model.export(format="onnx")``, which uses
tf2onnx on the TensorFlow backend) and cached beside it as ``<stem>.<digest>.onnx``, written
atomically, so a retrained model never reuses a stale export. It holds the plain network
(float32 probabilities); test-time augmentation and the uint8 quantization run around it.
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
from footprints.stitch import to_uint8
from models.hardware import gpu_devices
from models.unet import TTA_ORDER, arch_alignment, dihedral, model_info

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


def onnx_file(network, model_path) -> Path:
    """The cached ONNX export of ``network``, the float32 inference network of ``model_path``
    (probabilities out). One export serves every ``tta``: the symmetries are applied around the
    session (:func:`symmetrized`). On a 2-core AMD EPYC (AVX2) exporting the 8-way augmented
    graph took 58 s, the plain network 10 s (loading included)."""
    model_path = Path(model_path)
    out = model_path.with_name(f"{model_path.stem}.{_digest(model_path)}.onnx")
    if not out.exists():
        bands = network.inputs[0].shape[-1]
        side = arch_alignment(model_info(network)["arch"])
        network.predict_on_batch(np.zeros((1, side, side, bands), np.float32))  # export needs a called model
        with atomic_path(out) as tmp:
            network.export(str(tmp), format="onnx", verbose=False)
    return out


def symmetrized(fn, tta: int = 1):
    """``fn`` (a batch -> float probabilities) averaged over the first ``tta`` symmetries of
    :data:`models.unet.TTA_ORDER`, each mapped back, then quantized to uint8: the same sum,
    mean and rounding (:func:`footprints.stitch.to_uint8`) as Keras' in-graph
    :func:`models.unet.test_time_augmented` + ``quantized``."""
    ks = TTA_ORDER[:tta]

    def run(x):
        x = np.asarray(x, np.float32)
        if len(ks) == 1:  # the plain network: no copy, no mean
            return to_uint8(np.asarray(fn(np.ascontiguousarray(x)), np.float32))
        total = None
        for k in ks:
            p = dihedral(np.asarray(fn(np.ascontiguousarray(dihedral(x, k))), np.float32), k, inverse=True)
            total = np.array(p) if total is None else np.add(total, p, out=total)
        total /= np.float32(len(ks))
        return to_uint8(total)

    return run


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


def engine_fn(engine: str, network, model_path, tta: int = 1):
    """``predict_fn(batch) -> uint8 round(255 p)`` of ``network`` (``model_path``'s float32
    inference network) averaged over ``tta`` symmetries, on ``engine`` (not ``keras``)."""
    if engine not in ("onnxruntime", "openvino"):
        raise ValueError(f"unknown engine {engine!r}")
    path = onnx_file(network, model_path)
    return symmetrized(_onnxruntime_fn(path) if engine == "onnxruntime" else _openvino_fn(path), tta)
