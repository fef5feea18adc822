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
    # building types ([data] class_field; footprints.labels.classes): empty without them
    class_field: str = ""
    class_counts: dict = field(default_factory=dict)  # {class: labels loaded}
    defaulted: int = 0  # features without a value, given the default class
    unknown_classes: dict = field(default_factory=dict)  # {value not listed: features rejected}
    class_field_seen: int = 0  # features that have the property
    keys_seen: set = field(default_factory=set)  # property names of features without it (a few)

    def as_dict(self) -> dict:
        out = {"path": self.path, "crs": self.crs, "features_read": self.read, "loaded": self.loaded,
               "repaired": self.repaired, "rejected": len(self.rejected), "rejected_features": self.rejected}
        if self.class_field:
            out.update(class_field=self.class_field, classes=dict(sorted(self.class_counts.items())),
                       defaulted=self.defaulted, unknown_classes=dict(sorted(self.unknown_classes.items())))
        return out


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
