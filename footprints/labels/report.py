"""What a label load did: features read, loaded, repaired and rejected (with reasons)."""
from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class LabelReport:
    path: str
    crs: str = ""
    read: int = 0
    loaded: int = 0
    repaired: int = 0
    rejected: list = field(default_factory=list)  # [{"feature": i, "reason": ...}]

    def as_dict(self) -> dict:
        return {"path": self.path, "crs": self.crs, "features_read": self.read, "loaded": self.loaded,
                "repaired": self.repaired, "rejected": len(self.rejected), "rejected_features": self.rejected}


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector (restored afterwards): a load makes many
    container objects (feature records, per-chunk lists), and each generation-0 threshold
    crossing would scan the ones still alive again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
