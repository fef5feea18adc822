"""Opening source rasters, with errors that name the file, and their metadata as plain data."""
from __future__ import annotations

import os
import threading

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from footprints.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def open_raster(path) -> rasterio.DatasetReader:
    """Open a raster for tiling, with one-line errors that name the file: missing, empty,
    not a raster, another format under a ``.tif`` name (a PNG renamed), no CRS, no
    geotransform, truncated (its last block cannot be read). Any band count and any
    numeric dtype is accepted (training normalises each band by its statistics)."""
    path = str(path)
    if not os.path.exists(path):
        raise InputError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise InputError(path, "file is empty (0 bytes), not a GeoTIFF")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(path, f"not a readable raster: {_first_line(e)}") from None
    try:
        check_raster(src, path)
    except InputError:
        src.close()
        raise
    return src


def check_raster(src, path) -> None:
    """The checks of :func:`open_raster` on an open dataset (``InputError`` naming ``path``)."""
    if str(path).lower().endswith(TIFF_SUFFIXES) and src.driver != "GTiff":
        raise InputError(path, f"is a {src.driver} file, not a GeoTIFF, though named .tif; convert it "
                               f"(gdal_translate -of GTiff, with -a_srs and -a_ullr to georeference it)")
    if src.crs is None:
        raise InputError(path, "raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32616) before tiling")
    if src.transform == Affine.identity() and not src.gcps[0]:
        raise InputError(path, "raster has no geotransform (pixel coordinates only); "
                               "georeference it (e.g. gdal_edit.py -a_ullr) before tiling")
    try:  # a truncated file loses its tail: the last block of the last band
        src.read(src.count, window=Window(src.width - 1, src.height - 1, 1, 1))
    except rasterio.errors.RasterioError as e:
        raise InputError(path, f"truncated or corrupt: cannot read its last block ({_first_line(e)})") from None


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


class WindowReader:
    """Thread-safe windowed reads of one raster: each thread gets its own dataset handle (a GDAL
    dataset must not be shared between threads). ``reader(window_dict) -> (H, W, bands)``;
    use as a context manager, which closes every handle."""

    def __init__(self, path):
        self.path = str(path)
        self._local = threading.local()
        self._opened: list = []
        self._lock = threading.Lock()

    def _src(self):
        src = getattr(self._local, "src", None)
        if src is None:
            src = open_raster(self.path)
            self._local.src = src
            with self._lock:
                self._opened.append(src)
        return src

    def __call__(self, t: dict) -> np.ndarray:
        w = Window(t["col_off"], t["row_off"], t["width"], t["height"])
        return np.moveaxis(self._src().read(window=w), 0, -1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with self._lock:
            for src in self._opened:
                src.close()
            self._opened.clear()
