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

from footprints.names import SN7_SERIES_PATTERN
from footprints.tuning import parse_values
from tasks import config
from tasks.sources import demo_dir, demo_key, is_series, labelled_images  # noqa: F401 - demo_dir, demo_key re-exported

# sections that do not shape the buildings of a run ([track] keys the outputs of a series run: track_key)
_RUN_EXCLUDED = {"paths", "evaluate", "outputs", "track", "tune"}  # [tune]: in tune_key, when auto
# options added after the keys were in use: left out of every key while at their default, so the
# keys of existing workspaces stay as they were
_KEYED_WHEN_SET = {"data": {"demo_dates": 1, "series_pattern": SN7_SERIES_PATTERN, "demo_typed": False,
                             "class_field": "", "classes": "", "default_class": "",
                             "demo_bands": 3},
                    "predict": {"tta": "1"}}


def params_key(prefix: str, params: dict) -> str:
    """A readable, collision-safe directory name for a set of significant parameters."""
    body = json.dumps(params, sort_keys=True, default=str)
    h = hashlib.sha1(body.encode()).hexdigest()[:8]
    return f"{prefix}-{h}"


def significant(section: luigi.Config) -> dict:
    """``{name: value}`` of a config section's significant parameters (those of
    ``_KEYED_WHEN_SET`` only when they differ from their default)."""
    later = _KEYED_WHEN_SET.get(type(section).__name__, {})
    return {k: getattr(section, k) for k, p in type(section).get_params()
            if p.significant and not (k in later and getattr(section, k) == later[k])}


# ---------------------------------------------------------------- data and tiles


def tiling_key() -> str:
    t = config.tiling()
    return f"ts{t.tile_size}_ov{t.overlap}"


def mask_key() -> str:
    """``footprint`` or ``3class_bw<w>_cd<d>``; with building types (``[data] classes``) plus
    ``-cls<hash>`` of the class field, classes and default class (one footprint band per class)."""
    m = config.masks()
    key = "footprint" if m.kind == "footprint" else f"3class_bw{m.boundary_width:g}_cd{m.contact_distance:g}"
    field, classes, default = config.class_spec()
    if classes:
        key = params_key(f"{key}-cls", {"field": field, "classes": list(classes), "default": default})
    return key


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
    tta = config.predict().tta
    return f"{model_key(images)}-ctx{config.predict_context()}" + ("" if tta == "1" else f"-tta{tta}")


def run_params() -> dict:
    """Every significant parameter of the ``tasks.config`` sections that shape the polygons
    (model, masks, tiling, data, polygonize, dedup, ...; not ``paths``).

    ``[polygonize] threshold`` / ``min_area_m2``: a number as the float it always was; ``auto``
    as ``"auto"`` plus ``tune``: the :func:`tune_key` of the TuneThreshold that decides it.
    The tuning is deterministic in what its key holds (the predictions, the split, the grid and
    the polygon settings), so the key stands for the tuned values without reading them: the run
    key is known when Luigi schedules (``output()`` of every task calls it, before any tuning has
    run), and a re-tune on anything else is another key, never stale buildings."""
    out = {}
    for name in sorted(vars(config)):
        cls = getattr(config, name)
        if not (isinstance(cls, type) and issubclass(cls, luigi.Config) and cls.__module__ == config.__name__):
            continue
        if name in _RUN_EXCLUDED:
            continue
        out[name] = significant(cls())
    settings = polygon_settings()
    out["polygonize"].update(settings)
    if "auto" in settings.values():
        out["tune"] = tune_key()
    return out


def run_key() -> str:
    """The ``run`` column of ``predictions``/``buildings`` and the outputs' directory name:
    readable (model, masks, tiling) plus a hash of every significant parameter."""
    body = json.dumps(run_params(), sort_keys=True, default=str)
    h = hashlib.sha1(body.encode()).hexdigest()[:10]
    return f"{config.model().name}-{config.masks().kind}-{tiling_key()}-{h}"


# ---------------------------------------------------------------- threshold tuning


def polygon_settings() -> dict:
    """``[polygonize] threshold`` and ``min_area_m2``, each ``"auto"`` or a float (checked)."""
    cfg = config.polygonize()
    out = {}
    for name, hi in (("threshold", 1.0), ("min_area_m2", float("inf"))):
        value = str(getattr(cfg, name)).strip().lower()
        if value == "auto":
            out[name] = "auto"
            continue
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if not 0.0 <= v < hi:
            raise ValueError(f"[polygonize] {name} must be 'auto' or a number in [0, {hi:g}), got {value!r}")
        out[name] = v
    return out


def tune_grid() -> dict:
    """TuneThreshold's grid: ``[tune]``'s, with a number given for one of ``[polygonize]
    threshold`` / ``min_area_m2`` as that axis' only value (the other is tuned for it)."""
    t = config.tune()
    settings = polygon_settings()
    grid = {"thresholds": parse_values(t.thresholds, "[tune] thresholds"),
            "min_areas_m2": parse_values(t.min_areas_m2, "[tune] min_areas_m2")}
    for axis, name in (("thresholds", "threshold"), ("min_areas_m2", "min_area_m2")):
        if settings[name] != "auto":
            grid[axis] = [settings[name]]
    return grid


def _tune_extras() -> dict:
    """What, besides the model and the split, decides a tuning: the grid, the tie margin, the
    prediction context and test-time augmentation, and the polygon settings Polygonize and
    DeduplicateBorders use."""
    pc = config.polygonize()
    return {"grid": tune_grid(), "tie": config.tune().tie, "context": str(config.predict_context()),
            **tta_entry(config.predict().tta),
            "polygonize": {"simplify_px": pc.simplify_px, "halo_px": pc.halo_px}, "dedup": significant(config.dedup())}


def tta_entry(tta: str) -> dict:
    """``[predict] tta`` in a key (a tuning's, a Predict's): only when it is not 1, so keys from
    before it existed stay."""
    return {} if tta == "1" else {"tta": tta}


def tune_key() -> str:
    """``tune-<hash>`` of everything a TuneThreshold's result depends on."""
    return params_key("tune", {"predictions": prediction_key(), "split": split_key(), "masks": mask_key(),
                               **_tune_extras()})


def _declared(section: type) -> dict:
    """``{name: declared default}`` of a section's significant options (luigi keeps it in ``_default``)."""
    return {k: p._default for k, p in section.get_params() if p.significant}  # noqa: SLF001


def tuning_json() -> Path:
    """``tuning.json`` beside the model (``<workdir>/models/<model key>/``; for the oracle
    ``<workdir>/models/<prediction key>-<split key>/``), where ``footprints serve`` looks for it.
    Settings other than the defaults for the grid, the context or the polygon settings name it
    ``tuning-<hash>.json`` instead, so that two tunings of one model never share a file."""
    base = (config.workdir() / "models" / f"{prediction_key()}-{split_key()}" if config.model().name == "oracle"
            else model_dir())
    extras = _tune_extras()
    tn, pc, dd = _declared(config.tune), _declared(config.polygonize), _declared(config.dedup)
    defaults = {"grid": {"thresholds": parse_values(tn["thresholds"], ""),
                         "min_areas_m2": parse_values(tn["min_areas_m2"], "")},
                "tie": tn["tie"], "context": "auto", **tta_entry(_declared(config.predict)["tta"]),
                "polygonize": {"simplify_px": pc["simplify_px"], "halo_px": pc["halo_px"]}, "dedup": dd}
    name = "tuning" if json.dumps(extras, sort_keys=True) == json.dumps(defaults, sort_keys=True) \
        else params_key("tuning", extras)
    return base / f"{name}.json"


def track_key() -> str:
    """The tracking of a series run, e.g. ``greedy_iou0.25`` (plus a hash of a non-default
    ``[data] series_pattern``): the ``tracking`` column of ``building_ids``."""
    t = config.track()
    key = f"{t.method}_iou{t.min_iou:g}"
    pattern = significant(config.data()).get("series_pattern")
    return key if pattern is None else params_key(key, {"series_pattern": pattern})


def outputs_dir() -> Path:
    """``<workdir>/outputs/<run key>``; for a series run ``<run key>_<track key>`` (the outputs
    carry the tracked ids, so each tracking has its own, over the same buildings)."""
    name = f"{run_key()}_{track_key()}" if is_series() else run_key()
    return config.workdir() / "outputs" / name
