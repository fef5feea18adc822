"""The 8-band demo: a rendered RGB scene as WorldView-2-like multispectral imagery.

SpaceNet's ``MUL-PanSharpen`` products are 8-band uint16 with WorldView-2's band order and
11-bit data (0..2047): 1 coastal (427 nm), 2 blue (478), 3 green (546), 4 yellow (608), 5 red
(659), 6 red edge (724), 7 NIR1 (831), 8 NIR2 (908). The demo derives them from the rendered RGB
reflectances: the visible bands from the channels they lie between, the near infrared from the
brightness plus a strong vegetation response (green above red and blue: grass and trees are
bright in NIR, as chlorophyll makes them), the red edge between red and NIR. Each band gets its
own gain and offset (path radiance: the short wavelengths have the larger offsets) and sensor
noise drawn from a generator of its own, so the 3-band scene's random stream is untouched.
"""
from __future__ import annotations

import numpy as np

__all__ = ["WORLDVIEW_BANDS", "RGB_BANDS", "to_worldview"]

WORLDVIEW_BANDS = ("coastal", "blue", "green", "yellow", "red", "red_edge", "nir1", "nir2")
RGB_BANDS = (5, 3, 2)  # 1-based: red, green, blue, for display
MAX_DN = 2047  # 11-bit
_GAIN = np.array([700, 900, 1100, 1000, 1000, 1100, 1250, 1150], np.float32)
_OFFSET = np.array([180, 120, 90, 70, 50, 60, 50, 40], np.float32)


def to_worldview(rgb: np.ndarray, seed: int, noise_dn: float = 3.0) -> np.ndarray:
    """``rgb`` uint8 (3, H, W) -> uint16 (8, H, W) in WorldView-2 band order, values 0..2047.
    The same ``rgb`` and ``seed`` always give the same bytes."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) RGB image, got shape {a.shape}")
    r, g, b = (a[i].astype(np.float32) / np.float32(255.0) for i in range(3))
    lum = (r + g + b) / np.float32(3.0)
    green_excess = np.clip(g - np.float32(0.5) * (r + b), 0, 1)
    nir = np.clip(np.float32(0.9) * lum + np.float32(2.5) * green_excess, 0, np.float32(1.2))
    refl = np.stack([np.float32(0.8) * b + np.float32(0.1), b, g, np.float32(0.5) * (r + g), r,
                     np.float32(0.5) * (r + nir), nir, np.float32(0.95) * nir])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 8]))
    dn = _OFFSET[:, None, None] + _GAIN[:, None, None] * refl
    dn += rng.normal(0.0, noise_dn, dn.shape).astype(np.float32)
    return np.clip(np.rint(dn), 0, MAX_DN).astype(np.uint16)
