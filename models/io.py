"""Saving and loading ``.keras`` files atomically (temp dir in the same folder, then os.replace)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import keras

from . import losses, metrics, unet  # noqa: F401  (registers the custom objects)


def save_model_atomic(model: keras.Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (``.keras``) so that readers see the old file or the new one,
    never a partial one. The temp dir sits next to the target, so ``os.replace`` is a rename."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: a Keras model file must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}-", dir=path.parent))
    try:
        model.save(tmp / path.name)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_model(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """Load a footprints ``.keras`` file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        model = keras.models.load_model(path, compile=compile)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: cannot load the Keras model: {e}") from e
    try:
        model.get_layer("standardize")
    except ValueError as e:
        raise ValueError(f"{path}: not a footprints model (no 'standardize' layer with its "
                         "normalisation); build it with models.build_unet") from e
    return model
