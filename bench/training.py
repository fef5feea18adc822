"""Benchmark TrainModel's input pipeline: training steps/s streaming tiles from disk against the
same steps on arrays already in memory.

Input (generated once, cached under bench/_out/training/): the 2048² scene of bench/inference.py
cut into TileImage's 512 px tiles (overlap 64), and a 3-band 0/255 mask tile for each (the
scene's rectangles), like MakeMasks writes.

- **Pipeline**: ``models.data.TileDataset`` (worker threads read the GeoTIFF tiles, cut random
  crops, augment them with flips/rot90/brightness/contrast; LRU cache of decoded tiles) into
  ``model.fit`` through ``models.training.fit_inputs`` (on TensorFlow the endless, non-autotuned
  tf.data pipeline) -- exactly what ``train_model`` does.
- **Peer**: ``model.fit`` on NumPy arrays holding the same number of crops, preloaded.

Same model (``[train]`` defaults: U-Net, filters, batch norm, precision), same crop and batch
size, same number of steps per epoch. Each side runs ``fit`` for 3 epochs, as ``train_model``
does (the first, with tracing and the cache filling, is left out); ``--repeat`` rounds
alternate the sides; the best epoch of each side is compared.

The pipeline's own ceiling -- what it could feed a fast accelerator -- is the same ``fit`` with
the network replaced by a single 1x1 convolution (a no-op's cost), printed as a comment line.

    .venv/bin/python bench/training.py [--steps 40] [--repeat 2] [--cache-mb 1024]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

OUT = REPO / "bench" / "_out" / "training"


def prepare():
    """Tiles and mask tiles of the cached scene -> training items."""
    import inference
    import rasterio

    from footprints.tiling import tile_grid, write_tiles

    OUT.mkdir(parents=True, exist_ok=True)
    scene = inference.OUT / f"scene_{inference.SIZE}.tif"
    if not scene.exists():
        inference.OUT.mkdir(parents=True, exist_ok=True)
        inference.make_scene(scene)
    tdir, mdir = OUT / "tiles", OUT / "masks"
    specs = tile_grid(inference.SIZE, inference.SIZE, inference.TILE, inference.OVERLAP)
    if not (mdir / f"{specs[-1].tile_id}.tif").exists():
        tdir.mkdir(exist_ok=True)
        mdir.mkdir(exist_ok=True)
        write_tiles(scene, tdir, specs, compress="zstd", workers=1)
        for s in specs:
            with rasterio.open(tdir / f"{s.tile_id}.tif") as src:
                img, prof = src.read(), src.profile
            fp = (np.ptp(img, axis=0) > 40) | (img.mean(0) < 90)  # the rectangles' pixels
            m = np.stack([fp, np.zeros_like(fp), np.zeros_like(fp)]).astype(np.uint8) * 255
            prof.update(count=3, compress="deflate", predictor=1)
            with rasterio.open(mdir / f"{s.tile_id}.tif", "w", **prof) as dst:
                dst.write(m)
    return [{"tile": str(tdir / f"{s.tile_id}.tif"), "mask": str(mdir / f"{s.tile_id}.tif"),
             "width": s.width, "height": s.height} for s in specs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache-mb", type=int, default=None, help="default: [train] cache_mb")
    args = ap.parse_args(argv)

    from models import alignment
    from models.data import Augment, TileCache, TileDataset, band_statistics, effective_crop
    from models.hardware import data_workers, resolve_precision, tune_malloc
    from models.training import build_model_for, compile_model, fit_inputs, make_optimizer
    from tasks.config import train_params

    tune_malloc()  # as train_model does, so both sides of the comparison run with the same allocator
    items = prepare()
    p = train_params()
    policy = resolve_precision(p.precision)
    crop = effective_crop(p.crop_size, [(it["height"], it["width"]) for it in items], alignment(p.depth, p.input_scale, p.fold))
    cache = TileCache((p.cache_mb if args.cache_mb is None else args.cache_mb) * 2 ** 20)
    mean, std = band_statistics(cache.get(it["tile"])[::4, ::4] for it in items)
    steps, b = args.steps, p.batch_size
    workers = data_workers(p.workers)
    ds = TileDataset(items, b, crop, True, p.seed, steps * b, Augment(p.flips, p.rotations, p.brightness, p.contrast),
                     mean, std, None, (0, 255), cache=cache, workers=workers)
    mem_x, mem_y = (np.concatenate(a) for a in zip(*(ds[i] for i in range(steps))))
    model = build_model_for(3, 3, p, policy, mean, std, None, {})
    compile_model(model, make_optimizer(p, steps * 10, policy), p.loss, p.class_weights)
    print(f"# {len(items)} tiles; unet depth {p.depth}, {p.base_filters} filters, fold {p.fold}, batchnorm {p.batchnorm}, "
          f"{policy}; {steps} steps of {b} x {crop}² crops, {workers} reader threads, "
          f"backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}", flush=True)

    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t)

    # one fit per side, as train_model runs it (epochs inside one fit); epoch 1 warms up
    # (tracing, the tile cache filling) and is left out; alternating sides so that a change of
    # the machine's load hits both
    t_pipe, t_mem = [], []
    for _ in range(args.repeat):
        timer = EpochTimer()
        model.fit(fit_inputs(ds, None)[0], epochs=3, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        t_pipe += timer.times[1:]
        timer = EpochTimer()
        model.fit(mem_x, mem_y, batch_size=b, epochs=3, steps_per_epoch=steps, shuffle=False, verbose=0,
                  callbacks=[timer])
        t_mem += timer.times[1:]
    # the pipeline's ceiling: the same fit, the network a single 1x1 convolution
    noop = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1, activation="sigmoid")])
    noop.compile(optimizer="sgd", loss="binary_crossentropy")
    timer = EpochTimer()
    noop.fit(fit_inputs(ds, None)[0], epochs=3, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    ceiling = steps / min(timer.times[1:])
    sp, sm = steps / min(t_pipe), steps / min(t_mem)
    print(f"# tile pipeline ceiling (network replaced by a 1x1 conv): {ceiling:.1f} steps/s, "
          f"{ceiling * b * crop * crop / 1e6:.1f} Mpx/s of crops, {ceiling / sm:.1f}x the U-Net's steps/s "
          f"on this CPU ({workers} reader threads)", flush=True)
    print(f"# pipeline {sp:.2f} steps/s, in-memory {sm:.2f} steps/s "
          f"({sm * b * crop * crop / 1e6:.2f} Mpx/s trained)", flush=True)
    print(f"training steps/s, tile pipeline vs in-memory arrays: {sp / sm:.2f}x (goal >= 0.9x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
