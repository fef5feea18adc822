"""PredictImage: per-tile inference stitched into one georeferenced probability GeoTIFF.

How tiles become one seamless image: every tile **core** (cores partition the image, the
boundary in the middle of each overlap) is taken from a prediction of a window around it, so
each output pixel is predicted exactly once, where it is farthest from a window edge. Two ways
to get the window (``[predict] context``):

- ``auto`` (default): the core plus the network's receptive margin (107 px for depth 4) on every
  side, read from the source image (:func:`context_windows`). Nothing outside that margin can
  change a pixel, so the mosaic equals the whole-image prediction exactly, whatever the
  tiling's overlap; windows are uniform, on the pooling grid, and only padded where the whole
  image is (its own alignment padding at the right/bottom border).
- ``0``: the tile files as they are (the core keeps overlap/2 px of context; exact only if
  the overlap is at least twice the network's reach, fastest). A tile off the ``2**depth``
  pooling grid (the shifted last row/column) is cropped on its leading side onto the grid
  (:func:`plan_tile`), otherwise the pooling sees other pixel groups than in the whole image.

Output ``<workdir>/predictions/<model key>-ctx<context>/<image>.tif``: uint8 ``round(255 p)``, one
band per head channel (footprint[, boundary, contact]), the image's size, transform and CRS,
tiled and compressed, written in row strips through :class:`MosaicWriter` as cores arrive, so
memory stays bounded by a few tile rows whatever the image size. Reading, inference and writing
overlap in three threads; BatchNorm is folded into the convolutions and the dtype policy is
``[predict] precision`` (bf16 on CPUs with AMX/AVX512-BF16 and on GPUs).

``[model] name = oracle``: the same stitching path with the mask tiles (the rasterized labels)
as the "prediction", which must reproduce the ground truth exactly downstream.

``Predict``: the inference-only entry for new imagery and a trained model file:
``luigi --module tasks.predict Predict --model-file m.keras --image-path new.tif --local-scheduler``
(also ``--module pipeline`` once re-exported there).
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import luigi
import numpy as np

from tasks.config import params_key, tiling_key, workdir

log = logging.getLogger("luigi-interface")

# ---------------------------------------------------------------- pure functions


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


def pad_to(arr: np.ndarray, h: int, w: int, values) -> np.ndarray:
    """(H0, W0, C) -> (h, w, C) float32, the new pixels set to ``values`` (one per band)."""
    out = np.empty((h, w, arr.shape[-1]), np.float32)
    out[...] = np.asarray(values, np.float32)
    out[: arr.shape[0], : arr.shape[1]] = arr
    return out


def to_uint8(prob: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(prob, np.float32) * 255.0), 0, 255).astype(np.uint8)


def nodata_pixels(arr: np.ndarray, nodata) -> np.ndarray | None:
    """(H, W) bool: all bands equal nodata; None when there is no nodata value."""
    if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)):
        return None
    return np.all(arr == nodata, axis=-1)


class MosaicWriter:
    """Collects tile cores (any order within a row band, bands top to bottom) and writes
    complete rows to ``dst`` in strips that end on the file's block rows, so no compressed
    block is written twice. Raises if a pixel would be written twice or left out."""

    def __init__(self, dst, block_rows: int = 256):
        self.dst = dst
        self.width, self.height, self.bands = dst.width, dst.height, dst.count
        self.dtype = np.dtype(dst.dtypes[0])
        self.block = max(1, int(block_rows))
        self.next_row = 0
        self.buf = np.zeros((0, self.width, self.bands), self.dtype)
        self.filled = np.zeros(0, np.int64)
        self.max_pending = 0

    def add(self, row: int, col: int, arr: np.ndarray) -> None:
        h, w = arr.shape[:2]
        if row < self.next_row:
            raise ValueError(f"rows {row}..{row + h} were already written (cores out of order or overlapping)")
        if col < 0 or col + w > self.width or row + h > self.height:
            raise ValueError(f"core at ({row}, {col}) size {h}x{w} is outside the {self.height}x{self.width} image")
        end = row + h - self.next_row
        if end > self.buf.shape[0]:
            grow = end - self.buf.shape[0]
            self.buf = np.concatenate([self.buf, np.zeros((grow, self.width, self.bands), self.dtype)])
            self.filled = np.concatenate([self.filled, np.zeros(grow, np.int64)])
        r0 = row - self.next_row
        self.buf[r0:r0 + h, col:col + w] = arr
        self.filled[r0:r0 + h] += w
        if (self.filled[r0:r0 + h] > self.width).any():
            raise ValueError(f"core at ({row}, {col}) overlaps another core")
        self.max_pending = max(self.max_pending, self.buf.shape[0])
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        from rasterio.windows import Window

        full = self.filled == self.width
        complete = int(np.argmin(full)) if not full.all() else len(full)
        end = self.next_row + complete
        if end < self.height:
            end = (end // self.block) * self.block
        n = end - self.next_row
        if n <= 0:
            return
        self.dst.write(np.moveaxis(self.buf[:n], -1, 0), window=Window(0, self.next_row, self.width, n))
        self.buf, self.filled = self.buf[n:], self.filled[n:]
        self.next_row = end

    def close(self) -> None:
        self._flush(final=True)
        if self.next_row != self.height or len(self.filled):
            raise ValueError(f"the tile cores left rows {self.next_row}..{self.height} of the image incomplete")


def output_profile(width, height, bands, crs, transform, compress: str = "zstd", dtype: str = "uint8") -> dict:
    prof = {"driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": dtype, "crs": crs,
            "transform": transform, "nodata": None, "BIGTIFF": "IF_SAFER"}
    if width >= 256 and height >= 256:
        prof.update(tiled=True, blockxsize=256, blockysize=256)
    if compress != "none":
        prof.update(compress=compress, predictor=2 if np.dtype(dtype).kind in "iu" else 3)
        if compress == "zstd":
            prof["zstd_level"] = 1
    if bands > 1:
        prof["interleave"] = "pixel"
    return prof


def _threaded(fn, items, depth: int = 2):
    """Yield ``fn(item)`` for each item, computed one step ahead in a background thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker():
        try:
            for it in items:
                if stop.is_set():
                    return
                q.put(("ok", fn(it)))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(("err", e))
        q.put(("end", None))

    th = threading.Thread(target=worker, daemon=True)
    th.start()
    try:
        while True:
            kind, val = q.get()
            if kind == "end":
                return
            if kind == "err":
                raise val
            yield val
    finally:
        stop.set()
        while th.is_alive():  # unblock a worker waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)


def predict_tiles(tiles, read_fn, predict_fn, dst, batch_size: int = 4, align: int = 1, pad_values=0.0,
                  nodata=None, progress=None) -> dict:
    """Predict every tile and write its core into ``dst`` (an open rasterio dataset).

    ``tiles``: dicts with the tile-index keys (col_off, row_off, width, height, core_*);
    ``read_fn(tile) -> (H, W, bands)`` array; ``predict_fn(batch float32) -> (B, H, W, K)``
    probabilities. A uint8 ``dst`` gets ``round(255 p)``, a float one the probabilities.
    Reading runs one batch ahead and writing one batch behind inference.
    Returns timing and counts.
    """
    tiles = sorted(tiles, key=lambda t: (t["core_row_off"], t["core_col_off"]))
    if not tiles:
        raise ValueError("no tiles to predict")
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
            arrs.append(pad_to(a, *shape, pad_values))
        return batch, np.stack(arrs), masks

    writer = MosaicWriter(dst, block_rows=dst.block_shapes[0][0] if dst.block_shapes else 256)
    as_uint8 = writer.dtype == np.uint8
    t_pred = 0.0
    done = 0
    t0 = time.perf_counter()

    def store(item):
        batch, probs, masks = item
        for j, i in enumerate(batch):
            p = plans[i]
            core = probs[j, p.core_row:p.core_row + p.core_h, p.core_col:p.core_col + p.core_w]
            core = to_uint8(core) if as_uint8 else core.astype(writer.dtype)
            if masks[j] is not None:
                core[masks[j]] = 0
            writer.add(p.img_row, p.img_col, core)

    # inference in this thread; writing in a background thread, one batch behind
    write_q: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def write_loop():
        while True:
            item = write_q.get()
            if item is None:
                return
            if not errors:
                try:
                    store(item)
                except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                    errors.append(e)

    wt = threading.Thread(target=write_loop, daemon=True)
    wt.start()
    try:
        for batch, x, masks in _threaded(load, batches):
            if errors:
                break
            t = time.perf_counter()
            probs = np.asarray(predict_fn(x), np.float32)
            t_pred += time.perf_counter() - t
            if probs.shape[:3] != x.shape[:3]:
                raise ValueError(f"the model returned {probs.shape[1:3]} for {x.shape[1:3]} inputs")
            write_q.put((batch, probs, masks))
            done += len(batch)
            if progress:
                progress(done, len(tiles))
    finally:
        write_q.put(None)
        wt.join()
    if errors:
        raise errors[0]
    writer.close()
    wall = time.perf_counter() - t0
    return {"tiles": len(tiles), "seconds": wall, "predict_seconds": t_pred, "input_shape": shape,
            "misaligned": misaligned, "max_pending_rows": writer.max_pending}


# ---------------------------------------------------------------- model side


def load_predictor(model_path, precision: str = "auto"):
    """(predict_fn, info) for a footprints ``.keras`` file: BatchNorm folded into the convs,
    the dtype policy of ``[predict] precision`` (auto: bf16 where the hardware has it)."""
    from models import inference_model, load_model, model_info
    from tasks.train import jit_setting, resolve_precision

    model = load_model(model_path)
    info = model_info(model)
    policy = resolve_precision(precision)
    fast = inference_model(model, policy)
    if jit_setting() is False:
        fast.jit_compile = False
    info = {**info, "precision": policy}

    def predict_fn(x):
        return np.asarray(fast.predict_on_batch(x))

    predict_fn.model = fast
    return predict_fn, info


def predict_raster(read_tiles, out_path, meta: dict, predict_fn, align: int, pad_values, nodata, band_names,
                   batch_size: int = 4, compress: str = "zstd", progress=None, tags=None) -> dict:
    """Create ``out_path`` (GeoTIFF, uint8) of the image described by ``meta`` (width, height,
    crs, transform) and fill it through :func:`predict_tiles`."""
    import rasterio
    from affine import Affine

    tiles, read_fn = read_tiles
    transform = meta["transform"] if isinstance(meta["transform"], Affine) else Affine(*meta["transform"][:6])
    prof = output_profile(meta["width"], meta["height"], len(band_names), meta["crs"], transform, compress)
    with rasterio.open(out_path, "w", **prof) as dst:
        for i, name in enumerate(band_names, 1):
            dst.set_band_description(i, name)
        dst.update_tags(**(tags or {}), scale="probability = value / 255")
        stats = predict_tiles(tiles, read_fn, predict_fn, dst, batch_size=batch_size, align=align,
                              pad_values=pad_values, nodata=nodata, progress=progress)
    return stats


def check_bands(image_bands: int, info: dict, where) -> None:
    want = info["arch"]["input_bands"]
    if image_bands != want:
        raise ValueError(f"{where}: the image has {image_bands} bands, the model was trained on {want}")


def predict_image(index_path, out_path, model_path=None, mask_index_path=None, batch_size: int = 8,
                  precision: str = "auto", compress: str = "zstd", progress=None, predictor=None,
                  context: int | str = 0, source=None) -> dict:
    """PredictImage's work: the tiles of ``index_path`` (TileImage's index.json) through a model
    file (or, with ``mask_index_path``, the oracle: the mask tiles) into ``out_path``.

    ``context``: 0 predicts each tile file as it is (its core keeps overlap/2 pixels of context);
    N > 0 or ``"auto"`` (the network's receptive margin, exact) reads each core plus N pixels
    around it from the source image (``source``, default the index's ``source``) instead.
    ``predictor``: an already loaded ``(predict_fn, info)`` (benchmarks)."""
    from rasterio.crs import CRS

    from tasks.tiling import read_tile_index
    from tasks.train import read_array

    tpath = Path(index_path)
    index = read_tile_index(tpath)
    tiles = index["tiles"]
    meta = {"width": index["width"], "height": index["height"], "crs": CRS.from_wkt(index["crs_wkt"]),
            "transform": index["transform"]}
    if mask_index_path is not None:
        mpath = Path(mask_index_path)
        mindex = read_tile_index(mpath)
        by_id = {m["tile_id"]: mpath.parent / m["path"] for m in mindex["tiles"]}
        missing = [t["tile_id"] for t in tiles if t["tile_id"] not in by_id]
        if missing:
            raise ValueError(f"{mpath}: no mask for tiles {missing[:5]} of {tpath}")
        names = mindex.get("bands") or (["footprint"] if mindex.get("kind") == "footprint"
                                        else ["footprint", "boundary", "contact"])

        def read_fn(t):
            return read_array(by_id[t["tile_id"]])

        def predict_fn(x):
            return x * np.float32(1 / 255)

        align, pad, nodata = 1, 0.0, None
        tags = {"model": "oracle", "masks": str(mpath)}
    else:
        predict_fn, info = predictor or load_predictor(model_path, precision)
        check_bands(index["count"], info, tpath)
        names = info["classes"]
        align = 2 ** info["arch"]["depth"]
        pad, nodata = info["mean"], index.get("nodata")

        def read_fn(t):
            return read_array(tpath.parent / t["path"])

        tags = {"model": str(model_path), "precision": info["precision"]}
        if context == "auto":
            from models import receptive_margin

            context = receptive_margin(info["arch"]["depth"])
            if (index.get("overlap", 0) // 2 - (align - 1) >= context and index.get("tile_size", 1) % align == 0):
                context = 0  # the tiles' own overlap already gives every core its full context
        if int(context) > 0:
            source = source or index.get("source")
            if not source:
                raise ValueError(f"{tpath}: [predict] context needs the source image, which the index does not name")
            tiles = context_windows(tiles, index["width"], index["height"], int(context), align)
            return _predict_from_source(source, tiles, out_path, meta, predict_fn, align, pad, nodata, names,
                                        batch_size, compress, progress, {**tags, "context": str(context)},
                                        (index["width"], index["height"], index["count"]))
    return predict_raster((tiles, read_fn), out_path, meta, predict_fn, align, pad, nodata, names,
                          batch_size=batch_size, compress=compress, progress=progress, tags=tags)


def _predict_from_source(source, tiles, out_path, meta, predict_fn, align, pad, nodata, names, batch_size,
                         compress, progress, tags, shape) -> dict:
    """Windows read straight from the source raster (one reader thread uses the dataset)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(source) as src:
        if (src.width, src.height, src.count) != shape:
            raise ValueError(f"{source}: {src.width}x{src.height}x{src.count}, but its tile index describes "
                             f"{shape[0]}x{shape[1]}x{shape[2]} (re-run TileImage)")

        def read_fn(t):
            return np.moveaxis(src.read(window=Window(t["col_off"], t["row_off"], t["width"], t["height"])), 0, -1)

        return predict_raster((tiles, read_fn), out_path, meta, predict_fn, align, pad, nodata, names,
                              batch_size=batch_size, compress=compress, progress=progress, tags=tags)


# ---------------------------------------------------------------- the tasks


def parse_context(value) -> int | str:
    """``[predict] context``: ``auto`` or a number of pixels >= 0."""
    v = str(value).strip().lower()
    if v == "auto":
        return "auto"
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"[predict] context must be 'auto' or pixels >= 0, got {value!r}") from None
    if n < 0:
        raise ValueError(f"[predict] context must be 'auto' or pixels >= 0, got {value!r}")
    return n


def prediction_key() -> str:
    """Directory of the predictions: ``<model key>-ctx<context>``, or
    ``oracle-<tiling>-<mask kind>`` (the oracle is exact with any tiling and context)."""
    from tasks.config import model, predict

    if model().name == "oracle":
        from tasks.masks import mask_key

        return f"oracle-{tiling_key()}-{mask_key()}"
    from tasks.train import model_key

    return f"{model_key()}-ctx{parse_context(predict().context)}"


def _progress(task, label):
    t0 = time.time()

    def progress(done, total):
        task.set_progress_percentage(int(100 * done / total))
        if done == total or done % 8 == 0:
            rate = done / max(time.time() - t0, 1e-9)
            task.set_status_message(f"{label}: tile {done}/{total} ({rate:.1f} tiles/s)")

    return progress


class PredictImage(luigi.Task):
    """Probabilities of one image -> ``<workdir>/predictions/<model key>/<image>.tif``."""

    image = luigi.Parameter()

    def requires(self):
        from tasks.config import model
        from tasks.tiling import TileImage

        reqs = {"tiles": TileImage(image=self.image)}
        if model().name == "oracle":
            from tasks.masks import MakeMasks

            reqs["masks"] = MakeMasks(image=self.image)
        else:
            from tasks.train import TrainModel

            reqs["model"] = TrainModel()
        return reqs

    def output(self):
        return luigi.LocalTarget(str(workdir() / "predictions" / prediction_key() / f"{self.image}.tif"))

    def run(self):
        from tasks.config import predict

        cfg = predict()
        inputs = self.input()
        with self.output().temporary_path() as tmp:
            stats = predict_image(inputs["tiles"].path, tmp, model_path=inputs["model"].path if "model" in inputs else None,
                                  mask_index_path=inputs["masks"].path if "masks" in inputs else None,
                                  batch_size=cfg.batch_size, precision=cfg.precision, compress=cfg.compress,
                                  progress=_progress(self, self.image), context=parse_context(cfg.context))
        self.set_status_message(f"{stats['tiles']} tiles in {stats['seconds']:.1f} s "
                                f"({stats['tiles'] / max(stats['seconds'], 1e-9):.2f} tiles/s)")


class ModelFile(luigi.ExternalTask):
    """A trained ``.keras`` model file supplied by the user."""

    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)


def window_tiles(width: int, height: int, tile_size: int, overlap: int) -> list[dict]:
    """The tile grid of :mod:`tasks.tiling` as index-style dicts (no files)."""
    from dataclasses import asdict

    from tasks.tiling import tile_grid

    return [asdict(s) for s in tile_grid(width, height, tile_size, overlap)]


class Predict(luigi.Task):
    """Inference only: a trained model file on a new GeoTIFF, windows read straight from it.

    ``luigi --module tasks.predict Predict --model-file m.keras --image-path new.tif``
    writes ``<workdir>/predictions/file-<hash>/<image stem>.tif`` (or ``--output-path``).
    Tiling defaults to ``[tiling] tile_size/overlap``.
    """

    model_file = luigi.Parameter()
    image_path = luigi.Parameter()
    output_path = luigi.Parameter(default="")
    tile_size = luigi.IntParameter(default=0, description="0: [tiling] tile_size")
    overlap = luigi.IntParameter(default=-1, description="-1: [tiling] overlap")

    def requires(self):
        from tasks.sources import ImageFile

        return {"model": ModelFile(path=self.model_file), "image": ImageFile(path=self.image_path)}

    def grid(self) -> tuple[int, int]:
        from tasks.config import tiling

        return (self.tile_size or tiling().tile_size, self.overlap if self.overlap >= 0 else tiling().overlap)

    def output(self):
        if self.output_path:
            return luigi.LocalTarget(self.output_path)
        from tasks.config import predict

        ts, ov = self.grid()
        key = params_key("file", {"model": str(Path(self.model_file).resolve()), "tile_size": ts, "overlap": ov,
                                  "context": str(parse_context(predict().context))})
        return luigi.LocalTarget(str(workdir() / "predictions" / key / f"{Path(self.image_path).stem}.tif"))

    def run(self):
        from rasterio.windows import Window

        from tasks.config import predict
        from tasks.tiling import open_raster

        cfg = predict()
        ts, ov = self.grid()
        predict_fn, info = load_predictor(self.model_file, cfg.precision)
        Path(self.output().path).parent.mkdir(parents=True, exist_ok=True)
        with open_raster(self.image_path) as src:
            check_bands(src.count, info, self.image_path)
            if src.dtypes[0] != info.get("data", {}).get("dtype", src.dtypes[0]):
                log.warning("%s: %s pixels, the model was trained on %s", self.image_path, src.dtypes[0],
                            info["data"]["dtype"])
            align = 2 ** info["arch"]["depth"]
            tiles = window_tiles(src.width, src.height, ts, ov)
            context = parse_context(cfg.context)
            if context == "auto":
                from models import receptive_margin

                context = receptive_margin(info["arch"]["depth"])
            if context > 0:
                tiles = context_windows(tiles, src.width, src.height, context, align)
            meta = {"width": src.width, "height": src.height, "crs": src.crs, "transform": src.transform}
            read_fn = lambda t: np.moveaxis(  # noqa: E731 - one reader thread uses src
                src.read(window=Window(t["col_off"], t["row_off"], t["width"], t["height"])), 0, -1)
            with self.output().temporary_path() as tmp:
                predict_raster((tiles, read_fn), tmp, meta, predict_fn, align, info["mean"],
                               src.nodata, info["classes"], batch_size=cfg.batch_size, compress=cfg.compress,
                               progress=_progress(self, Path(self.image_path).name),
                               tags={"model": str(self.model_file), "precision": info["precision"],
                                     "context": str(context)})


def predict_whole(predict_fn, image: np.ndarray, align: int, pad_values) -> np.ndarray:
    """Reference: the image (H, W, bands) predicted in one piece (padded at the bottom/right to
    ``align``, like the tiles). Memory grows with the image: for checks and small images."""
    h, w = image.shape[:2]
    H, W = math.ceil(h / align) * align, math.ceil(w / align) * align
    out = np.asarray(predict_fn(pad_to(image, H, W, pad_values)[None]), np.float32)[0]
    return out[:h, :w]
