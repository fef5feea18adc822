"""models/hardware.py: the dtype policy from the CPU's flags and the GPUs."""
import models.hardware as hw
from models.hardware import resolve_precision


def test_resolve_precision_reads_the_cpu(monkeypatch):
    monkeypatch.setattr(hw, "gpu_devices", lambda: [])
    monkeypatch.setattr(hw, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(hw, "cpu_flags", lambda: {"avx2"})
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("mixed_float16") == "mixed_float16"
    monkeypatch.setattr(hw, "gpu_devices", lambda: ["gpu:0"])
    monkeypatch.setattr(hw, "gpu_has_bf16", lambda: False)
    assert resolve_precision("auto") == "mixed_float16"


def test_data_workers_auto_is_a_quarter_of_the_cpus_at_least_one(monkeypatch):
    from models.hardware import data_workers

    assert data_workers(3) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert data_workers(0) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert data_workers(0) == 4


def test_malloc_is_tuned_on_glibc_again_at_every_call_and_can_be_left_alone(monkeypatch):
    import ctypes
    import platform

    import models.hardware as hw

    monkeypatch.setenv("FOOTPRINTS_MALLOC_TUNE", "0")
    assert hw.tune_malloc() is False
    monkeypatch.delenv("FOOTPRINTS_MALLOC_TUNE")
    expected = platform.libc_ver()[0] == "glibc"
    assert hw.tune_malloc() is expected
    if expected:  # what TensorFlow does once its kernels run: a 128 kB trim threshold
        assert ctypes.CDLL("libc.so.6").mallopt(-1, 128 * 1024) == 1
    assert hw.tune_malloc() is expected  # and the next call puts ours back


def test_training_applies_the_malloc_settings_again_after_its_first_step(monkeypatch):
    from models import callbacks

    calls = []
    monkeypatch.setattr(callbacks, "tune_malloc", lambda: calls.append(1) or True)
    cb = callbacks.KeepMallocTuned()
    cb.on_epoch_begin(0)
    cb.on_train_batch_end(0)
    cb.on_train_batch_end(1)
    cb.on_train_batch_end(2)
    assert len(calls) == 2  # at the epoch and after its first step, not at every step
