"""Keras 3 model code: builders, losses, metrics. Pure Keras (TensorFlow, JAX or torch backend)."""
from .io import load_model, save_model_atomic
from .losses import BinaryCrossentropy, Combined, Dice, Focal, SoftJaccard, make_loss
from .metrics import PixelF1, PixelIoU
from .unet import (CLASS_NAMES, Standardize, alignment, build_unet, inference_model, model_info,
                   rebuild, receptive_margin)

__all__ = [
    "BinaryCrossentropy", "CLASS_NAMES", "Combined", "Dice", "Focal", "PixelF1", "PixelIoU", "SoftJaccard",
    "Standardize", "alignment", "build_unet", "inference_model", "load_model", "make_loss", "model_info",
    "rebuild", "receptive_margin", "save_model_atomic",
]
