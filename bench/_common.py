"""Shared pieces of the benchmarks: generated inputs (cached under bench/_out/), throw-away
PostGIS databases, and the memory of a process tree.

Generated inputs are seeded and deterministic, so a cached file is reused only when its
parameters match (they are part of its name).
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "_out"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# the benchmark scene: EPSG:32616 (UTM 16N) at 0.5 m/px, 10 km x 10 km for 20000 px
EPSG = 32616
RES = 0.5
ORIGIN = (730000.0, 3740000.0)


def scene_transform(res: float = RES):
    from affine import Affine

    return Affine(res, 0.0, ORIGIN[0], 0.0, -res, ORIGIN[1])


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- buildings


def buildings(size: int, n: int, seed: int = 0):
    """``n`` building polygons in pixel coordinates of a ``size`` x ``size`` image: rotated
    rectangles and L-shapes of 10..28 px on a jittered grid (one per cell, never touching).

    Returns (polygons, tone index 1..8 per building, kind 0 rectangle / 1 L-shape)."""
    import shapely

    rng = np.random.default_rng(seed)
    per_side = int(np.ceil(np.sqrt(n)))
    cell = size / per_side
    k = np.arange(n)
    gx, gy = (k % per_side) * cell, (k // per_side) * cell
    w = rng.uniform(10, 28, n)
    h = rng.uniform(10, 28, n)
    reach = np.hypot(w, h) / 2  # radius of the rotated shape
    slack = np.maximum(cell / 2 - reach - 1, 0)
    cx = gx + cell / 2 + rng.uniform(-1, 1, n) * slack
    cy = gy + cell / 2 + rng.uniform(-1, 1, n) * slack
    ang = rng.uniform(0, np.pi, n)
    ell = rng.random(n) < 0.35
    # unit outlines: rectangle (5 closed vertices) and L (7 closed vertices)
    rect = np.array([[-.5, -.5], [.5, -.5], [.5, .5], [-.5, .5], [-.5, -.5]])
    lsh = np.array([[-.5, -.5], [.5, -.5], [.5, 0], [0, 0], [0, .5], [-.5, .5], [-.5, -.5]])
    polys = np.empty(n, dtype=object)
    for mask, unit in ((~ell, rect), (ell, lsh)):
        m = mask.sum()
        xy = unit[None, :, :] * np.stack([w[mask], h[mask]], 1)[:, None, :]
        c, s = np.cos(ang[mask])[:, None], np.sin(ang[mask])[:, None]
        x = xy[..., 0] * c - xy[..., 1] * s + cx[mask][:, None]
        y = xy[..., 0] * s + xy[..., 1] * c + cy[mask][:, None]
        polys[mask] = shapely.polygons(np.stack([x, y], -1)) if m else []
    tone = rng.integers(1, 9, n)
    return polys, tone, ell.astype(np.int32)


def pixel_to_crs(polys, transform):
    import shapely

    a, b, c, d, e, f = list(transform)[:6]
    return shapely.transform(polys, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                                d * xy[:, 0] + e * xy[:, 1] + f]))


# ---------------------------------------------------------------- rasters

ROOF_TONES = np.array([[0, 0, 0], [200, 190, 180], [150, 70, 60], [90, 90, 95], [230, 230, 225],
                       [120, 110, 90], [170, 160, 120], [60, 65, 70], [190, 120, 90]], dtype=np.int16)


def _smooth_field(rng, size: int, cell: int, bands: int) -> np.ndarray:
    return rng.uniform(0, 1, (size // cell + 3, size // cell + 3, bands)).astype(np.float32)


def _upsample_rows(field: np.ndarray, y0: int, nrows: int, width: int, cell: int) -> np.ndarray:
    """Bilinear upsampling of a coarse field for image rows [y0, y0 + nrows)."""
    fy = (np.arange(y0, y0 + nrows) + 0.5) / cell
    iy = fy.astype(np.int64)
    wy = (fy - iy)[:, None, None].astype(np.float32)
    rows = field[iy] * (1 - wy) + field[iy + 1] * wy                      # (nrows, gx, bands)
    fx = (np.arange(width) + 0.5) / cell
    ix = fx.astype(np.int64)
    wx = (fx - ix)[None, :, None].astype(np.float32)
    return rows[:, ix] * (1 - wx) + rows[:, ix + 1] * wx                   # (nrows, width, bands)


def scene_raster(size: int = 20000, n_buildings: int = 200_000, seed: int = 0) -> Path:
    """A tiled (256 x 256), DEFLATE-compressed ``size`` x ``size`` x 3 uint8 GeoTIFF in
    EPSG:32616 at 0.5 m: smooth terrain tones, the ``buildings()`` drawn as roofs, and
    +-3 DN sensor noise (so compression ratios are realistic). Written strip by strip
    (memory stays at a few strips), cached under bench/_out/."""
    import rasterio
    from affine import Affine
    from rasterio.features import rasterize

    path = OUT / f"scene_{size}_{n_buildings}_s{seed}.tif"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"generating {path.name} ({size}x{size}x3, once; cached) ...")
    polys, tone, _ = buildings(size, n_buildings, seed)
    import shapely

    b = shapely.bounds(polys)
    order = np.argsort(b[:, 1], kind="stable")
    miny_sorted = b[order, 1]
    maxh = float((b[:, 3] - b[:, 1]).max())
    rng = np.random.default_rng(seed + 1)
    terrain = _smooth_field(rng, size, 128, 3)
    detail = _smooth_field(rng, size, 16, 1)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    strip = 256
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=f"EPSG:{EPSG}",
                   transform=scene_transform(), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", interleave="pixel", num_threads=2, bigtiff="if_safer")
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            for y0 in range(0, size, strip):
                nrows = min(strip, size - y0)
                base = _upsample_rows(terrain, y0, nrows, size, 128)
                base = base * np.array([70, 80, 55], np.float32) + np.array([70, 80, 60], np.float32)
                base += (_upsample_rows(detail, y0, nrows, size, 16) - 0.5) * 40
                # buildings whose bounds meet this strip
                lo = np.searchsorted(miny_sorted, y0 - maxh - 1)
                hi = np.searchsorted(miny_sorted, y0 + nrows)
                sel = order[lo:hi]
                sel = sel[(b[sel, 3] >= y0) & (b[sel, 1] < y0 + nrows)]
                ids = rasterize(zip(polys[sel], tone[sel]), out_shape=(nrows, size),
                                transform=Affine.translation(0, y0), fill=0, dtype="uint8")
                img = base.astype(np.int16)
                roof = ids > 0
                img[roof] = ROOF_TONES[ids[roof]]
                srng = np.random.default_rng([seed, y0])
                img += srng.integers(-3, 4, img.shape, dtype=np.int16)
                np.clip(img, 0, 255, out=img)
                dst.write(np.ascontiguousarray(img.astype(np.uint8).transpose(2, 0, 1)),
                          window=((y0, y0 + nrows), (0, size)))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log(f"  generated in {time.perf_counter() - t0:.0f} s, {path.stat().st_size / 2**20:.0f} MiB on disk")
    return path


def sparse_raster(size: int = 60000) -> Path:
    """A ``size`` x ``size`` x 3 uint8 GeoTIFF (tiled 256, DEFLATE) written with SPARSE_OK:
    no block is stored, so every pixel reads as 0. Tiny on disk, full size for a reader."""
    import rasterio

    path = OUT / f"sparse_{size}.tif"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    with rasterio.open(tmp, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs=f"EPSG:{EPSG}", transform=scene_transform(), tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", interleave="pixel", sparse_ok=True,
                       bigtiff="yes"):
        pass
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- databases


@contextmanager
def throwaway_db(tag: str):
    """Create ``footprints_bench_<tag>_<pid>_<rand>`` from TEMPLATE footprints_template, yield its
    name, drop it afterwards (even on errors)."""
    import psycopg2

    from footprints import db

    name = f"footprints_bench_{tag}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(**{**db.conn_params(), "dbname": "postgres"})
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE footprints_template')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# ---------------------------------------------------------------- memory of a process tree


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Samples a process tree every ``interval`` s: the peak of the summed RSS and of the summed
    PSS (shared pages split between the processes that map them), and every process's own
    kernel high-water mark (VmHWM, last value seen)."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak_rss_sum = self.peak_pss_sum = 0
        self.hwm: dict[int, int] = {}

    def sample(self) -> None:
        pids = process_tree(self.pid)
        rss = pss = 0
        for p in pids:
            rss += _status_kb(p, "VmRSS:")
            pss += _pss_kb(p)
            h = _status_kb(p, "VmHWM:")
            if h:
                self.hwm[p] = max(self.hwm.get(p, 0), h)
        self.peak_rss_sum = max(self.peak_rss_sum, rss)
        self.peak_pss_sum = max(self.peak_pss_sum, pss)

    def watch(self, proc) -> None:
        """Sample until ``proc`` (a subprocess.Popen) exits."""
        while proc.poll() is None:
            self.sample()
            time.sleep(self.interval)
