"""Hardware probing: the dtype policy, XLA, and data parallelism over several GPUs.

Mixed bfloat16 where the CPU has AMX/AVX512-BF16 and on GPUs (float16 on GPUs without bf16),
``keras.distribution.DataParallel`` over several GPUs (JAX backend).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
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


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of handing it back to the kernel after every op.

    TensorFlow's CPU kernels allocate and free large buffers at every step; with glibc's defaults
    they are mmap'd and unmapped each time, and the kernel zeroes fresh pages on every fault. On
    a 2-core AMD EPYC that was a third of a training step's CPU time (system time). The largest
    mmap threshold glibc accepts (32 MiB) plus a high trim threshold and top pad make a 4-level
    U-Net training step 1.35x faster there (0.75 -> 0.55 s, bare steps); the numbers computed do
    not change. ``FOOTPRINTS_MALLOC_TUNE=0`` leaves the allocator alone. Returns whether applied.

    Each call applies the settings again: TensorFlow sets ``M_TRIM_THRESHOLD`` to 128 kB itself
    once its kernels start ("Memory patch applied"), after the first call, so training and
    inference call this again after their first step (:class:`models.callbacks.KeepMallocTuned`).
    Before that, a 2-core AMD EPYC (AVX2) spent 7.4 s of system time and 2.3 million page
    faults per 20-step epoch of the demo recipe; after it, 0.6 s and 25 thousand.
    """
    if os.environ.get("FOOTPRINTS_MALLOC_TUNE", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(mallopt(opt, val) == 1 for opt, val in (
        (m_mmap_threshold, 32 * 2 ** 20), (m_trim_threshold, 2 ** 30), (m_top_pad, 64 * 2 ** 20)))


def data_workers(requested: int) -> int:
    """Reader threads of the training pipeline: ``[train] workers``, or with 0 (auto) a quarter
    of the CPUs, at least 1 (the reader threads compete with the training step for cores: on 2
    cores one reader gave 0.80 s per demo step, two readers 0.96 s)."""
    if requested > 0:
        return int(requested)
    return max(1, (os.cpu_count() or 1) // 4)


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
