"""Benchmark TileImage's tiler against gdal_retile.py, and its memory on a 20000² and a 60000² raster.

Input (generated once, cached under bench/_out/): a tiled (256²), DEFLATE-compressed
20000x20000x3 uint8 GeoTIFF in EPSG:32616 at 0.5 m (terrain tones, 200,000 buildings, +-3 DN
noise; see bench/_common.py), and a 60000x60000x3 sparse GeoTIFF (SPARSE_OK: no block stored,
every pixel reads 0).

Ours: ``footprints.tiling.write_tiles`` on ``tile_grid(w, h, 512, 0)`` -- exactly TileImage's tile
writing, with TileImage's defaults from ``[tiling]``: ZSTD level 1 + horizontal predictor
(lossless; QGIS reads it, GDAL >= 2.3), 256² internal blocks, 2 worker processes. It runs in a
child process so its memory can be watched. The peer: ``gdal_retile.py -ps 512 512
-co COMPRESS=DEFLATE -targetDir DIR SRC`` (gdal-bin's script, run with the venv's python which
has the osgeo bindings). Times are wall-clock seconds of the whole command (interpreter start
included) on the same cached input; ratio = gdal_retile time / ours.

Memory: the tiler's process tree (the task's process and its worker processes) is sampled every
50 ms from /proc. Reported peak = the sum over all processes of each one's own peak RSS
(VmHWM) -- an upper bound on the tree's simultaneous RSS, since pages shared between the
parent and its forked workers count in every process that maps them. The sampled peak of the summed
RSS and of the summed PSS are printed too. CPU seconds (user + sys of each process tree) are
printed beside the wall-clock times: on this shared 2-core machine the wall-clock ratio moves with
the load of other processes, the CPU ratio much less.

    .venv/bin/python bench/tiling.py               # 20000² vs gdal_retile, then 60000²
    .venv/bin/python bench/tiling.py --no-big      # skip the 60000² run
    .venv/bin/python bench/tiling.py --big-rows 20 # 60000²: only the first 20 tile rows
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

LIMIT_MB = 512


def child(args) -> int:
    """Runs in the measured child process: write the tiles, report times and rusage as JSON."""
    import rasterio

    from footprints.tiling import tile_grid, write_tiles

    with rasterio.open(args.src) as src:
        w, h = src.width, src.height
    specs = tile_grid(w, h, args.tile_size, 0)
    if args.rows:
        first_rows = sorted({s.row_off for s in specs})[: args.rows]
        specs = [s for s in specs if s.row_off in set(first_rows)]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n = write_tiles(args.src, args.out, specs, compress=args.compress, workers=args.workers)
    dt = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"tiles": n, "write_s": dt,
                      "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                      "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
    return 0


def run_ours(src: Path, out: Path, tile_size: int, compress: str, workers: int, rows: int = 0) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", "--src", str(src), "--out", str(out), "--tile-size", str(tile_size),
           "--compress", compress, "--workers", str(workers), "--rows", str(rows)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=C.REPO)
    mem = C.TreeMemory(proc.pid)
    mem.watch(proc)
    wall = time.perf_counter() - t0
    stdout = proc.stdout.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"our tiler failed (rc {proc.returncode}): {stdout}")
    res = json.loads(stdout.strip().splitlines()[-1])
    hwm = dict(mem.hwm)
    # the kernel's exact figures where polling may have missed the last growth before exit
    hwm[proc.pid] = max(hwm.get(proc.pid, 0), res["self_maxrss_kb"])
    workers_seen = sorted((p for p in hwm if p != proc.pid), key=lambda p: -hwm[p])
    if workers_seen:
        hwm[workers_seen[0]] = max(hwm[workers_seen[0]], res["children_maxrss_kb"])
    res.update(wall_s=wall, peak_mb=sum(hwm.values()) / 1024, processes=len(hwm),
               rss_sum_mb=mem.peak_rss_sum / 1024, pss_sum_mb=mem.peak_pss_sum / 1024,
               per_process_mb=sorted((round(v / 1024) for v in hwm.values()), reverse=True))
    return res


def run_gdal(src: Path, out: Path, tile_size: int) -> dict:
    script = shutil.which("gdal_retile.py") or "/usr/bin/gdal_retile.py"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, script, "-q", "-ps", str(tile_size), str(tile_size), "-co", "COMPRESS=DEFLATE",
           "-targetDir", str(out), str(src)]
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, cwd=C.REPO)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "tiles": len(list(out.glob("*.tif")))}


def dir_mb(d: Path) -> float:
    return sum(f.stat().st_size for f in d.glob("*.tif")) / 2**20


def check_tiles(src: Path, out: Path, tile_size: int, k: int = 6) -> None:
    """Lossless and georeferenced: a few tiles (corners included) equal the source windows."""
    import numpy as np
    import rasterio

    from footprints.geo import window_transform
    from footprints.tiling import tile_grid

    with rasterio.open(src) as s:
        specs = tile_grid(s.width, s.height, tile_size, 0)
        pick = [specs[0], specs[-1]] + [specs[i] for i in np.linspace(1, len(specs) - 2, k - 2).astype(int)]
        for sp in pick:
            with rasterio.open(out / f"{sp.tile_id}.tif") as t:
                assert t.crs == s.crs, sp.tile_id
                assert t.transform.almost_equals(window_transform(s.transform, sp.col_off, sp.row_off)), sp.tile_id
                assert (t.read() == s.read(window=sp.window)).all(), f"tile {sp.tile_id} differs from the source"


def generated_apart(name: str, size: int) -> Path:
    """``_common.<name>(size)``, generated (the first time) in a process of its own. Generating
    the 20000² scene grows this process by hundreds of MB, and Linux carries a process's peak RSS
    through fork and exec into ``ru_maxrss``: the measured tiler, started from here, would report
    this process's peak as its own (seen: 571 MB instead of 126 MB)."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import _common; _common.{name}({size})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=C.REPO)
    return getattr(C, name)(size)  # cached now: only its path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=20000, help="edge of the compared raster (default 20000)")
    ap.add_argument("--big", type=int, default=60000, help="edge of the sparse raster for the memory run")
    ap.add_argument("--big-rows", type=int, default=0, help="60000² run: only this many tile rows (0: all)")
    ap.add_argument("--no-big", action="store_true", help="skip the 60000² run")
    ap.add_argument("--tile-size", type=int, default=512)
    ap.add_argument("--compress", default=None, help="default: [tiling] compress (zstd)")
    ap.add_argument("--workers", type=int, default=None, help="default: [tiling] workers (2)")
    ap.add_argument("--keep", action="store_true", help="keep the tiles under bench/_out/")
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    from tasks.config import tiling

    t = tiling()
    compress = args.compress or t.compress
    workers = args.workers or t.workers
    src = generated_apart("scene_raster", args.size)
    n_buildings_note = f"{args.size}x{args.size}x3 uint8, DEFLATE, {src.stat().st_size / 2**20:.0f} MiB"
    out_ours, out_gdal = C.OUT / "tiles_ours", C.OUT / "tiles_gdal"
    try:
        C.log(f"input: {src.name} ({n_buildings_note}); tiles of {args.tile_size} px; "
              f"ours: {compress} + predictor, {workers} workers")
        ours = run_ours(src, out_ours, args.tile_size, compress, workers)
        check_tiles(src, out_ours, args.tile_size)
        C.log(f"ours: {ours['tiles']} tiles in {ours['wall_s']:.1f} s (write_tiles {ours['write_s']:.1f} s, "
              f"CPU {ours['cpu_s']:.1f} s), "
              f"{dir_mb(out_ours):.0f} MiB, lossless (checked); peak RSS {ours['peak_mb']:.0f} MB over "
              f"{ours['processes']} processes {ours['per_process_mb']} (sampled sums: RSS {ours['rss_sum_mb']:.0f} MB, "
              f"PSS {ours['pss_sum_mb']:.0f} MB)")
        shutil.rmtree(out_ours, ignore_errors=True)
        gd = run_gdal(src, out_gdal, args.tile_size)
        C.log(f"gdal_retile.py: {gd['tiles']} tiles in {gd['wall_s']:.1f} s (CPU {gd['cpu_s']:.1f} s), "
              f"{dir_mb(out_gdal):.0f} MiB (DEFLATE)")
        C.log(f"CPU seconds, gdal_retile.py / ours: {gd['cpu_s'] / ours['cpu_s']:.2f} (machine load "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        if not args.keep:
            shutil.rmtree(out_gdal, ignore_errors=True)
        print(f"tiling {args.size}x{args.size}x3 vs gdal_retile.py: {gd['wall_s'] / ours['wall_s']:.2f}x (goal >= 2.0x)")
        print(f"tiling peak RSS {LIMIT_MB} MB / peak: {LIMIT_MB / ours['peak_mb']:.2f}x (goal >= 1.0x)", flush=True)

        if not args.no_big:
            big = generated_apart("sparse_raster", args.big)
            out_big = C.OUT / "tiles_big"
            bg = run_ours(big, out_big, args.tile_size, compress, workers, rows=args.big_rows)
            shutil.rmtree(out_big, ignore_errors=True)
            what = f"all {bg['tiles']} tiles" if not args.big_rows else f"{bg['tiles']} tiles ({args.big_rows} tile rows)"
            C.log(f"ours on {args.big}x{args.big}x3 (sparse): {what} in {bg['wall_s']:.1f} s; peak RSS "
                  f"{bg['peak_mb']:.0f} MB {bg['per_process_mb']} vs {ours['peak_mb']:.0f} MB at {args.size}² "
                  f"(sampled sums: RSS {bg['rss_sum_mb']:.0f} MB, PSS {bg['pss_sum_mb']:.0f} MB)")
            print(f"tiling {args.big}x{args.big} peak RSS {LIMIT_MB} MB / peak: {LIMIT_MB / bg['peak_mb']:.2f}x (goal >= 1.0x)")
    finally:
        if not args.keep:
            for d in (out_ours, out_gdal, C.OUT / "tiles_big"):
                shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
