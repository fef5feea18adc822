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
larger windows, exact seams) is timed too. Lines: model FLOP/s vs a matmul through the same
framework (goal >= 0.5x), context=auto vs context=0 (goal >= 0.8x), tiles/s vs bare forward
passes (goal >= 0.85x).

- **I/O ceiling**: the same ``predict_image`` on an 8192² scene (361 tiles), the network replaced
  by a function that returns zeros (one read-only array per shape, so it costs nothing): reading
  the tile files (context=0) or the source windows (context=auto), batching, stitching the
  predictor's uint8 output (quantized where the network runs) and writing the probability GeoTIFF. Goal >= 100 Mpx/s of image on 2 cores
  for both. ``--io-only`` runs only this part (no model timings).

    .venv/bin/python bench/inference.py [--repeat 3] [--batch 8] [--precision auto] [--io-only]
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


IO_SIZE = 8192  # the I/O-ceiling scene: 67 Mpx, so that 100 Mpx/s is measurable


def prepare_io() -> Path:
    """A larger cached scene and its tiles for the I/O ceiling (no network)."""
    import rasterio

    from footprints.raster import raster_meta
    from footprints.tiling import tile_grid, tile_records, write_tiles

    scene = OUT / f"scene_{IO_SIZE}.tif"
    if not scene.exists():
        make_scene(scene, IO_SIZE, seed=1)
    tdir = OUT / f"tiles_{IO_SIZE}_ts{TILE}_ov{OVERLAP}"
    index = tdir / "index.json"
    if not index.exists():
        tdir.mkdir(exist_ok=True)
        with rasterio.open(scene) as src:
            meta, transform = raster_meta(src), src.transform
        specs = tile_grid(IO_SIZE, IO_SIZE, TILE, OVERLAP)
        write_tiles(scene, tdir, specs, compress="zstd", workers=2)
        index.write_text(json.dumps({"image": "bench_io", "source": str(scene), "tiling": f"ts{TILE}_ov{OVERLAP}",
                                     "tile_size": TILE, "overlap": OVERLAP, **meta,
                                     "tiles": tile_records(specs, transform)}))
    return index


def matmul_peak(policy: str, n: int = 2048, repeat: int = 5) -> float:
    """FLOP/s of an n x n x n matmul through Keras (the backend and compute dtype inference uses)."""
    import keras

    dtype = keras.mixed_precision.Policy(policy).compute_dtype
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.random((n, n), np.float32), dtype=dtype)
    b = keras.ops.convert_to_tensor(rng.random((n, n), np.float32), dtype=dtype)
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b))
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b))
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up (graph tracing, caches)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="default: [predict] batch_size")
    ap.add_argument("--precision", default=None, help="default: [predict] precision")
    ap.add_argument("--engine", default=None, help="default: [predict] engine")
    ap.add_argument("--io-only", action="store_true", help="only the I/O ceiling (no network): skip every model timing")
    args = ap.parse_args(argv)

    import keras

    from footprints.raster import read_array
    from models.inference import load_predictor, predict_image
    from models.unet import conv_flops
    from tasks.config import predict

    cfg = predict()
    args.batch = args.batch or cfg.batch_size
    args.precision = args.precision or cfg.precision
    index_path, model_path = prepare()
    index = json.loads(index_path.read_text())
    tiles = index["tiles"]
    if args.io_only:
        from models.io import load_model
        from models.unet import model_info

        io_ceiling(model_path, {**model_info(load_model(model_path)), "precision": "-", "engine": "none"}, args.batch, cfg.window, args.repeat)
        return 0
    predictor = load_predictor(model_path, args.precision, engine=args.engine or cfg.engine)
    predict_fn, info = predictor
    model = predict_fn.model
    x = np.stack([read_array(index_path.parent / t["path"]) for t in tiles]).astype(np.float32)
    n = len(tiles)
    backend = keras.backend.backend()
    print(f"# {n} tiles of {TILE}² (overlap {OVERLAP}) from a {SIZE}² image; model unet depth 4, 32 filters, "
          f"{info['precision']}, batch {args.batch}, backend {backend}, engine {info.get('engine', 'keras')}",
          flush=True)
    flops = conv_flops(model, TILE, TILE)
    peak = matmul_peak(info["precision"])
    print(f"# model: {flops / 1e9:.1f} GFLOP per {TILE}² window (convolutions); "
          f"matmul peak through {backend} ({info['precision']}): {peak / 1e9:.1f} GFLOP/s", flush=True)

    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        def ours(context=0, index=index_path, pred=predictor):
            return predict_image(index, Path(tmp) / "prob.tif", model_path=model_path, batch_size=args.batch,
                                 predictor=pred, context=context, window=cfg.window)

        # the peer: the same engine's bare forward passes on the tiles already in memory
        t_bare = best_of(lambda: [predict_fn(x[i:i + args.batch]) for i in range(0, n, args.batch)], args.repeat)
        t_keras = best_of(lambda: model.predict(x, batch_size=args.batch, verbose=0), 1)
        t_ours = best_of(ours, args.repeat)
        t_auto = best_of(lambda: ours("auto"), args.repeat)

    t_io0, t_io_auto = io_ceiling(model_path, info, args.batch, cfg.window, args.repeat, lines=False)

    bare_tps, ours_tps = n / t_bare, n / t_ours
    img_px = SIZE * SIZE
    print(f"# bare {info['engine']} forward passes: {bare_tps:.2f} tiles/s (Keras model.predict: {n / t_keras:.2f}); PredictImage context=0: {ours_tps:.2f} tiles/s "
          f"({n * TILE * TILE / t_ours / 1e6:.2f} Mpx/s model input, {img_px / t_ours / 1e6:.2f} Mpx/s of image), "
          f"context=auto (exact seams, window {cfg.window}): {img_px / t_auto / 1e6:.2f} Mpx/s of image", flush=True)
    engines(model_path, x, args.batch, t_keras)
    print(f"PredictImage model FLOP/s vs this CPU's matmul peak: {n * flops / t_ours / peak:.2f}x (goal >= 0.5x)")
    print(f"PredictImage image Mpx/s, context=auto vs context=0: {t_ours / t_auto:.2f}x (goal >= 0.8x)")
    print(f"PredictImage tiles/s vs bare forward passes ({info['engine']}): {ours_tps / bare_tps:.2f}x (goal >= 0.85x)")
    io_lines(t_io0, t_io_auto)
    return 0


def io_ceiling(model_path: Path, info: dict, batch: int, window: int, repeat: int, lines: bool = True) -> tuple[float, float]:
    """PredictImage's own ceiling: the same reading, stitching and writing on the larger scene,
    the network replaced by a function that returns zeros. Returns the seconds for context=0 and
    context=auto (and prints the lines when ``lines``)."""
    from models.inference import predict_image

    io_index = prepare_io()
    k = len(info["classes"])

    zeros: dict = {}

    def no_network(batch):
        """All-zero probabilities in the predictor's own output form (uint8 round(255 p),
        quantized where the network runs), one read-only array per shape: it costs nothing, as
        it says (a fresh np.zeros would bill the first touch of its pages to PredictImage's
        stitching, a cost of a real network's own output allocation)."""
        shape = batch.shape[:3] + (k,)
        if shape not in zeros:
            zeros[shape] = np.zeros(shape, np.uint8)
            zeros[shape].flags.writeable = False
        return zeros[shape]

    free = (no_network, info)
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        def run(context):
            return predict_image(io_index, Path(tmp) / "prob.tif", model_path=model_path, batch_size=batch,
                                 predictor=free, context=context, window=window)

        t0, c0 = best_wall_cpu(lambda: run(0), repeat)
        t_auto, c_auto = best_wall_cpu(lambda: run("auto"), repeat)
    px = IO_SIZE ** 2 / 1e6
    print(f"# I/O ceiling on a {IO_SIZE}² image: context=0 {px / t0:.1f} Mpx/s ({c0:.2f} CPU-s), "
          f"context=auto {px / t_auto:.1f} Mpx/s of image ({c_auto:.2f} CPU-s); "
          f"{len(os.sched_getaffinity(0))} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    io_floors(io_index)
    if lines:
        io_lines(t0, t_auto)
    return t0, t_auto


def best_wall_cpu(fn, repeat: int) -> tuple[float, float]:
    """(wall, process CPU) seconds of the fastest of ``repeat`` runs after a warm-up."""
    fn()
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t, time.process_time() - c))
    return best


def io_floors(io_index: Path) -> None:
    """Each part of the I/O ceiling alone, in one thread: its CPU seconds on the 8192² scene and
    the Mpx/s of image one core gets through it. Their sum bounds what 2 cores can do."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    from footprints.raster import pixel_env, read_array
    from footprints.stitch import output_profile

    n = IO_SIZE
    paths = [io_index.parent / t["path"] for t in json.loads(io_index.read_text())["tiles"]]

    def cpu(fn) -> float:
        best = float("inf")
        for _ in range(2):
            c = time.thread_time()
            fn()
            best = min(best, time.thread_time() - c)
        return best

    def plain_tiles():
        for p in paths:
            with rasterio.open(p) as src:
                src.read()

    def our_tiles():
        with pixel_env():
            for p in paths:
                read_array(p)

    def source():  # every block of the scene decoded once
        with rasterio.open(OUT / f"scene_{n}.tif") as src:
            for r in range(0, n, 256):
                src.read(window=Window(0, r, n, 256))

    strip = np.zeros((3, 256, n), np.uint8)
    probs = np.zeros((256, n, 3), np.uint8)  # the predictor's output: quantized where the network runs

    def stitch():  # each core's uint8 (h, w, 3) into the band-sequential strips
        for _ in range(0, n, 256):
            strip[...] = np.moveaxis(probs, -1, 0)

    def write():
        with tempfile.TemporaryDirectory(dir=OUT) as d:
            prof = output_profile(n, n, 3, "EPSG:32616", Affine(0.5, 0, 0, 0, -0.5, 0))
            prof.pop("num_threads", None)
            with rasterio.open(Path(d) / "o.tif", "w", **prof) as dst:
                for r in range(0, n, 256):
                    dst.write(strip, window=Window(0, r, n, 256))

    f = {k: cpu(fn) for k, fn in (("plain", plain_tiles), ("tiles", our_tiles), ("source", source),
                                   ("stitch", stitch), ("write", write))}
    rate = {k: n * n / v / 1e6 for k, v in f.items()}
    print(f"# floors, one thread, CPU-s (Mpx/s of image per core): {len(paths)} tile files read by rasterio "
          f"{f['plain']:.2f} ({rate['plain']:.0f}), by PredictImage (pixels only, interleaved) {f['tiles']:.2f} "
          f"({rate['tiles']:.0f}); the source's blocks decoded once {f['source']:.2f} ({rate['source']:.0f}); "
          f"stitching 3 uint8 bands {f['stitch']:.2f} ({rate['stitch']:.0f}); writing the GeoTIFF "
          f"{f['write']:.2f} ({rate['write']:.0f})", flush=True)
    rest = f["stitch"] + f["write"]
    print(f"# so 2 cores at best: context=0 {2 * n * n / (f['tiles'] + rest) / 1e6:.0f} Mpx/s, context=auto "
          f"{2 * n * n / (f['source'] + rest) / 1e6:.0f} Mpx/s of image (the parts' CPU-s over 2 cores)", flush=True)


def io_lines(t0: float, t_auto: float) -> None:
    for name, t in (("context=0", t0), ("context=auto", t_auto)):
        print(f"PredictImage I/O ceiling (no network) Mpx/s of image vs 100 Mpx/s, {name}: "
              f"{IO_SIZE ** 2 / t / 1e6 / 100:.2f}x (goal >= 1.0x)")


def engines(model_path: Path, x: np.ndarray, batch: int, t_keras: float) -> None:
    """Other CPU inference engines on the same weights and tiles, for the record (comment lines)."""
    from models.engines import available_engines
    from models.inference import load_predictor

    for name in available_engines():
        if name == "keras":
            continue
        try:
            fn, info = load_predictor(model_path, "float32", engine=name)
            if info["engine"] != name:
                raise RuntimeError("it fell back to Keras (see the warning above)")
        except (ImportError, RuntimeError, ValueError, OSError) as e:
            print(f"# engine {name}: unavailable ({type(e).__name__}: {str(e)[:120]})")
            continue
        t = best_of(lambda f=fn: [f(x[i:i + batch]) for i in range(0, len(x), batch)], 1)
        print(f"# engine {name}: {x.shape[0] * x.shape[1] * x.shape[2] / t / 1e6:.2f} Mpx/s model input, "
              f"{t_keras / t:.2f}x Keras' model.predict", flush=True)


if __name__ == "__main__":
    sys.exit(main())
