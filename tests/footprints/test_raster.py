"""footprints/raster.py: opening rasters, with errors that name the file."""
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from footprints.errors import InputError
from footprints.raster import open_raster, raster_meta


def _write(path, arr, crs="EPSG:32616", nodata=None, transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)):
    prof = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
            "dtype": arr.dtype.name, "transform": transform, "nodata": nodata}
    if crs:
        prof["crs"] = CRS.from_user_input(crs)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr)


def test_zero_byte_and_corrupt_tiff(tmp_path):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.tif: file is empty"):
        open_raster(empty)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x13" * 200)
    with pytest.raises(InputError, match=r"corrupt\.tif: not a readable raster"):
        open_raster(corrupt)
    with pytest.raises(InputError, match=r"missing\.tif: file does not exist"):
        open_raster(tmp_path / "missing.tif")


def test_raster_without_crs(tmp_path):
    p = tmp_path / "nocrs.tif"
    _write(p, np.ones((1, 8, 8), np.uint8), crs=None)
    with pytest.raises(InputError, match=r"nocrs\.tif: raster has no CRS"):
        open_raster(p)


def test_raster_meta(tmp_path):
    p = tmp_path / "ok.tif"
    _write(p, np.ones((2, 8, 10), np.uint16), nodata=0)
    with open_raster(p) as src:
        meta = raster_meta(src)
    assert meta["width"] == 10 and meta["height"] == 8 and meta["count"] == 2 and meta["dtype"] == "uint16"
    assert meta["nodata"] == 0 and meta["transform"] == [0.5, 0, 500000, 0, -0.5, 4000000]
    assert CRS.from_wkt(meta["crs_wkt"]).to_epsg() == 32616
