"""Tiny tile/mask GeoTIFF pairs with a real CRS, for the data pipeline and training tests."""
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine


def write_pair(d: Path, name: str, image: np.ndarray, mask: np.ndarray, nodata=None, x0=500000.0):
    """(bands, H, W) image and mask -> GeoTIFFs with a real UTM CRS."""
    d.mkdir(parents=True, exist_ok=True)
    tr = Affine(0.5, 0, x0, 0, -0.5, 4000000)
    paths = {}
    for kind, arr, nd in (("tile", image, nodata), ("mask", mask, None)):
        p = d / f"{name}.{kind}.tif"
        with rasterio.open(p, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                           dtype=arr.dtype, crs="EPSG:32616", transform=tr, nodata=nd) as dst:
            dst.write(arr)
        paths[kind] = str(p)
    return paths


def synthetic_items(d: Path, n=4, size=64, bands=3, classes=3, seed=0, dtype="uint8"):
    """Bright rectangles (buildings) on a noisy background, with their masks."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        img = rng.integers(40, 90, (bands, size, size)).astype(dtype)
        m = np.zeros((classes, size, size), "uint8")
        for _ in range(3):
            r, c = rng.integers(2, size - 16, 2)
            h, w = rng.integers(6, 14, 2)
            img[:, r:r + h, c:c + w] = 200
            m[0, r:r + h, c:c + w] = 255
            if classes == 3:
                m[1, r:r + h, c] = m[1, r:r + h, c + w - 1] = 255
        items.append(write_pair(d, f"t{i}", img, m, x0=500000.0 + i * size))
    return items


@pytest.fixture
def make_items():
    """``make_items(dir, n=4, size=64, bands=3, classes=3, seed=0, dtype="uint8")``: tile/mask
    pairs as the dicts ``train_model`` takes (``tile`` and ``mask`` paths)."""
    return synthetic_items
