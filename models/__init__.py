"""Keras 3 model code: builders, losses, metrics, the training data pipeline and fit loop, the
predictor. Pure Keras (TensorFlow, JAX or torch backend).

Submodules: ``unet`` (builder), ``losses``, ``metrics``, ``io`` (save/load), ``params``
(``TrainParams``, no Keras), ``hardware`` (precision, devices), ``data`` (tiles -> batches),
``callbacks`` (checkpoints, history, TensorBoard), ``training`` (the fit loop), ``inference``
(the predictor and the stitched probability GeoTIFF).

The names below are loaded on first access (PEP 562), so ``import models.params`` (as the Luigi
configuration does) does not import Keras and its backend.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "load_model": "io", "save_model_atomic": "io",
    "BinaryCrossentropy": "losses", "Combined": "losses", "Dice": "losses", "Focal": "losses",
    "SoftJaccard": "losses", "make_loss": "losses",
    "PixelF1": "metrics", "PixelIoU": "metrics",
    "CLASS_NAMES": "unet", "Standardize": "unet", "alignment": "unet", "build_unet": "unet",
    "inference_model": "unet", "model_info": "unet", "rebuild": "unet", "receptive_margin": "unet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
