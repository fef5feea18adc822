"""Benchmark DeduplicateBorders: 1,000,000 predicted polygons over 40,000 tiles.

Synthetic predictions go straight into a throw-away PostGIS database (COPY): a 200 x 200 grid
of 256 px tiles overlapping by 32 px (the tiler's grid, cores included), buildings (rectangles
and L-shapes, 6..40 px, never touching) on a jittered grid, and for every tile window each
building that enters it, clipped to the window -- exactly what Polygonize stores, with the
fragments and duplicates along every tile border. About 25 polygons per tile.

Reported: DeduplicateBorders' time and rows/s, the time to read the same rows back into Python
(``SELECT ... FROM predictions WHERE run = ...``, fetched), and their ratio
(read time / dedup time; goal >= 0.2x). It also checks that every building comes out once.

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

from tasks import db  # noqa: E402
from tasks.dedup import deduplicate  # noqa: E402
from tasks.polygonize import pixel_to_geo  # noqa: E402
from tasks.tiling import tile_grid  # noqa: E402

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


def predictions_for(buildings: np.ndarray, tiles: list[dict]):
    """(tile index, clipped polygon) for every tile window each building enters."""
    starts_x = np.unique([t["col_off"] for t in tiles])
    starts_y = np.unique([t["row_off"] for t in tiles])
    size = tiles[0]["width"]
    nx = len(starts_x)
    b = shapely.bounds(buildings)
    i0 = np.searchsorted(starts_x + size, b[:, 0], side="right")
    i1 = np.searchsorted(starts_x, b[:, 2], side="left") - 1
    j0 = np.searchsorted(starts_y + size, b[:, 1], side="right")
    j1 = np.searchsorted(starts_y, b[:, 3], side="left") - 1
    ci, cj = i1 - i0 + 1, j1 - j0 + 1
    count = ci * cj
    bid = np.repeat(np.arange(len(buildings)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    ti = i0[bid] + k % ci[bid]
    tj = j0[bid] + k // ci[bid]
    wx0, wy0 = starts_x[ti], starts_y[tj]
    inside = (b[bid, 0] >= wx0) & (b[bid, 2] <= wx0 + size) & (b[bid, 1] >= wy0) & (b[bid, 3] <= wy0 + size)
    polys = buildings[bid].copy()
    cut = ~inside
    polys[cut] = shapely.intersection(polys[cut], shapely.box(wx0[cut], wy0[cut], wx0[cut] + size, wy0[cut] + size))
    tile_idx = tj * nx + ti
    # a clipped L-shape may fall apart (or leave lines on the window edge): its polygons only
    parts, src = shapely.get_parts(polys, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0)
    return tile_idx[src[keep]], parts[keep]


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=200, help="tiles per side (default 200: 40,000 tiles)")
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--cell", type=int, default=55, help="building grid cell (px); sets polygons per tile")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    step = args.tile_size - args.overlap
    size = (args.tiles - 1) * step + args.tile_size
    tiles = [asdict(s) for s in tile_grid(size, size, args.tile_size, args.overlap)]
    t0 = time.perf_counter()
    buildings = make_buildings(size, args.cell, rng)
    tile_idx, polys = predictions_for(buildings, tiles)
    print(f"synthetic: {size}x{size} px image, {len(tiles):,} tiles of {args.tile_size} px (overlap {args.overlap}), "
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

        t0 = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("SELECT id, tile_id, score, area_m2, srid, geom_pix, geom FROM predictions "
                        "WHERE run = %(run)s AND image = %(image)s", {"run": RUN, "image": IMAGE})
            rows = cur.fetchall()
        conn.rollback()
        read_s = time.perf_counter() - t0
        assert len(rows) == n
        del rows
        print(f"read-back: {n:,} rows in {read_s:.2f} s ({n / read_s:,.0f} rows/s)", flush=True)

        t0 = time.perf_counter()
        nb = deduplicate(conn, RUN, IMAGE, tiles, TRANSFORM, SRID, min_area_m2=0.0, simplify_px=0.0,
                         width=size, height=size)
        conn.commit()
        dedup_s = time.perf_counter() - t0
        print(f"DeduplicateBorders: {n:,} predictions -> {nb:,} buildings in {dedup_s:.2f} s "
              f"({n / dedup_s:,.0f} rows/s)", flush=True)
        with conn.cursor() as cur:
            cur.execute("SELECT sum(ST_Area(geom_pix)) FROM buildings WHERE run = %s AND image = %s", (RUN, IMAGE))
            area = cur.fetchone()[0]
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
