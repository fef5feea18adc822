"""The predictor: a trained ``.keras`` file applied tile by tile, stitched into one GeoTIFF.

Two ways to get each tile core's input window (``[predict] context``, see
:mod:`footprints.stitch`):

- ``auto`` (default): the core plus the network's receptive margin (107 px for depth 4) on every
  side, read from the source image (:func:`footprints.stitch.context_windows`). Nothing outside
  that margin can change a pixel, so the mosaic equals the whole-image prediction exactly,
  whatever the tiling's overlap; windows are uniform, on the pooling grid, and only padded where
  the whole image is (its own alignment padding at the right/bottom border).
- ``0``: the tile files as they are (the core keeps overlap/2 px of context; exact only if the
  overlap is at least twice the network's reach, fastest).

Output: uint8 ``round(255 p)``, one band per head channel (footprint[, boundary, contact]), the
image's size, transform and CRS, tiled and compressed. BatchNorm is folded into the convolutions
and the dtype policy is ``[predict] precision`` (auto: bf16 on GPUs, and on CPUs with
AMX/AVX512-BF16 for models trained in bf16: :func:`predict_precision`).

The oracle (``mask_index_path``): the same stitching path with the mask tiles (the rasterized
labels) as the "prediction", which must reproduce the ground truth exactly downstream.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS

from footprints.errors import InputError
from footprints.geo import as_affine
from footprints.polygonize import probability_values
from footprints.raster import SharedChunkReader, open_raster, pixel_env, read_array
from footprints.stitch import context_windows, group_cores, output_profile, pad_to, predict_tiles
from footprints.tiling import read_tile_index, tile_grid
from models.engines import engine_fn, resolve_engine
from models.hardware import gpu_devices, jit_setting, resolve_precision, tune_malloc
from models.io import load_model
from models.unet import arch_alignment, arch_margin, inference_model, model_info, quantized, test_time_augmented

log = logging.getLogger(__name__)


def load_predictor(model_path, precision: str = "auto", engine: str = "keras", tta: int = 1):
    """(predict_fn, info) for a footprints ``.keras`` file: BatchNorm folded into the convs,
    the dtype policy of ``[predict] precision`` (auto: bf16 where the hardware has it), averaged
    over ``tta`` symmetries of every window (:func:`models.unet.test_time_augmented`), run by
    ``engine`` (:mod:`models.engines`; ``info["engine"]`` says which one runs)."""
    tune_malloc()
    model = load_model(model_path)
    info = model_info(model)
    policy = predict_precision(precision, info)
    base = inference_model(model, policy)
    fast = test_time_augmented(base, tta)
    net = quantized(fast)  # uint8 round(255 p) where the network runs
    if jit_setting() is False:
        fast.jit_compile = net.jit_compile = False
    chosen = resolve_engine(engine, policy)
    fn = None
    if chosen != "keras":
        try:
            fn = engine_fn(chosen, base, model_path, tta)
        except (ImportError, OSError, RuntimeError, ValueError, TypeError) as e:
            log.warning("%s: the %s engine cannot run this model (%s: %s); using Keras instead",
                        model_path, chosen, type(e).__name__, str(e)[:300])
            chosen = "keras"
    info = {**info, "precision": policy, "engine": chosen, "tta": tta}

    first = [True]

    def predict_fn(x):
        """uint8 ``round(255 p)`` (quantized where the network runs)."""
        out = np.asarray(fn(x) if fn is not None else net.predict_on_batch(x))
        if first[0]:  # TensorFlow resets glibc's trim threshold once its kernels run
            first[0] = False
            tune_malloc()
        return out

    predict_fn.model = fast
    return predict_fn, info


def predict_precision(requested: str, info: dict) -> str:
    """``[predict] precision`` for a model: ``auto`` is :func:`resolve_precision`'s choice (bf16 on
    GPUs and on CPUs with AMX/AVX512-BF16), except that on a CPU a model trained in float32 runs in
    float32: bf16 moves its probabilities by a few 255ths, enough to cost the demo's test split
    1 point of F1 (0.914 -> 0.904 on a Xeon with AMX)."""
    if requested == "auto" and info.get("precision") == "float32" and not gpu_devices():
        return "float32"
    return resolve_precision(requested)


def predict_raster(read_tiles, out_path, meta: dict, predict_fn, align: int, pad_values, nodata, band_names,
                   batch_size: int = 4, compress: str = "zstd", progress=None, tags=None, reader_context=None) -> dict:
    """Create ``out_path`` (GeoTIFF, uint8) of the image described by ``meta`` (width, height,
    crs, transform) and fill it through :func:`predict_tiles` (``reader_context``: see there)."""
    tiles, read_fn = read_tiles
    prof = output_profile(meta["width"], meta["height"], len(band_names), meta["crs"], as_affine(meta["transform"]),
                          compress)
    with rasterio.open(out_path, "w", **prof) as dst:
        for i, name in enumerate(band_names, 1):
            dst.set_band_description(i, name)
        dst.update_tags(**(tags or {}), scale="probability = value / 255")
        stats = predict_tiles(tiles, read_fn, predict_fn, dst, batch_size=batch_size, align=align,
                              pad_values=pad_values, nodata=nodata, progress=progress, reader_context=reader_context)
    return stats


def oracle_predictor(tiles, mask_index_path, index_path=None):
    """The oracle: ``(read_fn, predict_fn, band names)`` whose "prediction" of a tile is its mask
    tile (the rasterized labels, 0/255 -> 0/1) from ``mask_index_path`` (MakeMasks' index)."""
    mpath = Path(mask_index_path)
    mindex = read_tile_index(mpath)
    by_id = {m["tile_id"]: mpath.parent / m["path"] for m in mindex["tiles"]}
    missing = [t["tile_id"] for t in tiles if t["tile_id"] not in by_id]
    if missing:
        raise InputError(mpath, f"no mask for tiles {missing[:5]} of {index_path}")
    names = mindex.get("bands") or (["footprint"] if mindex.get("kind") == "footprint"
                                    else ["footprint", "boundary", "contact"])

    def read_fn(t):
        return read_array(by_id[t["tile_id"]])

    def predict_fn(x):
        return x * np.float32(1 / 255)

    return read_fn, predict_fn, names


def check_bands(image_bands: int, info: dict, where) -> None:
    want = info["arch"]["input_bands"]
    if image_bands != want:
        raise InputError(where, f"the image has {image_bands} bands, the model was trained on {want}")


# the pixel budget of one inference batch: [predict] batch_size counts windows of this many pixels
BATCH_UNIT_PX = 512 * 512


def plan_windows(tiles, width: int, height: int, context: int, align: int, window: int, batch_size: int):
    """Context windows for ``tiles`` (``[predict] context`` > 0): neighbouring cores are merged
    into blocks so that each window is at most about ``window`` pixels a side (0: one window per
    tile core), and the batch shrinks so that batch x window area stays ``batch_size`` x 512².
    Returns ``(windows, batch size)``; the output is the same whatever ``window`` is."""
    if window > 0:
        max_core = (window - 2 * context) // align * align
        tiles = group_cores(tiles, max_core, width, height, window)
    wins = context_windows(tiles, width, height, context, align)
    area = max(w["width"] * w["height"] for w in wins)
    return wins, max(1, min(batch_size, batch_size * BATCH_UNIT_PX // area))


def predict_image(index_path, out_path, model_path=None, mask_index_path=None, batch_size: int = 8,
                  precision: str = "auto", compress: str = "zstd", progress=None, predictor=None,
                  context: int | str = 0, source=None, window: int = 0, engine: str = "keras", tta: int = 1) -> dict:
    """PredictImage's work: the tiles of ``index_path`` (TileImage's index.json) through a model
    file (or, with ``mask_index_path``, the oracle: the mask tiles) into ``out_path``.

    ``context``: 0 predicts each tile file as it is (its core keeps overlap/2 pixels of context);
    N > 0 or ``"auto"`` (the network's receptive margin, exact) reads each core plus N pixels
    around it from the source image (``source``, default the index's ``source``) instead.
    ``window``: with context, merge neighbouring cores into windows of about this many pixels a
    side (:func:`plan_windows`; 0: one window per tile).
    ``predictor``: an already loaded ``(predict_fn, info)`` (benchmarks)."""
    tpath = Path(index_path)
    index = read_tile_index(tpath)
    tiles = index["tiles"]
    meta = {"width": index["width"], "height": index["height"], "crs": CRS.from_wkt(index["crs_wkt"]),
            "transform": index["transform"]}
    if mask_index_path is not None:
        read_fn, predict_fn, names = oracle_predictor(tiles, mask_index_path, tpath)
        align, pad, nodata = 1, 0.0, None
        tags = {"model": "oracle", "masks": str(Path(mask_index_path))}
    else:
        predict_fn, info = predictor or load_predictor(model_path, precision, engine, tta)
        check_bands(index["count"], info, tpath)
        names = info["classes"]
        align = arch_alignment(info["arch"])
        pad, nodata = info["mean"], index.get("nodata")

        def read_fn(t):
            return read_array(tpath.parent / t["path"])

        tags = {"model": str(model_path), "precision": info["precision"], "engine": info["engine"],
                "tta": str(info.get("tta", 1))}
        if context == "auto":
            context = arch_margin(info["arch"])
            if (index.get("overlap", 0) // 2 - (align - 1) >= context and index.get("tile_size", 1) % align == 0):
                context = 0  # the tiles' own overlap already gives every core its full context
        if int(context) > 0:
            source = source or index.get("source")
            if not source:
                raise InputError(tpath, "[predict] context needs the source image, which the index does not name")
            tiles, batch_size = plan_windows(tiles, index["width"], index["height"], int(context), align, window,
                                             batch_size)
            return _predict_from_source(source, tiles, out_path, meta, predict_fn, align, pad, nodata, names,
                                        batch_size, compress, progress, {**tags, "context": str(context)},
                                        (index["width"], index["height"], index["count"]))
    return predict_raster((tiles, read_fn), out_path, meta, predict_fn, align, pad, nodata, names,
                          batch_size=batch_size, compress=compress, progress=progress, tags=tags,
                          reader_context=pixel_env)  # tile files: pixels only (read_array)


def _predict_from_source(source, tiles, out_path, meta, predict_fn, align, pad, nodata, names, batch_size,
                         compress, progress, tags, shape) -> dict:
    """Windows read straight from the source raster (a dataset handle per reader thread; the
    overlapping windows share decoded chunks, :class:`footprints.raster.SharedChunkReader`)."""
    with open_raster(source) as src:
        if (src.width, src.height, src.count) != shape:
            raise InputError(source, f"{src.width}x{src.height}x{src.count}, but its tile index describes "
                             f"{shape[0]}x{shape[1]}x{shape[2]} (re-run TileImage)")
    with SharedChunkReader(source, tiles) as read_fn:
        return predict_raster((tiles, read_fn), out_path, meta, predict_fn, align, pad, nodata, names,
                              batch_size=batch_size, compress=compress, progress=progress, tags=tags)


def window_tiles(width: int, height: int, tile_size: int, overlap: int) -> list[dict]:
    """The tile grid of :mod:`footprints.tiling` as index-style dicts (no files)."""
    return [asdict(s) for s in tile_grid(width, height, tile_size, overlap)]


def predict_file(model_file, image_path, out_path, tile_size: int, overlap: int, context: int | str = "auto",
                 batch_size: int = 8, precision: str = "auto", compress: str = "zstd", progress=None,
                 window: int = 0, engine: str = "keras", predictor=None, tta: int = 1) -> dict:
    """Inference only: a trained model file on a GeoTIFF, windows read straight from it (the
    ``Predict`` task's work, and the prediction service's). The grid is ``tile_size``/``overlap``;
    ``context`` as in :func:`predict_image`. ``predictor``: an already loaded ``(predict_fn,
    info)`` of ``model_file`` (the service loads it once)."""
    predict_fn, info = predictor or load_predictor(model_file, precision, engine, tta)
    with open_raster(image_path) as src:
        check_bands(src.count, info, image_path)
        if src.dtypes[0] != info.get("data", {}).get("dtype", src.dtypes[0]):
            log.warning("%s: %s pixels, the model was trained on %s", image_path, src.dtypes[0],
                        info["data"]["dtype"])
        align = arch_alignment(info["arch"])
        tiles = window_tiles(src.width, src.height, tile_size, overlap)
        if context == "auto":
            context = arch_margin(info["arch"])
        if context > 0:
            tiles, batch_size = plan_windows(tiles, src.width, src.height, context, align, window, batch_size)
        meta = {"width": src.width, "height": src.height, "crs": src.crs, "transform": src.transform}
        nodata = src.nodata
    with SharedChunkReader(image_path, tiles) as read_fn:
        return predict_raster((tiles, read_fn), out_path, meta, predict_fn, align, info["mean"],
                              nodata, info["classes"], batch_size=batch_size, compress=compress,
                              progress=progress, tags={"model": str(model_file), "precision": info["precision"],
                                                       "engine": info["engine"], "context": str(context),
                                                       "tta": str(info.get("tta", 1))})


def predict_whole(predict_fn, image: np.ndarray, align: int, pad_values) -> np.ndarray:
    """Reference: the image (H, W, bands) predicted in one piece (padded at the bottom/right to
    ``align``, like the tiles). Memory grows with the image: for checks and small images."""
    h, w = image.shape[:2]
    H, W = math.ceil(h / align) * align, math.ceil(w / align) * align
    return probability_values(predict_fn(pad_to(image, H, W, pad_values)[None]))[0, :h, :w]
