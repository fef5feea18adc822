"""Training hyper-parameters: every default and every parameter's significance, declared once.

``tasks.config.train`` (the ``[train]`` section of luigi.cfg) takes its defaults and its
``significant`` flags from :class:`TrainParams`, and :meth:`TrainParams.from_kwargs` turns the
section back into one. Significant parameters change the trained model and key its directory;
the others (``metadata={"significant": False}``) only change how the run executes. No Keras here,
so reading the configuration stays cheap.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields


def _runtime(default=MISSING, default_factory=MISSING):
    """A parameter that changes how a run executes, not its result (beyond float rounding)."""
    return field(default=default, default_factory=default_factory, metadata={"significant": False})


def parse_class_weights(value) -> tuple[float, ...] | None:
    """``"1,2,0.5"`` (``[train] class_weights``) -> ``(1.0, 2.0, 0.5)``; empty -> None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    return tuple(float(v) for v in value) or None


@dataclass
class TrainParams:
    """Training hyper-parameters; ``[train]`` in luigi.cfg (tasks/config.py) takes its defaults
    from here."""

    depth: int = 4
    base_filters: int = 16
    input_scale: int = 1
    fold: int = 2
    batchnorm: bool = False
    epochs: int = 24
    # 2 crops of 384² a step: a crop wide enough to hold a road beside a grey roof (256² crops
    # took roads for roofs: val IoU 0.79 against 0.84 for the same pixels in 384² crops)
    batch_size: int = 2
    crop_size: int = 384
    samples_per_epoch: int = 132
    learning_rate: float = 5e-3
    clipnorm: float = 1.0  # Adam's global gradient norm clip; 0: none
    loss: str = "bce+jaccard"
    warmup_loss: str = "bce"
    warmup_epochs: int = 0
    class_weights: tuple | None = None
    class_share: float = 0.2  # building types: least share of an epoch's crops centred on each class
    flips: bool = True
    rotations: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    color: float = 0.25
    patience: int = 8
    seed: int = 0
    # how the run executes (no effect on the result beyond float rounding)
    # the demo recipe trains in float32 everywhere: on an AMX CPU bf16 steps of this small network
    # were no faster in fit and scored test F1 0.80 against 0.91 (README "Speed on any machine")
    precision: str = _runtime("float32")
    workers: int = _runtime(0)  # 0: auto (models.hardware.data_workers)
    cache_mb: int = _runtime(1024)
    extra: dict = _runtime(default_factory=dict)

    @classmethod
    def is_significant(cls, name: str) -> bool:
        """Whether parameter ``name`` changes the trained model (and so its directory's key)."""
        return cls.__dataclass_fields__[name].metadata.get("significant", True)

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> TrainParams:
        """From ``tasks.config.train().param_kwargs``: ``class_weights`` text is parsed, keys
        that are not training parameters (``tensorboard_port``) are ignored."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in kwargs.items() if k in names}
        if "class_weights" in kw:
            kw["class_weights"] = parse_class_weights(kw["class_weights"])
        return cls(**kw)

    def significant(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if self.is_significant(k)}
        for name in ("input_scale", "fold"):  # keys of full-resolution models stay what they were before these existed
            if d.get(name) == 1:
                del d[name]
        if d.get("class_share") == 0.2:  # keys of models made before building types stay as they were
            del d["class_share"]
        return d

    def phases(self) -> list[tuple[int, int, str]]:
        """[(first epoch, end epoch, loss spec)], epochs 0-based, end exclusive."""
        w = max(0, min(self.warmup_epochs, self.epochs))
        out = [(0, w, self.warmup_loss)] if w else []
        if self.epochs > w:
            out.append((w, self.epochs, self.loss))
        return out
