"""Benchmark PredictImage's inference against bare ``model.predict`` on the same tiles in memory.

Input (generated once, cached under bench/_out/inference/): a 2048x2048 3-band uint8 GeoTIFF in
EPSG:32616 at 0.5 m (terrain noise and bright rectangles), cut by ``footprints.tiling.write_tiles``
into TileImage's 512 px tiles with 64 px overlap (25 tiles), and the index.json TileImage writes.
The model: ``build_unet(3 bands, 3 classes, depth 4, 32 base filters)``, seeded, saved as .keras.

- **Ours**: ``models.inference.predict_image`` with ``context=0`` -- PredictImage's work on the
  tile files as they are: read the tile files,
  crop/pad onto the pooling grid, batched inference, core stitching, uint8 GeoTIFF (ZSTD,
  256² blocks) written in strips, reading/inference/writing overlapped in threads.
- **Peer**: ``model.predict(x, batch_size=B)`` on the same 25 tiles already decoded and stacked
  in memory as float32, nothing written. Same model object (BatchNorm folded), same dtype
  policy (``[predict] precision``, bf16 on this CPU), same batch size.

Both run after a warm-up (graph tracing excluded), best of ``--repeat`` runs. PredictImage's
default ``[predict] context=auto`` (each core plus the receptive margin, read from the source:
larger windows, exact seams) is timed once more and printed as a comment line.
Lines: tiles/s ratio (goal >= 0.85x), and PredictImage's model-input throughput in Mpx/s as a
ratio to 4 Mpx/s (the goal for a 4-level 32-filter bf16 U-Net on this CPU, >= 1.0x).

    .venv/bin/python bench/inference.py [--repeat 3] [--batch 8] [--precision auto]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

OUT = REPO / "bench" / "_out" / "inference"
SIZE, TILE, OVERLAP = 2048, 512, 64


def make_scene(path: Path, size: int = SIZE, seed: int = 0) -> None:
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    base = rng.normal(120, 12, (3, size // 8, size // 8)).repeat(8, 1).repeat(8, 2)
    img = base + rng.normal(0, 4, (3, size, size))
    for _ in range(size * size // 4000):
        r, c = rng.integers(0, size - 30, 2)
        h, w = rng.integers(8, 28, 2)
        img[:, r:r + h, c:c + w] = rng.integers(60, 230, (3, 1, 1))
    prof = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32616",
            "transform": Affine(0.5, 0, 730000, 0, -0.5, 3740000), "tiled": True, "blockxsize": 256,
            "blockysize": 256, "compress": "deflate"}
    tmp = path.with_name(path.name + ".tmp")
    with rasterio.open(tmp, "w", **prof) as dst:
        dst.write(np.clip(img, 0, 255).astype(np.uint8))
    os.replace(tmp, path)


def prepare() -> tuple[Path, Path]:
    """The cached scene, its tiles + index.json (TileImage's layout), and the model file."""
    import rasterio

    from footprints.raster import raster_meta
    from footprints.tiling import tile_grid, tile_records, write_tiles

    OUT.mkdir(parents=True, exist_ok=True)
    scene = OUT / f"scene_{SIZE}.tif"
    if not scene.exists():
        make_scene(scene)
    tdir = OUT / f"tiles_ts{TILE}_ov{OVERLAP}"
    index = tdir / "index.json"
    if not index.exists():
        tdir.mkdir(exist_ok=True)
        with rasterio.open(scene) as src:
            meta = raster_meta(src)
            transform = src.transform
        specs = tile_grid(SIZE, SIZE, TILE, OVERLAP)
        write_tiles(scene, tdir, specs, compress="zstd", workers=1)
        index.write_text(json.dumps({"image": "bench", "source": str(scene), "tiling": f"ts{TILE}_ov{OVERLAP}", "tile_size": TILE,
                                     "overlap": OVERLAP, **meta, "tiles": tile_records(specs, transform)}))
    model_path = OUT / "unet4x32.keras"
    if not model_path.exists():
        import models

        with rasterio.open(scene) as src:
            sample = src.read(out_shape=(3, 256, 256)).reshape(3, -1)
        net = models.build_unet(3, 3, depth=4, base_filters=32, seed=0, mean=sample.mean(1), std=sample.std(1))
        models.save_model_atomic(net, model_path)
    return index, model_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="default: [predict] batch_size")
    ap.add_argument("--precision", default=None, help="default: [predict] precision")
    args = ap.parse_args(argv)

    from footprints.raster import read_array
    from models.inference import load_predictor, predict_image
    from tasks.config import predict

    args.batch = args.batch or predict().batch_size
    args.precision = args.precision or predict().precision
    index_path, model_path = prepare()
    index = json.loads(index_path.read_text())
    tiles = index["tiles"]
    predictor = load_predictor(model_path, args.precision)
    predict_fn, info = predictor
    model = predict_fn.model
    x = np.stack([read_array(index_path.parent / t["path"]) for t in tiles]).astype(np.float32)
    n = len(tiles)
    print(f"# {n} tiles of {TILE}² (overlap {OVERLAP}) from a {SIZE}² image; model unet depth 4, 32 filters, "
          f"{info['precision']}, batch {args.batch}, backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}",
          flush=True)

    def bare():
        model.predict(x, batch_size=args.batch, verbose=0)

    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        def ours(context=0):
            predict_image(index_path, Path(tmp) / "prob.tif", model_path=model_path, batch_size=args.batch,
                          predictor=predictor, context=context)

        bare()  # warm-up: traces the graph for the batch shapes used below
        ours()
        t_bare, t_ours = [], []
        for _ in range(args.repeat):  # interleaved, so a change of machine load hits both
            t = time.perf_counter()
            bare()
            t_bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            ours()
            t_ours.append(time.perf_counter() - t)
        ours("auto")  # warm-up of the context windows' shape
        t_autos = []
        for _ in range(2):
            t = time.perf_counter()
            ours("auto")
            t_autos.append(time.perf_counter() - t)
        t_auto = min(t_autos)
    bare_tps, ours_tps = n / min(t_bare), n / min(t_ours)
    model_px = n * x.shape[1] * x.shape[2]
    mpx_ours = model_px / min(t_ours) / 1e6
    print(f"# bare model.predict: {bare_tps:.2f} tiles/s ({model_px / min(t_bare) / 1e6:.2f} Mpx/s); "
          f"PredictImage: {ours_tps:.2f} tiles/s ({mpx_ours:.2f} Mpx/s model input, "
          f"{SIZE * SIZE / min(t_ours) / 1e6:.2f} Mpx/s of image)", flush=True)
    print(f"# PredictImage with [predict] context=auto (exact seams, windows read from the source): "
          f"{n / t_auto:.2f} tiles/s, {SIZE * SIZE / t_auto / 1e6:.2f} Mpx/s of image", flush=True)
    print(f"PredictImage tiles/s vs bare model.predict: {ours_tps / bare_tps:.2f}x (goal >= 0.85x)")
    print(f"PredictImage Mpx/s vs 4 Mpx/s (unet 4x32 {info['precision']}): {mpx_ours / 4.0:.2f}x (goal >= 1.0x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
