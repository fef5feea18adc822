"""Opening source rasters, with errors that name the file, and their metadata as plain data."""
from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from footprints.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")

# read_array opens a file for its pixels only: GEOREF_SOURCES=NONE skips the CRS lookup (most of an
# open's cost for a 512² tile; tile indexes carry the georeferencing) and no readdir of the
# (large) tile directory looks for sidecar files. rasterio then reports the missing geotransform
# on every open; that one message is silenced (:func:`_silence_no_georef`).
_PIXELS_ONLY_OPEN = {"GEOREF_SOURCES": "NONE"}
_PIXELS_ONLY_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
_NO_GEOREF = "Dataset has no geotransform, gcps, or rpcs"


def _silence_no_georef() -> None:
    """Install the filter for rasterio's missing-geotransform warning unless it is there (test
    runners and ``warnings.catch_warnings`` blocks restore the filters they found)."""
    for f in warnings.filters:
        if f[0] == "ignore" and f[2] is NotGeoreferencedWarning and f[1] is not None and f[1].pattern == _NO_GEOREF:
            return
    warnings.filterwarnings("ignore", message=_NO_GEOREF, category=NotGeoreferencedWarning)


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
    """(H, W, bands) array of a GeoTIFF's pixels (optionally a window), C-contiguous; errors name
    the file. Opened for pixels only (no georeferencing read: see ``_PIXELS_ONLY_OPEN``)."""
    _silence_no_georef()
    try:
        if rasterio.env.hasenv():  # the caller's environment (e.g. :func:`pixel_env` around a loop)
            with rasterio.open(path, **_PIXELS_ONLY_OPEN) as src:
                return read_interleaved(src, window)
        with pixel_env(), rasterio.open(path, **_PIXELS_ONLY_OPEN) as src:
            return read_interleaved(src, window)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(path, f"cannot read raster: {e}") from None


def pixel_env() -> rasterio.Env:
    """The GDAL environment :func:`read_array` uses. Entered once around many reads (a reader
    thread's whole loop) it saves setting up rasterio's default environment for every file."""
    return rasterio.Env(**_PIXELS_ONLY_ENV)


def read_interleaved(src, window=None) -> np.ndarray:
    """(H, W, bands) C-contiguous read of an open dataset: GDAL writes the pixels interleaved
    straight into the array (no band-by-band copy and transpose afterwards). A window that is
    not whole pixels inside the raster is read as rasterio reads it (cropped)."""
    if window is None:
        window = Window(0, 0, src.width, src.height)
    elif not isinstance(window, Window):
        window = Window.from_slices(*window)
    c, r, w, h = window.col_off, window.row_off, window.width, window.height
    if not (all(float(v).is_integer() for v in (c, r, w, h)) and c >= 0 and r >= 0
            and c + w <= src.width and r + h <= src.height):
        return np.ascontiguousarray(np.moveaxis(src.read(window=window), 0, -1))
    out = np.empty((int(h), int(w), src.count), src.dtypes[0])
    src.read(out=out.transpose(2, 0, 1), window=window)
    return out


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
        return read_interleaved(self._src(), Window(t["col_off"], t["row_off"], t["width"], t["height"]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with self._lock:
            for src in self._opened:
                src.close()
            self._opened.clear()


class SharedChunkReader(WindowReader):
    """:class:`WindowReader` for windows known in advance that overlap (a prediction's context
    windows): the raster is read in chunks of whole file blocks (about 256 x 1024 pixels, full rows
    for a striped file), each decoded once by whichever reader thread needs it first and shared.
    However much the windows overlap, every source pixel is decoded once; a chunk is dropped as
    soon as the last window that needs it has been read. Windows not in the plan (or read twice)
    are read directly."""

    def __init__(self, path, windows):
        super().__init__(path)
        with rasterio.open(self.path) as src:
            (bh, bw), self.width, self.height = src.block_shapes[0], src.width, src.height
            self.count, self.dtype = src.count, src.dtypes[0]
        self.ch = bh * max(1, -(-256 // bh))
        self.cw = min(self.width, bw * max(1, -(-1024 // bw)))
        self._uses: dict = {}
        for t in windows:
            for k in self._keys(t):
                self._uses[k] = self._uses.get(k, 0) + 1
        self._chunks: dict = {}  # key -> array, or None while a thread reads it, or the exception it raised
        self._cond = threading.Condition()

    def _keys(self, t: dict) -> list[tuple[int, int]]:
        r0, c0 = t["row_off"], t["col_off"]
        r1, c1 = r0 + t["height"], c0 + t["width"]
        return [(i, j) for i in range(r0 // self.ch, (r1 - 1) // self.ch + 1)
                for j in range(c0 // self.cw, (c1 - 1) // self.cw + 1)]

    def _read_chunk(self, key) -> np.ndarray:
        r, c = key[0] * self.ch, key[1] * self.cw
        return read_interleaved(self._src(), Window(c, r, min(self.cw, self.width - c), min(self.ch, self.height - r)))

    def __call__(self, t: dict) -> np.ndarray:
        r0, c0, h, w = t["row_off"], t["col_off"], t["height"], t["width"]
        keys = self._keys(t)
        if (h <= 0 or w <= 0 or r0 < 0 or c0 < 0 or r0 + h > self.height or c0 + w > self.width
                or any(self._uses.get(k, 0) <= 0 for k in keys)):
            return super().__call__(t)
        out = np.empty((h, w, self.count), self.dtype)
        pending = set(keys)
        while pending:
            claimed, ready = None, []
            with self._cond:
                while True:
                    ready = [k for k in pending if self._chunks.get(k) is not None]
                    free = [k for k in pending if k not in self._chunks]
                    if ready or free:
                        break
                    self._cond.wait()
                if not ready:
                    claimed = min(free)
                    self._chunks[claimed] = None
            if claimed is not None:
                try:
                    got = self._read_chunk(claimed)
                except BaseException as e:  # noqa: BLE001 - raised by every thread that needs the chunk
                    got = e
                with self._cond:
                    self._chunks[claimed] = got
                    self._cond.notify_all()
                ready = [claimed]
            for k in ready:
                chunk = self._chunks[k]
                pending.discard(k)
                try:
                    if isinstance(chunk, BaseException):
                        raise chunk
                    cr, cc = k[0] * self.ch, k[1] * self.cw
                    a, b = max(r0, cr), min(r0 + h, cr + chunk.shape[0])
                    x, y = max(c0, cc), min(c0 + w, cc + chunk.shape[1])
                    out[a - r0:b - r0, x - c0:y - c0] = chunk[a - cr:b - cr, x - cc:y - cc]
                finally:
                    with self._cond:
                        self._uses[k] -= 1
                        if self._uses[k] <= 0:
                            self._chunks.pop(k, None)
        return out
