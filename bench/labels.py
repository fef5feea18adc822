"""Benchmark LoadLabels against ogr2ogr, and MakeMasks' label query against a bare ST_Intersects join.

Input (generated once, cached under bench/_out/): 200,000 building polygons (rotated rectangles
and L-shapes, 5..14 m, with three properties) in EPSG:4326, RFC 7946 GeoJSON, over the area of
bench/tiling.py's 20000x20000 px scene (EPSG:32616, 0.5 m: 10 x 10 km). See bench/_common.py.

Everything runs in a throw-away database cloned from footprints_template (dropped at the end).

1. Loading, rows/s:
   * ours: ``footprints.labels.load_labels`` + the LoadLabels marker + commit, into the ``labels``
     table made by ``footprints.db.ensure_schema`` (emptied first): LIST-partitioned by source, so
     each run builds the source's partition anew (binary COPY into a fresh table, then its
     primary key, GiST index on geom_4326 and partial GiST index on geom (rows not in
     EPSG:4326: none here) built in bulk) and swaps it for the previous run's;
   * peer: ``ogr2ogr -f PostgreSQL PG:... FILE -nln ogr_labels -lco SPATIAL_INDEX=GIST -overwrite``
     (COPY, GiST index built), wall-clock of the whole command.
   Run alternately ``--load-repeat`` times, each into an empty table; the best time of each counts.
2. MakeMasks' label query: the 20000x20000 scene's tiles at [tiling] tile_size/overlap (512/64:
   2,025 tiles) are recorded with ``footprints.tiling.record_tiles``, then, fetched fully into Python:
   * ours: the SQL that ``footprints.masks.query_tile_labels`` runs (sql/tile_labels.sql, margin as
     MakeMasks computes it): each label once, transformed to the image CRS, with its tile ids;
   * peer: ``SELECT t.tile_id, ST_AsBinary(l.geom) FROM tiles t JOIN labels l ON
     ST_Intersects(l.geom_4326, t.footprint) WHERE t.image = ...``: one row per (tile, label).
   The goal line compares these two queries. An info line also times them with their rows made
   into shapely geometries grouped by tile: ``query_tile_labels`` itself, and the bare join's
   rows through the same grouping (one geometry per row), plus query_tile_labels against the
   bare join fetched only. All run alternately ``--repeat`` times after ANALYZE; best of each.

3. Bounded memory: LoadLabels' peak RSS on a file of ``--rss-n`` features (default 200,000: the
   file above, 60 MiB) and on one of ten times as many (2,000,000, 600 MiB: the same features
   ten times over, which the loader does not mind; generated once from the first, cached). Each
   load runs in a fresh Python process (``--rss-child``) into its own throw-away database and
   reports its own peak: VmHWM, the kernel's high-water mark of its memory (not ``ru_maxrss``,
   which Linux carries over from the forking parent through exec). The goal line is
   small / big: 1.0x when memory does not grow with the file (a loader that read the whole
   file would give about 0.1x).

    .venv/bin/python bench/labels.py
    .venv/bin/python bench/labels.py --n 20000     # a quick look
    .venv/bin/python bench/labels.py --rss-only    # only the peak-RSS line (3.)
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SIZE = 20000
IMAGE = "bench_scene"


def label_file(n: int, seed: int = 0) -> Path:
    """``n`` buildings of the scene as an RFC 7946 GeoJSON (EPSG:4326, no crs member)."""
    import pyogrio
    import shapely
    from pyproj import Transformer

    path = C.OUT / f"labels_{n}_s{seed}.geojson"
    if path.exists():
        return path
    C.OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    polys, tone, kind = C.buildings(SIZE, n, seed)
    utm = C.pixel_to_crs(polys, C.scene_transform())
    tr = Transformer.from_crs(f"EPSG:{C.EPSG}", "EPSG:4326", always_xy=True)
    ll = shapely.transform(utm, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    fields = {"building_id": np.arange(1, n + 1, dtype=np.int64),
              "roof": np.array(["light", "red", "grey", "white", "brown", "tan", "dark", "orange"], dtype=object)[tone - 1],
              "kind": np.where(kind == 1, "L", "rect").astype(object)}
    pyogrio.raw.write(str(tmp), shapely.to_wkb(ll), list(fields.values()),
                      fields=list(fields), crs="EPSG:4326", driver="GeoJSON", encoding="UTF-8",
                      layer_options={"RFC7946": "YES", "WRITE_BBOX": "NO"}, geometry_type="Polygon")
    os.replace(tmp, path)
    C.log(f"generated {path.name}: {n:,} polygons, {path.stat().st_size / 2**20:.0f} MiB, "
          f"in {time.perf_counter() - t0:.1f} s")
    return path


def repeated_file(path: Path, times: int) -> Path:
    """The FeatureCollection at ``path`` (as ``label_file`` writes it: one feature per line
    between ``"features": [`` and ``]``) with its features ``times`` over, written streaming."""
    out = path.with_name(f"{path.stem}_x{times}.geojson")
    if out.exists():
        return out
    t0 = time.perf_counter()
    text = path.read_bytes()
    head, rest = text.split(b'"features": [\n', 1)
    body, tail = rest.rsplit(b"\n]", 1)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:6]}.tmp")
    with open(tmp, "wb") as f:
        f.write(head + b'"features": [\n')
        for i in range(times):
            f.write(body + (b",\n" if i < times - 1 else b"\n]"))
        f.write(tail)
    os.replace(tmp, out)
    C.log(f"generated {out.name}: {path.name}'s features {times} times over, {out.stat().st_size / 2**20:.0f} MiB, "
          f"in {time.perf_counter() - t0:.1f} s")
    return out


def rss_child(path: str, dbname: str) -> int:
    """``--rss-child``: load ``path`` as LoadLabels does, then print this process's peak RSS (JSON)."""
    import json
    import resource

    dt, report, n = run_ours(dbname, Path(path))
    hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    print(json.dumps({"rows": n, "seconds": dt, "vmhwm_kib": hwm,
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
    return 0


def peak_rss(path: Path) -> dict:
    """A LoadLabels of ``path`` in a fresh process and throw-away database: its peak RSS and more."""
    import json

    with C.throwaway_db("labels_rss") as dbname:
        done = subprocess.run([sys.executable, __file__, "--rss-child", str(path), "--rss-db", dbname],
                              check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def rss_line(n: int) -> None:
    small = label_file(n)
    big = repeated_file(small, 10)
    res = {}
    for name, path, count in (("small", small, n), ("big", big, 10 * n)):
        res[name] = r = peak_rss(path)
        assert r["rows"] == count, (r, count)
        C.log(f"LoadLabels of {count:,} features ({path.stat().st_size / 2**20:.0f} MiB): {r['seconds']:.1f} s, "
              f"peak RSS {r['vmhwm_kib'] / 1024:.0f} MiB, in its own process")
    print(f"LoadLabels peak RSS, {n} vs {10 * n} features: "
          f"{res['small']['vmhwm_kib'] / res['big']['vmhwm_kib']:.2f}x (goal >= 0.8x)", flush=True)


def pg_dsn(dbname: str) -> str:
    from footprints import db

    p = {**db.conn_params(), "dbname": dbname}
    p.pop("password", None)  # libpq takes PGPASSWORD from the environment; keep it off the command line
    return " ".join(f"{k}={v}" for k, v in p.items())


def run_ours(dbname: str, path: Path):
    from footprints import db
    from footprints.labels import load_labels, source_name
    from tasks.targets import PostgresMarker

    conn = db.connect(dbname=dbname)
    try:
        db.ensure_schema(conn)
        with conn.cursor() as cur:  # an empty table (indexes kept) for every run
            cur.execute("TRUNCATE labels, table_updates")
        conn.commit()
        t0 = time.perf_counter()
        report = load_labels(conn, path)
        PostgresMarker(f"labels:{source_name(path)}:bench", "labels").touch(conn)
        conn.commit()
        dt = time.perf_counter() - t0
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM labels")
            n = cur.fetchone()[0]
    finally:
        conn.close()
    return dt, report, n


def run_ogr(dbname: str, path: Path):
    exe = shutil.which("ogr2ogr") or "/usr/bin/ogr2ogr"
    cmd = [exe, "-f", "PostgreSQL", f"PG:{pg_dsn(dbname)}", str(path), "-nln", "ogr_labels",
           "-lco", "SPATIAL_INDEX=GIST", "-overwrite"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    dt = time.perf_counter() - t0
    from footprints import db

    conn = db.connect(dbname=dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ogr_labels")
        n = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'ogr_labels' AND indexdef ILIKE '%%USING gist%%'")
        gist = cur.fetchone()[0]
    conn.close()
    return dt, n, gist


def record_scene_tiles(conn, tile_size: int, overlap: int) -> tuple[str, int]:
    """The scene's tile rows in ``tiles`` via TileImage's own record_tiles; returns the tiling key."""
    from rasterio.crs import CRS

    from footprints.tiling import record_tiles, tile_grid, tile_records

    transform = C.scene_transform()
    specs = tile_grid(SIZE, SIZE, tile_size, overlap)
    key = f"ts{tile_size}_ov{overlap}"
    index = {"image": IMAGE, "tiling": key, "width": SIZE, "height": SIZE, "count": 3, "dtype": "uint8",
             "nodata": None, "transform": list(transform)[:6], "tiles": tile_records(specs, transform)}
    record_tiles(conn, IMAGE, str(C.OUT / "scene.tif"), index, CRS.from_epsg(C.EPSG), C.OUT / "tiles")
    conn.commit()
    return key, len(specs)


BARE_JOIN = ("SELECT t.tile_id, ST_AsBinary(l.geom) FROM tiles t JOIN labels l "
             "ON ST_Intersects(l.geom_4326, t.footprint) WHERE t.image = %(image)s")


def fetch_all(conn, sql: str, params: dict) -> list:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def bare_join(conn) -> list:
    return fetch_all(conn, BARE_JOIN, {"image": IMAGE})


def group_pairs(rows) -> dict:
    """(tile_id, wkb) rows -> {tile_id: [geometry]}, as footprints.masks.assign_to_tiles groups its rows."""
    import shapely

    out: dict = {}
    for tile_id, wkb in rows:
        out.setdefault(tile_id, []).append(shapely.from_wkb(bytes(wkb)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="polygons (default 200,000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each label query (best counts)")
    ap.add_argument("--load-repeat", type=int, default=3, help="runs of each loader (best counts)")
    ap.add_argument("--rss-n", type=int, default=200_000, help="features of the smaller file of the peak-RSS line")
    ap.add_argument("--rss-only", action="store_true", help="only the peak-RSS line")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--rss-db", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        return rss_child(args.rss_child, args.rss_db)
    if args.rss_only:
        rss_line(args.rss_n)
        return 0

    from footprints.labels import source_name
    from footprints.masks import query_tile_labels
    from tasks.config import masks, tiling

    path = label_file(args.n)
    with C.throwaway_db("labels") as dbname:
        from footprints import db

        # ---- loading, alternately, best of --load-repeat
        ogr_s = ours_s = float("inf")
        for _ in range(args.load_repeat):
            s, ogr_n, gist = run_ogr(dbname, path)
            ogr_s = min(ogr_s, s)
            s, report, ours_n = run_ours(dbname, path)
            ours_s = min(ours_s, s)
        C.log(f"ogr2ogr: {ogr_n:,} rows in {ogr_s:.2f} s ({ogr_n / ogr_s:,.0f} rows/s), {gist} GiST index "
              f"(best of {args.load_repeat})")
        C.log(f"LoadLabels: {ours_n:,} rows in {ours_s:.2f} s ({ours_n / ours_s:,.0f} rows/s); "
              f"{report.repaired} repaired, {len(report.rejected)} rejected; geom + geom_4326 + jsonb properties, "
              f"2 GiST (one partial) + 1 btree index "
              f"(best of {args.load_repeat})")
        assert ours_n == ogr_n == args.n, (ours_n, ogr_n, args.n)
        print(f"LoadLabels vs ogr2ogr rows/s: {(ours_n / ours_s) / (ogr_n / ogr_s):.2f}x (goal >= 1.5x)", flush=True)

        # ---- MakeMasks' label query
        t = tiling()
        conn = db.connect(dbname=dbname)
        key, n_tiles = record_scene_tiles(conn, t.tile_size, t.overlap)
        with conn.cursor() as cur:
            cur.execute("ANALYZE labels")
            cur.execute("ANALYZE tiles")
        conn.commit()
        px = C.RES
        margin = max(masks().contact_distance, 1.0 * px) + px  # as MakeMasks.run
        src = source_name(path)
        best = {k: float("inf") for k in ("bare", "qtl", "bare_grouped")}

        def timed(name, fn):
            t0 = time.perf_counter()
            out = fn()
            conn.rollback()
            best[name] = min(best[name], time.perf_counter() - t0)
            return out

        for _ in range(args.repeat):  # alternating, best of each
            bare_rows = timed("bare", lambda: bare_join(conn))
            by_tile = timed("qtl", lambda: query_tile_labels(conn, IMAGE, key, [src], margin))
            bare_by_tile = timed("bare_grouped", lambda: group_pairs(bare_join(conn)))
        conn.close()
        pairs_ours = sum(len(v) for v in by_tile.values())
        labels_ours = len({id(g) for v in by_tile.values() for g in v})
        # every label once; each tile gets at least the bare join's labels (ours grows tiles by the margin)
        assert labels_ours == args.n, (labels_ours, args.n)
        assert all(len(by_tile.get(t, ())) >= len(g) for t, g in bare_by_tile.items())
        C.log(f"label query ({n_tiles:,} tiles {key}, margin {margin:g} m), best of {args.repeat}: "
              f"MakeMasks' label lookup (query_tile_labels: one index scan per image, each label once, "
              f"assigned to tiles client-side, as shapely geometries in the image CRS) {best['qtl']:.2f} s "
              f"for {pairs_ours:,} (tile, label) pairs; bare ST_Intersects join {len(bare_by_tile and bare_rows):,} rows: "
              f"fetched only {best['bare']:.2f} s, made into the same per-tile shapely lists {best['bare_grouped']:.2f} s")
        # like for like: both end with every tile's labels as geometries, what MakeMasks rasterizes
        print(f"MakeMasks label query vs bare ST_Intersects join: {best['bare_grouped'] / best['qtl']:.2f}x (goal >= 1.0x)")
        print(f"  (info) vs the bare join only fetched, no geometries built: {best['bare'] / best['qtl']:.2f}x")
    rss_line(args.rss_n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
