"""Building types: each label's class from one of its properties (``[data] class_field``).

A feature whose value is missing (no such property, null or "") takes the default class and is
counted in the report (``defaulted``); a value that is not one of the classes rejects the
feature, with a reason naming the value, and the report counts it under ``unknown_classes``. A
file in which no feature has the property at all is an :class:`InputError` naming the file, the
field and the properties its features do have (a misspelt field, or the wrong file).
"""
from __future__ import annotations

from dataclasses import dataclass

import msgspec

from footprints.errors import InputError
from footprints.labels.report import LabelReport

_DECODE = msgspec.json.Decoder()
_KEYS_KEPT = 20  # property names remembered for the error message


@dataclass(frozen=True)
class ClassRule:
    """``field``: the property; ``classes``: its values, in order; ``default``: for missing values."""

    field: str
    classes: tuple
    default: str

    def __post_init__(self):
        if not self.classes:
            raise ValueError("ClassRule needs at least one class")
        if self.default not in self.classes:
            raise ValueError(f"default class {self.default!r} is not one of {', '.join(self.classes)}")

    def resolve(self, props: list, offset: int, report: LabelReport) -> tuple[list, dict]:
        """Per feature of a chunk (``props``: each feature's properties as JSON text, or None):
        its class as UTF-8 bytes, or None where the feature is rejected; and ``{position:
        reason}`` of the rejected ones. Counts go into ``report``."""
        names = set(self.classes)
        out, bad = [], {}
        for i, p in enumerate(props):
            d = _DECODE.decode(p) if p is not None else None
            value = d.get(self.field) if isinstance(d, dict) else None
            if isinstance(d, dict):
                if self.field in d:
                    report.class_field_seen += 1
                elif len(report.keys_seen) < _KEYS_KEPT:
                    report.keys_seen.update(list(d)[:_KEYS_KEPT - len(report.keys_seen)])
            if value is None or value == "":
                report.defaulted += 1
                value = self.default
            value = value if isinstance(value, str) else str(value)
            if value not in names:
                report.unknown_classes[value] = report.unknown_classes.get(value, 0) + 1
                bad[i] = (f"{self.field} = {value!r} is not one of the classes "
                          f"{', '.join(self.classes)} ([data] classes)")
                out.append(None)
                continue
            out.append(value.encode("utf-8"))
        return out, bad

    def check_seen(self, report: LabelReport, path: str) -> None:
        """No feature of a non-empty file has the field: an InputError naming file, field and
        the properties seen."""
        if report.read and not report.class_field_seen:
            seen = ", ".join(sorted(report.keys_seen)) or "none"
            raise InputError(path, f"no feature has the property {self.field!r} ([data] class_field); "
                                   f"properties seen: {seen}")

    def count(self, report: LabelReport, values: list) -> None:
        """Count the loaded features' classes."""
        for v in values:
            k = v.decode("utf-8")
            report.class_counts[k] = report.class_counts.get(k, 0) + 1
