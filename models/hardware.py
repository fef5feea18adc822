"""Hardware probing: the dtype policy, XLA, and data parallelism over several GPUs.

Mixed bfloat16 where the CPU has AMX/AVX512-BF16 and on GPUs (float16 on GPUs without bf16),
``keras.distribution.DataParallel`` over several GPUs (JAX backend).
"""
from __future__ import annotations

import logging
import math
import subprocess

import keras

log = logging.getLogger(__name__)


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """AMX-BF16 or AVX512-BF16: bfloat16 matmuls/convs run natively (oneDNN)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def gpu_devices() -> list[str]:
    try:
        return list(keras.distribution.list_devices("gpu"))
    except Exception:  # noqa: BLE001 - backends without the distribution API: no GPU support here
        return []


def gpu_has_bf16() -> bool:
    """Compute capability >= 8.0 (Ampere and later) according to nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        return bool(out) and all(float(v) >= 8.0 for v in out)
    except (OSError, ValueError, subprocess.SubprocessError):
        return False


def resolve_precision(requested: str = "auto") -> str:
    """The Keras dtype policy for ``[train]/[predict] precision``."""
    if requested != "auto":
        return requested
    if gpu_devices():
        return "mixed_bfloat16" if gpu_has_bf16() else "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def jit_setting():
    """XLA on CPU is several times slower than TensorFlow's oneDNN kernels for these convs."""
    if keras.backend.backend() == "tensorflow" and not gpu_devices():
        return False
    return "auto"


def setup_distribution(batch_size: int) -> tuple[int, list[str]]:
    """DataParallel over several GPUs (JAX backend); returns the (possibly rounded) batch size."""
    gpus = gpu_devices()
    if len(gpus) > 1:
        if keras.backend.backend() == "jax":
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=gpus))
            if batch_size % len(gpus):
                batch_size = math.ceil(batch_size / len(gpus)) * len(gpus)
                log.warning("batch size rounded up to %d for %d GPUs", batch_size, len(gpus))
        else:
            log.warning("%d GPUs visible, but Keras distributes over several only with KERAS_BACKEND=jax; "
                        "using one", len(gpus))
    return batch_size, gpus
