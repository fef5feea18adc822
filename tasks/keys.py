"""Which settings key which output: every directory name and run id of the pipeline is made here.

Significant parameters (those that change a result) go into the names, so a changed setting never
reuses stale output; insignificant ones (workers, batch size at inference, precision) do not. The
names must stay stable across releases, or existing workspaces would look incomplete.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import luigi

from tasks import config
from tasks.sources import demo_dir, demo_key, labelled_images  # noqa: F401 - demo_dir, demo_key re-exported

# sections that do not shape the buildings of a run
_RUN_EXCLUDED = {"paths", "evaluate", "outputs"}


def params_key(prefix: str, params: dict) -> str:
    """A readable, collision-safe directory name for a set of significant parameters."""
    body = json.dumps(params, sort_keys=True, default=str)
    h = hashlib.sha1(body.encode()).hexdigest()[:8]
    return f"{prefix}-{h}"


def significant(section: luigi.Config) -> dict:
    """``{name: value}`` of a config section's significant parameters."""
    return {k: getattr(section, k) for k, p in type(section).get_params() if p.significant}


# ---------------------------------------------------------------- data and tiles


def tiling_key() -> str:
    t = config.tiling()
    return f"ts{t.tile_size}_ov{t.overlap}"


def mask_key() -> str:
    m = config.masks()
    if m.kind == "footprint":
        return "footprint"
    return f"3class_bw{m.boundary_width:g}_cd{m.contact_distance:g}"


# ---------------------------------------------------------------- split and model


def split_params(images) -> dict:
    """Everything that decides a split's content."""
    return {"split": significant(config.split()), "images": sorted(images), "data": significant(config.data()),
            "tiling": tiling_key(), "masks": significant(config.masks())}


def split_images_or_labelled(images=None) -> list[str]:
    """``images`` sorted, or (empty) every configured image that has labels."""
    return sorted(images) if images else labelled_images()


def split_key(images=None) -> str:
    return params_key(f"{config.split().method}", split_params(split_images_or_labelled(images)))


def model_key(images=None) -> str:
    """``unet<depth>x<filters>-<hash>`` of the significant training parameters and the split."""
    p = config.train_params()
    return params_key(f"unet{p.depth}x{p.base_filters}", {"train": p.significant(), "split": split_key(images)})


def model_dir(images=None) -> Path:
    return config.workdir() / "models" / model_key(images)


# ---------------------------------------------------------------- predictions and buildings


def prediction_key(images=None) -> str:
    """Directory of the predictions: ``<model key>-ctx<context>``, or ``oracle-<tiling>-<mask kind>``
    (the oracle is exact with any tiling and context)."""
    if config.model().name == "oracle":
        return f"oracle-{tiling_key()}-{mask_key()}"
    return f"{model_key(images)}-ctx{config.predict_context()}"


def run_params() -> dict:
    """Every significant parameter of the ``tasks.config`` sections that shape the polygons
    (model, masks, tiling, data, polygonize, dedup, ...; not ``paths``)."""
    out = {}
    for name in sorted(vars(config)):
        cls = getattr(config, name)
        if not (isinstance(cls, type) and issubclass(cls, luigi.Config) and cls.__module__ == config.__name__):
            continue
        if name in _RUN_EXCLUDED:
            continue
        out[name] = significant(cls())
    return out


def run_key() -> str:
    """The ``run`` column of ``predictions``/``buildings`` and the outputs' directory name:
    readable (model, masks, tiling) plus a hash of every significant parameter."""
    body = json.dumps(run_params(), sort_keys=True, default=str)
    h = hashlib.sha1(body.encode()).hexdigest()[:10]
    return f"{config.model().name}-{config.masks().kind}-{tiling_key()}-{h}"


def outputs_dir() -> Path:
    return config.workdir() / "outputs" / run_key()
