"""Opening source rasters, with errors that name the file, and their metadata as plain data."""
from __future__ import annotations

import os

import numpy as np
import rasterio
from affine import Affine

from footprints.errors import InputError


def open_raster(path) -> rasterio.DatasetReader:
    """Open a raster for tiling, with errors that name the file."""
    path = str(path)
    if not os.path.exists(path):
        raise InputError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise InputError(path, "file is empty (0 bytes), not a GeoTIFF")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(path, f"not a readable raster: {e}") from None
    if src.crs is None:
        src.close()
        raise InputError(path, "raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32616) before tiling")
    if src.transform == Affine.identity() and not src.gcps[0]:
        src.close()
        raise InputError(path, "raster has no geotransform (pixel coordinates only)")
    return src


def raster_meta(src) -> dict:
    """Size, bands, dtype, nodata, CRS (WKT) and the 6 affine coefficients of an open raster."""
    return {
        "width": src.width,
        "height": src.height,
        "count": src.count,
        "dtype": src.dtypes[0],
        "nodata": src.nodata,
        "crs_wkt": src.crs.to_wkt(),
        "transform": list(src.transform)[:6],
    }


def read_array(path, window=None) -> np.ndarray:
    """(H, W, bands) array of a GeoTIFF (optionally a window); errors name the file."""
    try:
        with rasterio.open(path) as src:
            arr = src.read(window=window)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(path, f"cannot read raster: {e}") from None
    return np.moveaxis(arr, 0, -1)


def raster_info(path) -> dict:
    """Bands, dtype, nodata and size of a raster file; errors name the file."""
    try:
        with rasterio.open(path) as src:
            return {"bands": src.count, "dtype": src.dtypes[0], "nodata": src.nodata,
                    "width": src.width, "height": src.height}
    except rasterio.errors.RasterioIOError as e:
        raise InputError(path, f"cannot read raster: {e}") from None
