"""Benchmark DeduplicateBorders: 1,000,000 predicted polygons over 40,000 tiles.

Synthetic predictions go straight into a throw-away PostGIS database (COPY): a 200 x 200 grid
of 256 px tiles overlapping by 32 px (the tiler's grid and cores, footprints.tiling.tile_grid),
buildings (rectangles and L-shapes, 6..40 px, never touching) on a jittered grid, and for every
tile each building that reaches into its core, clipped to the window the tile reads (its
window grown by the 8 px halo) -- exactly what Polygonize stores, with the fragments and
duplicates along every tile border. About 25 polygons per tile.

Reported: DeduplicateBorders' time (per step; the commit included) and rows/s, the time to
read the same rows back into Python (``SELECT ... FROM predictions WHERE run = ...``, fetched),
and their ratio (read time / dedup time; goal >= 0.2x). The read-back runs once before and once
after DeduplicateBorders and the ratio takes their mean, so that a change of the machine's load
during the run weighs on both sides alike. It also checks that every building comes out
exactly once and whole (count and total area).

    .venv/bin/python bench/dedup.py                # the issue's size (1M polygons, 40k tiles)
    .venv/bin/python bench/dedup.py --tiles 50     # 50 x 50 tiles, for a quick look
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import psycopg2
import shapely
from affine import Affine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from footprints import db  # noqa: E402
from footprints.dedup import deduplicate  # noqa: E402
from footprints.geo import pixel_to_geo  # noqa: E402
from footprints.tiling import tile_grid  # noqa: E402

RUN, IMAGE, SRID = "bench", "bench_image", 32616
TRANSFORM = Affine(0.3, 0.0, 733601.0, 0.0, -0.3, 3725139.0)


def make_buildings(size: int, cell: int, rng) -> np.ndarray:
    """Object array of building polygons (pixel coords) on a jittered grid, 1+ px apart."""
    n = size // cell
    gx, gy = np.meshgrid(np.arange(n) * cell, np.arange(n) * cell)
    gx, gy = gx.ravel(), gy.ravel()
    m = len(gx)
    w = rng.integers(6, 41, m)
    h = rng.integers(6, 41, m)
    w = np.minimum(w, cell - 2)
    h = np.minimum(h, cell - 2)
    x0 = gx + 1 + rng.integers(0, cell - 1 - w)
    y0 = gy + 1 + rng.integers(0, cell - 1 - h)
    x1, y1 = x0 + w, y0 + h
    boxes = shapely.box(x0, y0, x1, y1)
    # a third of them are L-shapes: the box minus a corner notch
    ell = rng.random(m) < 0.33
    nx = (w[ell] // 2).clip(1)
    ny = (h[ell] // 2).clip(1)
    notch = shapely.box(x1[ell] - nx, y1[ell] - ny, x1[ell], y1[ell])
    boxes[ell] = shapely.difference(boxes[ell], notch)
    return boxes


def predictions_for(buildings: np.ndarray, tiles: list[dict], size: int, halo: int):
    """What Polygonize stores: for every tile, each building that reaches into the tile's core,
    clipped to the window the tile reads (its window grown by ``halo`` within the image).
    Returns (tile index, polygon) arrays."""
    xs = sorted({(t["col_off"], t["width"], t["core_col_off"], t["core_width"]) for t in tiles})
    ys = sorted({(t["row_off"], t["height"], t["core_row_off"], t["core_height"]) for t in tiles})
    nx = len(xs)

    def axis(spec):
        a = np.array(spec)
        return (np.maximum(a[:, 0] - halo, 0), np.minimum(a[:, 0] + a[:, 1] + halo, size),  # read window
                a[:, 2], a[:, 2] + a[:, 3])                                                 # core

    rx0, rx1, cx0, cx1 = axis(xs)
    ry0, ry1, cy0, cy1 = axis(ys)
    b = shapely.bounds(buildings)
    # tiles whose core the building reaches into (cores partition each axis: a contiguous range)
    i0 = np.searchsorted(cx1, b[:, 0], side="right")
    i1 = np.searchsorted(cx0, b[:, 2], side="left") - 1
    j0 = np.searchsorted(cy1, b[:, 1], side="right")
    j1 = np.searchsorted(cy0, b[:, 3], side="left") - 1
    ci, cj = i1 - i0 + 1, j1 - j0 + 1
    count = ci * cj
    bid = np.repeat(np.arange(len(buildings)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    ti = i0[bid] + k % ci[bid]
    tj = j0[bid] + k // ci[bid]
    wx0, wx1, wy0, wy1 = rx0[ti], rx1[ti], ry0[tj], ry1[tj]
    bb = b[bid]
    inside = (bb[:, 0] >= wx0) & (bb[:, 2] <= wx1) & (bb[:, 1] >= wy0) & (bb[:, 3] <= wy1)
    polys = buildings[bid].copy()
    cut = ~inside
    polys[cut] = shapely.intersection(polys[cut], shapely.box(wx0[cut], wy0[cut], wx1[cut], wy1[cut]))
    tile_idx = tj * nx + ti
    # a clipped L-shape may fall apart (or leave lines on the window edge): its polygons only,
    # and of those only the ones that still reach into the core
    parts, src = shapely.get_parts(polys, return_index=True)
    pb = shapely.bounds(parts)
    t = tile_idx[src]
    reach = ((pb[:, 0] < cx1[t % nx]) & (pb[:, 2] > cx0[t % nx]) & (pb[:, 1] < cy1[t // nx]) & (pb[:, 3] > cy0[t // nx]))
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0) & reach
    return t[keep], parts[keep]


def copy_predictions(conn, tiles, tile_idx, polys, rng) -> int:
    geo = shapely.set_srid(pixel_to_geo(polys, TRANSFORM), SRID)
    pix_hex = shapely.to_wkb(polys, hex=True)
    geo_hex = shapely.to_wkb(geo, hex=True, include_srid=True)
    area = shapely.area(polys) * abs(TRANSFORM.a * TRANSFORM.e)
    score = rng.uniform(0.5, 1.0, len(polys)).round(4)
    ids = np.array([t["tile_id"] for t in tiles], dtype=object)[tile_idx]
    n = len(polys)
    chunk = 200_000
    with conn.cursor() as cur:
        for s in range(0, n, chunk):
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerows(zip([RUN] * min(chunk, n - s), [IMAGE] * min(chunk, n - s), ids[s:s + chunk],
                            score[s:s + chunk], area[s:s + chunk], [SRID] * min(chunk, n - s),
                            pix_hex[s:s + chunk], geo_hex[s:s + chunk]))
            buf.seek(0)
            cur.copy_expert(db.load_sql("predictions_copy"), buf)
        cur.execute("ANALYZE predictions")
    conn.commit()
    return n


def read_back(conn, n: int) -> float:
    """Seconds to read the predictions back into Python (all their columns but the constant run
    and image), fetched."""
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SELECT id, tile_id, score, area_m2, srid, geom_pix, geom FROM predictions "
                    "WHERE run = %(run)s AND image = %(image)s", {"run": RUN, "image": IMAGE})
        rows = cur.fetchall()
    conn.rollback()
    seconds = time.perf_counter() - t0
    assert len(rows) == n
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=200, help="tiles per side (default 200: 40,000 tiles)")
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--cell", type=int, default=49, help="building grid cell (px); sets polygons per tile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--halo", type=int, default=8, help="[polygonize] halo_px (default 8, as luigi.cfg)")
    ap.add_argument("--simplify-px", type=float, default=0.0, help="[polygonize] simplify_px for the buildings")
    ap.add_argument("--min-area-m2", type=float, default=0.0, help="[polygonize] min_area_m2 for the buildings")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    step = args.tile_size - args.overlap
    size = (args.tiles - 1) * step + args.tile_size
    tiles = [asdict(s) for s in tile_grid(size, size, args.tile_size, args.overlap)]
    t0 = time.perf_counter()
    buildings = make_buildings(size, args.cell, rng)
    tile_idx, polys = predictions_for(buildings, tiles, size, args.halo)
    print(f"synthetic: {size}x{size} px image, {len(tiles):,} tiles of {args.tile_size} px (overlap {args.overlap}, "
          f"halo {args.halo}), "
          f"{len(buildings):,} buildings -> {len(polys):,} predicted polygons "
          f"({len(polys) / len(tiles):.1f} per tile), generated in {time.perf_counter() - t0:.1f} s", flush=True)

    name = f"footprints_bench_dedup_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    params = db.conn_params()
    admin = psycopg2.connect(**{**params, "dbname": "postgres"})
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE footprints_template')
    try:
        conn = db.connect(dbname=name)
        db.ensure_schema(conn)
        t0 = time.perf_counter()
        n = copy_predictions(conn, tiles, tile_idx, polys, rng)
        print(f"loaded {n:,} predictions with COPY in {time.perf_counter() - t0:.1f} s", flush=True)

        read_before = read_back(conn, n)
        print(f"read-back (before): {n:,} rows in {read_before:.2f} s ({n / read_before:,.0f} rows/s)", flush=True)

        marks = []
        t0 = time.perf_counter()
        nb = deduplicate(conn, RUN, IMAGE, tiles, TRANSFORM, SRID, min_area_m2=args.min_area_m2,
                         simplify_px=args.simplify_px, halo_px=args.halo, width=size, height=size,
                         progress=lambda what, frac: marks.append((what, time.perf_counter())))
        conn.commit()
        dedup_s = time.perf_counter() - t0
        ends = [m[1] for m in marks[1:]] + [t0 + dedup_s]
        print("  steps: " + ", ".join(f"{w} {e - s:.1f} s" for (w, s), e in zip(marks, ends)), flush=True)
        print(f"DeduplicateBorders: {n:,} predictions -> {nb:,} buildings in {dedup_s:.2f} s "
              f"({n / dedup_s:,.0f} rows/s)", flush=True)
        with conn.cursor() as cur:
            cur.execute("SELECT sum(ST_Area(geom_pix)) FROM buildings WHERE run = %s AND image = %s", (RUN, IMAGE))
            area = cur.fetchone()[0]
        conn.rollback()
        read_after = read_back(conn, n)
        read_s = (read_before + read_after) / 2
        print(f"read-back (after): {n:,} rows in {read_after:.2f} s; mean {read_s:.2f} s", flush=True)
        conn.close()
        ok = nb == len(buildings) and abs(area - float(shapely.area(buildings).sum())) < 1e-6 * max(area, 1)
        print(f"every building exactly once and whole: {'yes' if ok else 'NO'} "
              f"({nb:,} of {len(buildings):,} buildings)")
        print(f"dedup vs read-back: {read_s / dedup_s:.2f}x (goal >= 0.2x)")
        return 0 if ok else 1
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
