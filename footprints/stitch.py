"""Tile plans and the mosaic writer: per-tile predictions stitched into one raster.

How tiles become one seamless image: every tile **core** (cores partition the image, the
boundary in the middle of each overlap) is taken from a prediction of a window around it, so
each output pixel is predicted exactly once, where it is farthest from a window edge.
:func:`context_windows` grows every core by the network's receptive margin (windows uniform and
on the pooling grid), so the mosaic equals the whole-image prediction whatever the tiling's
overlap; :func:`group_cores` first merges neighbouring cores into blocks, so that margin is a small
share of each (large) window; a tile off the ``2**depth`` pooling grid (the shifted last row/column) is cropped on its
leading side onto the grid (:func:`plan_tile`), otherwise the pooling sees other pixel groups than
in the whole image.

:func:`predict_tiles` takes any ``predict_fn(batch) -> probabilities`` (a Keras model, the oracle,
a test function) and writes cores through :class:`MosaicWriter` in row strips as they arrive, so
memory stays bounded by a few tile rows whatever the image size. Reading (several threads),
inference, quantizing to uint8 and writing overlap. The batch keeps the image's dtype (uint8
imagery reaches the network as uint8: 4x less to copy, and a GPU converts it on the device). No
Keras here: the model side is ``models.inference``.
"""
from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilePlan:
    """Where a tile's model input comes from and which part of the output is kept.

    Tile-relative: the input is ``tile[in_row:, in_col:]`` padded at the bottom/right to the
    common input shape; the kept core is ``output[core_row:core_row+core_h, core_col:...]``,
    written to the image at ``(img_row, img_col)``.
    """

    in_row: int
    in_col: int
    core_row: int
    core_col: int
    core_h: int
    core_w: int
    img_row: int
    img_col: int
    aligned: bool


def plan_tile(tile: dict, align: int) -> TilePlan:
    """Crop the tile's leading edge to the image's ``align`` grid when the core allows it."""
    aligned = True

    def lead(off, core_off):
        nonlocal aligned
        c = (-off) % align
        if off + c > core_off:  # would cut into the core: keep the tile as it is
            aligned = False
            return 0
        return c

    in_col = lead(tile["col_off"], tile["core_col_off"])
    in_row = lead(tile["row_off"], tile["core_row_off"])
    return TilePlan(in_row, in_col, tile["core_row_off"] - tile["row_off"] - in_row,
                    tile["core_col_off"] - tile["col_off"] - in_col, tile["core_height"], tile["core_width"],
                    tile["core_row_off"], tile["core_col_off"], aligned)


def input_shape(tiles, align: int) -> tuple[int, int]:
    """One (H, W) for every model input: the largest tile, rounded up to ``align``."""
    h = max(t["height"] for t in tiles)
    w = max(t["width"] for t in tiles)
    return math.ceil(h / align) * align, math.ceil(w / align) * align


def _runs(cores: list[tuple[int, int]], max_extent: int, whole: bool = False) -> list[tuple[int, int]]:
    """Consecutive (offset, size) cores of one axis merged into ``k`` runs of nearly equal extent,
    ``k`` as small as keeps every run within ``max_extent`` (a core larger than that stays alone);
    ``whole``: the axis is no longer than one window, so one run covers it."""
    cores = sorted(cores)
    if whole:
        return [(cores[0][0], sum(s for _, s in cores))]
    total = sum(s for _, s in cores)
    for k in range(max(1, math.ceil(total / max(max_extent, 1))), len(cores) + 1):
        ends = [total * (i + 1) / k for i in range(k)]
        out: list[list[int]] = []
        acc, g = 0, 0
        for off, size in cores:
            # start a new run when this core's middle lies past the current run's target end
            if out and g < k - 1 and acc + size / 2 > ends[g]:
                g += 1
                out.append([off, size])
            elif out:
                out[-1][1] += size
            else:
                out.append([off, size])
            acc += size
        if all(size <= max_extent for _, size in out) or k == len(cores):
            return [(a, b) for a, b in out]
    return cores


def group_cores(tiles, max_core: int, width: int | None = None, height: int | None = None,
                window: int | None = None) -> list[dict]:
    """Tile cores merged into rectangular blocks of neighbouring cores, at most ``max_core``
    pixels a side and of nearly equal size: one model window then serves many cores, so the
    receptive margin that every window needs around its core is a small share of the computation.
    An axis no longer than ``window`` is one block (the window is the whole axis, no margin).
    Cores form a grid (one partition per axis); anything else is returned as it is."""
    xs = sorted({(t["core_col_off"], t["core_width"]) for t in tiles})
    ys = sorted({(t["core_row_off"], t["core_height"]) for t in tiles})
    if len(xs) * len(ys) != len(tiles) or max_core <= 0:
        return list(tiles)
    gx = _runs(xs, max_core, whole=bool(window and width and width <= window))
    gy = _runs(ys, max_core, whole=bool(window and height and height <= window))
    if len(gx) == len(xs) and len(gy) == len(ys):
        return list(tiles)
    return [{"tile_id": f"block_{cx}_{cy}", "col_off": cx, "row_off": cy, "width": w, "height": h,
             "core_col_off": cx, "core_row_off": cy, "core_width": w, "core_height": h}
            for cy, h in gy for cx, w in gx]


def context_windows(tiles, width: int, height: int, context: int, align: int) -> list[dict]:
    """Inference windows that give every tile core at least ``context`` pixels of real image on
    each side (less only at the image border), so that with ``context`` >= the network's reach
    the stitched result equals the whole-image prediction whatever the tiling's overlap.

    All windows have one size (a multiple of ``align``) and start on the ``align`` grid; a window
    that would pass the image's last ``align`` block is moved back inside, so the only padding
    any input gets is the whole image's own alignment padding at the right/bottom border. Each
    dict keeps the tile's id and core; its window (col_off, row_off, width, height) is new."""
    def axis(offs, sizes, n):
        n_pad = math.ceil(n / align) * align
        size = min(n_pad, math.ceil((max(sizes) + 2 * context + align - 1) / align) * align)
        out = []
        for off in offs:
            start = max(0, (off - context) // align * align)
            start = max(0, min(start, n_pad - size))
            out.append((start, min(size, n - start)))
        return out

    xs = axis([t["core_col_off"] for t in tiles], [t["core_width"] for t in tiles], width)
    ys = axis([t["core_row_off"] for t in tiles], [t["core_height"] for t in tiles], height)
    return [{**t, "col_off": x[0], "width": x[1], "row_off": y[0], "height": y[1]} for t, x, y in zip(tiles, xs, ys)]


def fill_values(values, dtype) -> np.ndarray:
    """Pad values as ``dtype``: one per band (or one for all), rounded and clipped to the range
    of an integer dtype (the band means of 8-bit imagery become whole grey levels)."""
    dtype = np.dtype(dtype)
    v = np.asarray(values, np.float64)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        v = np.clip(np.rint(v), info.min, info.max)
    return v.astype(dtype)


def place(out: np.ndarray, arr: np.ndarray, fill) -> None:
    """``arr`` (H0, W0, C) into the top-left of ``out`` (h, w, C); the rest set to ``fill``."""
    h, w = arr.shape[:2]
    out[:h, :w] = arr
    if h < out.shape[0]:
        out[h:] = fill
    if w < out.shape[1]:
        out[:h, w:] = fill


def pad_to(arr: np.ndarray, h: int, w: int, values) -> np.ndarray:
    """(H0, W0, C) -> (h, w, C) in ``arr``'s dtype, the new pixels set to ``values`` (one per
    band; see :func:`fill_values`)."""
    out = np.empty((h, w, arr.shape[-1]), arr.dtype)
    place(out, arr, fill_values(values, arr.dtype))
    return out


def to_uint8(prob: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """round(255 p), clipped to 0..255: two float32 passes over ``scratch`` (a reusable float32
    buffer of at least ``prob.size`` values) and a third that rounds straight into ``out``
    (uint8, ``prob``'s shape; keep it contiguous: rounding into a strided view is 3x slower)."""
    prob = np.asarray(prob)
    if scratch is None or scratch.size < prob.size:
        scratch = np.empty(prob.size, np.float32)
    t = scratch.reshape(-1)[:prob.size].reshape(prob.shape)
    np.multiply(prob, np.float32(255.0), out=t, dtype=np.float32)
    np.clip(t, 0, 255, out=t)
    if out is None:
        out = np.empty(prob.shape, np.uint8)
    np.rint(t, out=out, casting="unsafe")
    return out


def to_uint8_planar(prob: np.ndarray, out: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """:func:`to_uint8` of (h, w, K) probabilities as (K, h, w) (the layout the mosaic writes),
    into ``out`` when given (rows may be strided, e.g. a strip of :class:`MosaicWriter`); the
    first pass reads across the bands, the others run along rows."""
    return to_uint8(np.moveaxis(np.asarray(prob), -1, 0), out=out, scratch=scratch)


def nodata_pixels(arr: np.ndarray, nodata) -> np.ndarray | None:
    """(H, W) bool: all bands equal nodata; None when there is no nodata value."""
    if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)):
        return None
    return np.all(arr == nodata, axis=-1)


class MosaicWriter:
    """Collects tile cores (any order within a row band, bands top to bottom) and writes
    complete strips of rows to ``dst``, each a whole number of the file's block rows, so no
    compressed block is written twice. Raises if a pixel would be written twice or left out.

    Rows wait in band-sequential strips of ``strip_rows`` (block rows, at least 64 rows),
    allocated as cores reach them and dropped once written; GDAL gets each strip in the layout
    of a band-interleaved file (:func:`output_profile`). Thread-safe: :meth:`regions` hands
    out the strip slices a core goes to, so several threads can quantize cores straight into
    them, and :meth:`commit` writes what is complete."""

    def __init__(self, dst, block_rows: int = 256):
        self.dst = dst
        self.width, self.height, self.bands = dst.width, dst.height, dst.count
        self.dtype = np.dtype(dst.dtypes[0])
        block = max(1, int(block_rows))
        self.strip_rows = block * max(1, -(-64 // block))
        self.next_row = 0
        self.strips: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # first row -> (bands x rows x width, filled per row)
        self.max_pending = 0
        self._lock = threading.Lock()  # cores are stitched from several threads; GDAL writes one at a time

    def _strip(self, r0: int) -> tuple[np.ndarray, np.ndarray]:
        got = self.strips.get(r0)
        if got is None:
            n = min(self.strip_rows, self.height - r0)
            got = self.strips[r0] = (np.zeros((self.bands, n, self.width), self.dtype), np.zeros(n, np.int64))
        return got

    def add(self, row: int, col: int, arr: np.ndarray) -> None:
        """A core as (h, w[, bands])."""
        arr = np.asarray(arr)
        self.add_planar(row, col, arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0))

    def add_planar(self, row: int, col: int, arr: np.ndarray) -> None:
        """A core as (bands, h, w): copied with whole rows, no transposing."""
        h, w = arr.shape[1:]
        for a, b, view in self.regions(row, col, h, w):
            view[...] = arr[:, a:b]
        self.commit(row, col, h, w)

    def regions(self, row: int, col: int, h: int, w: int) -> list[tuple[int, int, np.ndarray]]:
        """Where the core of ``h`` x ``w`` pixels at (``row``, ``col``) goes: ``(first, end, view)``
        for each strip it spans, ``view`` the (bands, end - first, w) slice of the strip for core
        rows first..end. Fill every view (any thread), then :meth:`commit` the core."""
        with self._lock:
            if row < self.next_row:
                raise ValueError(f"rows {row}..{row + h} were already written (cores out of order or overlapping)")
            if col < 0 or col + w > self.width or row + h > self.height:
                raise ValueError(f"core at ({row}, {col}) size {h}x{w} is outside the {self.height}x{self.width} image")
            out = []
            for a, b, r0 in self._pieces(row, h):
                buf, _ = self._strip(r0)
                out.append((a - row, b - row, buf[:, a - r0:b - r0, col:col + w]))
            return out

    def commit(self, row: int, col: int, h: int, w: int) -> None:
        """The core's views are filled: count its pixels and write every strip now complete."""
        with self._lock:
            for a, b, r0 in self._pieces(row, h):
                if r0 not in self.strips:
                    raise ValueError(f"core at ({row}, {col}) overlaps another core")
                filled = self.strips[r0][1]
                filled[a - r0:b - r0] += w
                if (filled[a - r0:b - r0] > self.width).any():
                    raise ValueError(f"core at ({row}, {col}) overlaps another core")
            self.max_pending = max(self.max_pending, sum(len(f) for _, f in self.strips.values()))
            self._flush()

    def _pieces(self, row: int, h: int):
        a = row
        while a < row + h:
            r0 = a // self.strip_rows * self.strip_rows
            b = min(row + h, r0 + self.strip_rows, self.height)
            yield a, b, r0
            a = b

    def _flush(self) -> None:
        while self.next_row in self.strips and (self.strips[self.next_row][1] == self.width).all():
            buf, filled = self.strips.pop(self.next_row)
            self.dst.write(buf, window=Window(0, self.next_row, self.width, len(filled)))
            self.next_row += len(filled)

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self.next_row != self.height or self.strips:
                raise ValueError(f"the tile cores left rows {self.next_row}..{self.height} of the image incomplete")


def output_profile(width, height, bands, crs, transform, compress: str = "zstd", dtype: str = "uint8") -> dict:
    """The probability GeoTIFF: tiled 256², band-interleaved, ``compress`` (ZSTD level 1 by
    default). Band-interleaved because GDAL then writes (and readers of one band read) each
    band's blocks straight from/into band-sequential arrays; a pixel-interleaved file costs
    2.5x the CPU to write. Integer outputs get no predictor: on uint8 probabilities (large flat
    areas) it saves next to nothing and costs a third of the writing. Blocks are compressed by
    GDAL threads, one per CPU beyond two (up to 6); on a 2-core machine the stitching thread
    that completes a strip compresses it."""
    prof = {"driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": dtype, "crs": crs,
            "transform": transform, "nodata": None, "BIGTIFF": "IF_SAFER"}
    if width >= 256 and height >= 256:
        prof.update(tiled=True, blockxsize=256, blockysize=256)
    if compress != "none":
        prof.update(compress=compress, predictor=1 if np.dtype(dtype).kind in "iu" else 3)
        if compress == "zstd":
            prof["zstd_level"] = 1
    if bands > 1:
        prof["interleave"] = "band"
    threads = default_workers() - 2
    if threads > 1:
        prof["num_threads"] = str(threads)  # GDAL compresses the blocks of a strip in parallel
    return prof


def _threaded(fn, items, depth: int = 2, workers: int = 1, context=None):
    """Yield ``fn(item)`` for each item, in order, computed ahead by ``workers`` background
    threads (at most ``depth`` results waiting), each running inside ``context()`` when given.
    numpy, GDAL and the inference runtimes release the GIL, so the threads decode and convert
    in parallel."""
    items = list(items)
    workers = max(1, min(workers, len(items) or 1))
    depth = max(depth, workers)
    results: dict = {}
    cond = threading.Condition()
    state = {"next": 0, "emitted": 0, "stop": False}

    def worker():
        if context is None:
            return work()
        with context():
            return work()

    def work():
        while True:
            with cond:
                while not state["stop"] and state["next"] < len(items) and state["next"] - state["emitted"] >= depth:
                    cond.wait()
                if state["stop"] or state["next"] >= len(items):
                    return
                i = state["next"]
                state["next"] += 1
            try:
                r = ("ok", fn(items[i]))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                r = ("err", e)
            with cond:
                results[i] = r
                cond.notify_all()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for th in threads:
        th.start()
    try:
        for i in range(len(items)):
            with cond:
                while i not in results:
                    cond.wait()
                kind, val = results.pop(i)
                state["emitted"] = i + 1
                cond.notify_all()
            if kind == "err":
                raise val
            yield val
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        for th in threads:
            th.join()


def default_workers() -> int:
    """Threads for reading tiles and for quantizing cores: the CPUs this process may run on, at
    least 2 (reading overlaps inference even on one core) and at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 2
    return max(2, min(8, n))


def predict_tiles(tiles, read_fn, predict_fn, dst, batch_size: int = 4, align: int = 1, pad_values=0.0,
                  nodata=None, progress=None, readers: int | None = None, reader_context=None) -> dict:
    """Predict every tile and write its core into ``dst`` (an open rasterio dataset).

    ``tiles``: dicts with the tile-index keys (col_off, row_off, width, height, core_*);
    ``read_fn(tile) -> (H, W, bands)`` array; ``predict_fn(batch) -> (B, H, W, K)``
    probabilities, float or already quantized to uint8 ``round(255 p)`` (the predictor's own
    output: :func:`models.unet.quantized`). The batch keeps the dtype ``read_fn`` returns (uint8 for 8-bit imagery: the
    network converts, on its own device), padded with ``pad_values`` (:func:`fill_values`).
    A uint8 ``dst`` gets ``round(255 p)``, a float one the probabilities.

    Three stages overlap: ``readers`` threads (default :func:`default_workers`) read and
    assemble batches ahead (``read_fn`` must be thread-safe; each reader thread runs inside
    ``reader_context()`` when given, e.g. a GDAL environment), this thread runs ``predict_fn``,
    and a pool of ``readers // 2`` threads quantizes each prediction's cores straight into the
    :class:`MosaicWriter`'s strips and writes the complete ones. numpy, GDAL and the inference
    runtimes release the GIL.
    Returns timing and counts.
    """
    tiles = sorted(tiles, key=lambda t: (t["core_row_off"], t["core_col_off"]))
    if not tiles:
        raise ValueError("no tiles to predict")
    readers = readers or default_workers()
    plans = [plan_tile(t, align) for t in tiles]
    misaligned = sum(not p.aligned for p in plans)
    if misaligned:
        log.warning("%d tiles are off the %d px pooling grid and too close to their core to be cropped onto "
                    "it; raise [tiling] overlap for seamless output", misaligned, align)
    shape = input_shape(tiles, align)
    batches = [list(range(i, min(i + batch_size, len(tiles)))) for i in range(0, len(tiles), batch_size)]

    def load(batch):
        arrs, masks = [], []
        for i in batch:
            a = np.asarray(read_fn(tiles[i]))
            if a.ndim == 2:
                a = a[..., None]
            if a.shape[:2] != (tiles[i]["height"], tiles[i]["width"]):
                raise ValueError(f"tile {tiles[i].get('tile_id', i)}: read {a.shape[:2]}, index says "
                                 f"{(tiles[i]['height'], tiles[i]['width'])}")
            p = plans[i]
            a = a[p.in_row:, p.in_col:]
            nd = nodata_pixels(a, nodata)
            masks.append(None if nd is None else nd[p.core_row:p.core_row + p.core_h, p.core_col:p.core_col + p.core_w])
            arrs.append(a)
        if len(arrs) == 1 and arrs[0].shape[:2] == shape and arrs[0].flags.c_contiguous:
            return batch, arrs[0][None], masks  # one window of the full input shape: no copy
        x = np.empty((len(arrs), *shape, arrs[0].shape[-1]), arrs[0].dtype)
        fill = fill_values(pad_values, x.dtype)
        for j, a in enumerate(arrs):
            place(x[j], a, fill)
        return batch, x, masks

    writer = MosaicWriter(dst, block_rows=dst.block_shapes[0][0] if dst.block_shapes else 256)
    as_uint8 = writer.dtype == np.uint8
    local = threading.local()

    def stitch(batch, probs, masks):
        """Quantize the batch's cores straight into the writer's strips; write what is complete."""
        for j, i in enumerate(batch):
            p = plans[i]
            core = probs[j, p.core_row:p.core_row + p.core_h, p.core_col:p.core_col + p.core_w]
            for a, b, view in writer.regions(p.img_row, p.img_col, p.core_h, p.core_w):
                if probs.dtype == np.uint8:  # round(255 p) already (quantized where the network ran)
                    planar = np.moveaxis(core[a:b], -1, 0)
                    view[...] = planar if as_uint8 else planar * np.float32(1 / 255)
                elif as_uint8:
                    local.scratch = getattr(local, "scratch", None)
                    if local.scratch is None or local.scratch.size < view.size:
                        local.scratch = np.empty(core.size, np.float32)
                    to_uint8_planar(core[a:b], out=view, scratch=local.scratch)
                else:
                    view[...] = np.moveaxis(core[a:b], -1, 0)
                if masks[j] is not None:
                    view[:, masks[j][a:b]] = 0
            writer.commit(p.img_row, p.img_col, p.core_h, p.core_w)

    t_pred = 0.0
    done = 0
    t0 = time.perf_counter()
    # inference in this thread; quantizing, stitching and writing in a pool, a few batches behind
    workers = max(1, readers // 2)
    post = ThreadPoolExecutor(workers, thread_name_prefix="stitch")
    pending: collections.deque = collections.deque()
    try:
        for batch, x, masks in _threaded(load, batches, depth=readers + 1, workers=readers, context=reader_context):
            t = time.perf_counter()
            probs = np.asarray(predict_fn(x))
            t_pred += time.perf_counter() - t
            if probs.dtype != np.uint8:
                probs = probs.astype(np.float32, copy=False)
            if probs.shape[:3] != x.shape[:3]:
                raise ValueError(f"the model returned {probs.shape[1:3]} for {x.shape[1:3]} inputs")
            pending.append(post.submit(stitch, batch, probs, masks))
            while pending and (len(pending) > workers + 1 or pending[0].done()):
                pending.popleft().result()  # raises a stitching error here
            done += len(batch)
            if progress:
                progress(done, len(tiles))
        while pending:
            pending.popleft().result()
    finally:
        post.shutdown(wait=True, cancel_futures=True)
    writer.close()
    wall = time.perf_counter() - t0
    return {"tiles": len(tiles), "seconds": wall, "predict_seconds": t_pred, "input_shape": shape,
            "misaligned": misaligned, "max_pending_rows": writer.max_pending, "readers": readers}
