"""footprints/demo/spectral.py: the 8-band demo (WorldView-2 order, 11-bit data in uint16), its
GeoTIFF, the 8-band overlay; and the 3-band demo stays byte-identical."""
import hashlib

import numpy as np
import pytest
import rasterio
from affine import Affine

from footprints.demo import generate_scene, write_geotiff
from footprints.demo.spectral import MAX_DN, WORLDVIEW_BANDS, to_worldview
from footprints.outputs import read_base_image


def test_the_3_band_demo_is_unchanged():
    img, _, _, buildings = generate_scene(7, size=128)
    assert img.dtype == np.uint8 and img.shape == (3, 128, 128) and len(buildings) == 3
    assert hashlib.sha256(img.tobytes()).hexdigest() == \
        "ac0a27ea2269e2b150b87813b55e92be2f9d3dea7156a8a33e142934f239664a"


def test_worldview_bands_are_deterministic_11_bit_uint16():
    img = generate_scene(7, size=128)[0]
    a, b = to_worldview(img, 7), to_worldview(img, 7)
    assert a.dtype == np.uint16 and a.shape == (8, 128, 128) and np.array_equal(a, b)
    assert not np.array_equal(a, to_worldview(img, 8))  # the noise follows the seed
    assert a.max() <= MAX_DN and a.min() > 0 and a.mean() > 300  # 11-bit DNs, far above 8-bit values
    with pytest.raises(ValueError):
        to_worldview(img[:2], 7)


def test_vegetation_is_bright_in_the_near_infrared():
    px = np.array([[60, 150], [140, 150], [50, 150]], np.uint8).reshape(3, 1, 2)  # grass, grey roof
    wv = to_worldview(px, 0, noise_dn=0).astype(float)
    red, nir = wv[WORLDVIEW_BANDS.index("red")], wv[WORLDVIEW_BANDS.index("nir1")]
    assert nir[0, 0] / red[0, 0] > 3  # grass: NIR >> red
    assert 0.8 < nir[0, 1] / red[0, 1] < 1.5  # a grey roof: flat spectrum


def test_8_band_geotiff_and_its_overlay_shows_bands_5_3_2(tmp_path):
    img = np.full((8, 40, 50), 300, np.uint16)
    img[4, :, :25] = 1800  # red (band 5) bright on the left
    img[2, :, 25:] = 1800  # green (band 3) bright on the right
    path = tmp_path / "mul.tif"
    write_geotiff(img, Affine(0.5, 0, 500000, 0, -0.5, 4000000), "EPSG:32616", path)
    with rasterio.open(path) as src:
        assert (src.count, src.dtypes[0], src.descriptions) == (8, "uint16", WORLDVIEW_BANDS)
        np.testing.assert_array_equal(src.read(), img)
    rgb, scale = read_base_image(path)
    assert rgb.shape == (40, 50, 3) and scale == (1.0, 1.0)
    assert rgb[:, :25, 0].mean() > 200 and rgb[:, :25, 1].mean() < 50  # left: red
    assert rgb[:, 25:, 1].mean() > 200 and rgb[:, 25:, 0].mean() < 50  # right: green
    with pytest.raises(ValueError, match="uint16"):
        write_geotiff(img.astype(np.uint8), Affine.identity(), "EPSG:32616", tmp_path / "bad.tif")
