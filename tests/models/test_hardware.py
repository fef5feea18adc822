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


def test_malloc_is_tuned_once_on_glibc_and_can_be_left_alone(monkeypatch):
    import platform

    import models.hardware as hw

    monkeypatch.setattr(hw, "_MALLOC_TUNED", False)
    monkeypatch.setenv("FOOTPRINTS_MALLOC_TUNE", "0")
    assert hw.tune_malloc() is False
    monkeypatch.delenv("FOOTPRINTS_MALLOC_TUNE")
    expected = platform.libc_ver()[0] == "glibc"
    assert hw.tune_malloc() is expected
    assert hw.tune_malloc() is expected  # a second call changes nothing
