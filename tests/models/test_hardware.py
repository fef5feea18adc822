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
