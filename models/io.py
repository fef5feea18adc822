"""Saving and loading ``.keras`` files atomically (a temp file beside the target, then a rename)."""
from __future__ import annotations

import os
from pathlib import Path

import keras

from footprints.atomic import atomic_path
from footprints.errors import InputError

from . import losses, metrics, unet  # noqa: F401  (registers the custom objects)


def save_model_atomic(model: keras.Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (``.keras``) so that readers see the old file or the new one,
    never a partial one. The temp file sits next to the target and keeps the ``.keras`` suffix
    Keras checks, so the final step is a rename."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: a Keras model file must end in .keras")
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def load_model(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """Load a footprints ``.keras`` file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        model = keras.models.load_model(path, compile=compile)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise InputError(path, f"cannot load the Keras model: {e}") from e
    try:
        model.get_layer("standardize")
    except ValueError as e:
        raise InputError(path, "not a footprints model (no 'standardize' layer with its "
                               "normalisation); build it with models.build_unet") from e
    return model
