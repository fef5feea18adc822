"""Deduplication across tile borders: every building exactly once and whole, however the tiles overlap.

Works in SQL over the ``predictions`` of one (run, image) and writes its partition of
``buildings``:

1. ``dedup_pieces``: predictions strictly inside their tile's core are whole buildings (step 4
   takes them straight from ``predictions``). Of the others, a polygon that every tile whose
   core it reaches saw identically (grouped by exact equality; one per cell of the cores'
   rectangle it spans, touching that rectangle's outline only on the image border) is a whole
   building too, kept once. The rest are clipped to their tile's core. Cores partition the
   image, so the duplicates from overlapping windows disappear and each building becomes a set
   of non-overlapping pieces whose edges on the core lines coincide exactly (the polygons are
   pixel-exact, the cores integer rectangles).
2. ``dedup_links``: pieces in neighbouring cores are the same building when
   - the windows the two tiles read overlap (tiling overlap + Polygonize's halo) and both
     tiles' polygons agree there (identical, or sharing area > 0 and at least
     ``merge_overlap`` times the smaller one's area inside the overlap) -- two buildings a
     pixel apart share no area, nor do buildings the 3-class head split apart, even where
     their split line lies on the core line;
   - or, where the windows only touch (tiling overlap 0 and halo 0, so no tile saw across the
     line), the pieces share a stretch of the core line at least ``min_shared_px`` long (then
     two buildings split exactly along a core line would be joined: keep a halo).
3. ``dedup_components``: connected components of the links (the link pairs out in one query,
   scipy's connected components, the labels back with one COPY), and per component whether
   one tile's polygon is already the union of its pieces (:func:`whole_components`: the
   common building cut by one tile's window but seen entirely by its neighbour).
4. ``buildings_insert``: each component unioned (or that polygon taken); then per whole
   building the minimum area (m²), the simplification (pixels), the geo geometry (image CRS,
   via the image's affine transform) and EPSG:4326. The rows go into a fresh table without
   indexes (``buildings_partition``); its primary key and GiST indexes are then built in bulk
   (``buildings_index``: sorted GiST builds), the batch's previous partition, if any, is
   dropped, and the table is attached to the LIST-partitioned ``buildings`` as the partition of
   the batch ``buildings_batch(run, image)`` (``buildings_attach``). Maintaining three GiST
   indexes row by row cost ~40 µs a row; the bulk builds cost ~5 µs.

All thresholds are in pixels or in units of the image CRS, never in degrees. Everything runs
inside the caller's transaction; the caller (the DeduplicateBorders task) commits the rows with
its marker. Nothing locks ``buildings`` before the final drop-and-attach, so DeduplicateBorders
of other images run alongside (a rerun waits there for transactions still reading ``buildings``).
"""
from __future__ import annotations

import csv
import hashlib
import io

import numpy as np
from psycopg2 import sql as psql
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from footprints.db import load_sql, next_partition
from footprints.errors import InputError
from footprints.geo import as_affine, pixel_area
from footprints.polygonize import read_window

__all__ = ["TILE_FIELDS", "check_cores", "load_tiles", "components", "whole_components", "partition_names",
           "batch_key", "write_buildings", "deduplicate"]

TILE_FIELDS = ("tile_id", "col_off", "row_off", "width", "height",
               "core_col_off", "core_row_off", "core_width", "core_height")


def check_cores(tiles, width: int, height: int, source: str = "tile index") -> None:
    """Raise InputError (a ValueError naming ``source``) unless every core lies in its window and the cores
    form a grid that partitions the width x height image: the core columns cut [0, width)
    into intervals, the core rows cut [0, height), and every (column, row) cell is exactly one
    tile's core. (The tiler's cores do; dedup_links.sql relies on it.)"""
    if not tiles:
        raise InputError(source, "no tiles")
    seen = set()
    cells = {}
    for t in tiles:
        missing = [k for k in TILE_FIELDS if k not in t]
        if missing:
            raise InputError(source, f"tile {t.get('tile_id', '?')!r} lacks {', '.join(missing)}")
        tid = t["tile_id"]
        if tid in seen:
            raise InputError(source, f"tile id {tid!r} appears twice")
        seen.add(tid)
        x0, y0, x1, y1 = t["col_off"], t["row_off"], t["col_off"] + t["width"], t["row_off"] + t["height"]
        cx0, cy0 = t["core_col_off"], t["core_row_off"]
        cx1, cy1 = cx0 + t["core_width"], cy0 + t["core_height"]
        if t["core_width"] <= 0 or t["core_height"] <= 0:
            raise InputError(source, f"tile {tid!r} has an empty core")
        if not (x0 <= cx0 and cx1 <= x1 and y0 <= cy0 and cy1 <= y1):
            raise InputError(source, f"the core of tile {tid!r} ({cx0},{cy0})-({cx1},{cy1}) is not inside its "
                             f"window ({x0},{y0})-({x1},{y1})")
        if not (0 <= cx0 and cx1 <= width and 0 <= cy0 and cy1 <= height):
            raise InputError(source, f"the core of tile {tid!r} leaves the {width}x{height} image")
        cell = ((cx0, cx1), (cy0, cy1))
        if cell in cells:
            raise InputError(source, f"the cores of tiles {cells[cell]!r} and {tid!r} overlap (both {cell})")
        cells[cell] = tid
    for axis, n, name in ((0, width, "columns"), (1, height, "rows")):
        ivs = sorted({c[axis] for c in cells})
        pos, prev = 0, None
        for a, b in ivs:
            if a < pos:
                raise InputError(source, f"core {name} [{prev[0]}, {prev[1]}) and [{a}, {b}) overlap: cores must "
                                 "partition the image in a grid")
            if a > pos:
                raise InputError(source, f"core {name} leave pixels [{pos}, {a}) uncovered: cores must partition "
                                 "the image in a grid")
            pos, prev = b, (a, b)
        if pos != n:
            raise InputError(source, f"core {name} end at {pos}, the image has {n}: cores must partition the image")
    nx = len({c[0] for c in cells})
    ny = len({c[1] for c in cells})
    if len(cells) != nx * ny:
        raise InputError(source, f"{len(cells)} cores for a grid of {nx} x {ny}: cores must partition the image")


def load_tiles(conn, tiles, halo_px: int = 0, width: int | None = None, height: int | None = None) -> None:
    """Create the transaction's ``dedup_tiles`` table and COPY each tile's read window (its
    window grown by ``halo_px`` within the image, as Polygonize read it), core and core grid
    cell (column, row) into it."""
    if width is None:
        width = max(t["core_col_off"] + t["core_width"] for t in tiles)
    if height is None:
        height = max(t["core_row_off"] + t["core_height"] for t in tiles)
    col = {x: i for i, x in enumerate(sorted({int(t["core_col_off"]) for t in tiles}))}
    row = {y: j for j, y in enumerate(sorted({int(t["core_row_off"]) for t in tiles}))}
    buf = io.StringIO()
    w = csv.writer(buf)
    for t in tiles:
        c0, r0, ww, hh = read_window(t, int(halo_px), width, height)
        cx0, cy0 = int(t["core_col_off"]), int(t["core_row_off"])
        w.writerow([t["tile_id"], c0, r0, c0 + ww, r0 + hh, cx0, cy0,
                    cx0 + int(t["core_width"]), cy0 + int(t["core_height"]), col[cx0], row[cy0]])
    buf.seek(0)
    with conn.cursor() as cur:
        cur.execute(load_sql("dedup_tiles"))
        cur.copy_expert(load_sql("dedup_tiles_copy"), buf)
        cur.execute("ANALYZE dedup_tiles")


def components(pairs) -> tuple:
    """Connected components of an undirected graph given as (a, b) id pairs:
    ``(ids, labels)`` with each id's label = the smallest id of its component."""
    e = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(e):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ids, inv = np.unique(e, return_inverse=True)
    inv = inv.reshape(-1, 2)
    n = len(ids)
    g = coo_matrix((np.ones(len(e), np.int8), (inv[:, 0], inv[:, 1])), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    smallest = np.full(lab.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, lab, ids)
    return ids, smallest[lab]


def whole_components(ids, labels, pairs, agree, pieces, rtol: float = 1e-9):
    """Per id of :func:`components`' ``(ids, labels)``: the piece whose whole polygon is its
    component's building, or -1 where the pieces must be unioned.

    ``pairs``: the links, ``agree``: per link, whether the two tiles' polygons are identical in
    the overlap of their read windows; ``pieces``: rows ``(piece_id, pred_id, complete, area,
    whole_area)`` covering ``ids``, ``complete`` meaning that the tile saw the whole polygon
    entirely (it does not reach the edge of the window the tile read, except on the image
    border).

    A component qualifies when its pieces come from two predictions, every link agrees, and one
    of the predictions is complete with an area equal (within ``rtol``) to the sum of the
    pieces' areas. Then that polygon is the union of the pieces: the other tile's pieces lie in
    its part of the overlap (it agrees with a polygon that stays inside the first window there,
    so it cannot leave that window either), the pieces do not overlap (cores partition the
    image), and their areas add up to the polygon's."""
    ids, labels = np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    out = np.full(len(ids), -1, dtype=np.int64)
    if not len(ids):
        return out
    cols = list(zip(*pieces)) or [(), (), (), (), ()]
    pid = np.array(cols[0], dtype=np.int64)
    order = np.argsort(pid)
    pid = pid[order]
    pos = np.searchsorted(pid, ids)
    if (pos >= len(pid)).any() or (pid[np.minimum(pos, len(pid) - 1)] != ids).any():
        raise ValueError("whole_components: a linked piece is missing from the pieces")
    pos = order[pos]
    pred = np.array(cols[1], dtype=np.int64)[pos]
    complete = np.array(cols[2], dtype=bool)[pos]
    area = np.array(cols[3], dtype=np.float64)[pos]
    warea = np.array(cols[4], dtype=np.float64)[pos]

    comps, cinv = np.unique(labels, return_inverse=True)
    n = len(comps)
    ok = np.ones(n, dtype=bool)
    e = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(e):
        np.logical_and.at(ok, cinv[np.searchsorted(ids, e[:, 0])], np.asarray(agree, dtype=bool))
    # exactly two predictions per component
    cp = np.unique(np.stack([cinv, pred], axis=1), axis=0)
    ok &= np.bincount(cp[:, 0], minlength=n) == 2
    total = np.bincount(cinv, weights=area, minlength=n)
    cand = complete & ok[cinv] & (np.abs(warea - total[cinv]) <= rtol * total[cinv])
    best = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(best, cinv[cand], ids[cand])
    has = best != np.iinfo(np.int64).max
    out[has[cinv]] = best[cinv][has[cinv]]
    return out


def partition_names(batch: str) -> tuple[str, str]:
    """The two table names the partition of ``batch`` alternates between (a rerun builds the
    new partition beside the old one, then drops the old): ``buildings_<hash>_0`` and ``_1``,
    the hash (96 bits of SHA-256) making any run or image name a short, safe identifier."""
    h = hashlib.sha256(batch.encode("utf-8")).hexdigest()[:24]
    return f"buildings_{h}_0", f"buildings_{h}_1"


def batch_key(conn, run: str, image: str) -> str:
    """The ``buildings`` partition key of (run, image): SQL ``buildings_batch(run, image)``,
    defined once, in sql/schema.sql."""
    with conn.cursor() as cur:
        cur.execute("SELECT buildings_batch(%s, %s)", (run, image))
        return cur.fetchone()[0]


def write_buildings(conn, params: dict, progress=None) -> int:
    """Step 4 of :func:`deduplicate` (after the pieces and their components): the buildings of
    ``params['run']``, ``params['image']`` (and the parameters of sql/buildings_insert.sql)
    become that batch's partition of ``buildings``, replacing the previous one. Runs in the
    caller's transaction; returns the number of rows. ``progress(what, fraction)``: optional.

    Nothing locks ``buildings`` until the end (the fill and the index builds work on a table
    of their own); then the old partition is dropped and the new one attached, which holds
    ``buildings`` only until the caller commits."""
    batch = batch_key(conn, params["run"], params["image"])
    child, old = next_partition(conn, "buildings_partitions", partition_names(batch))
    with conn.cursor() as cur:
        ident = {"child": psql.Identifier(child), "bound": psql.Identifier(f"{child}_batch"),
                 "pkey": psql.Identifier(f"{child}_pkey")}
        for col in ("geom", "geom_pix", "geom_4326"):
            ident[f"{col}_gix"] = psql.Identifier(f"{child}_{col}_gix")
        p = {"classes": [], **params, "batch": batch}

        def run(name):
            cur.execute(psql.SQL(load_sql(name)).format(**ident), p)

        run("buildings_partition")
        run("buildings_insert")
        n = cur.rowcount
        if progress:
            progress("indexing buildings", 0.9)
        cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # the sorts of the index builds
        run("buildings_index")
        for name in old:
            cur.execute(psql.SQL("DROP TABLE {}").format(psql.Identifier(name)))
        run("buildings_attach")
        return n


def deduplicate(conn, run: str, image: str, tiles, transform, srid: int, *, min_area_m2: float = 0.0,
                simplify_px: float = 0.0, halo_px: int = 0, min_shared_px: float = 1.0,
                merge_overlap: float = 0.5, width: int | None = None, height: int | None = None,
                progress=None, classes=()) -> int:
    """Replace the ``buildings`` of (run, image) by the deduplicated ``predictions`` of the same
    (run, image); returns the number of buildings. ``tiles``: the tile records (window and core
    in image pixels, see TILE_FIELDS); ``halo_px``: the halo Polygonize read around each
    window; ``transform``: the image's affine transform; ``srid``: the image CRS. With
    ``width`` and ``height`` the cores are checked first. Runs in the caller's transaction and
    does not commit. ``classes`` (building types): the class names, in the order of the
    predictions' ``conf``; each building gets ``conf`` (per class, the area-weighted mean of its
    pieces') and ``class`` (the highest).

    Set-based SQL throughout; the one step done in Python is the connected components of the
    links between pieces (a graph algorithm, which SQL does poorly): the links and the pieces
    they join come out in two queries, and the labels go back with one COPY. The result
    replaces the batch's partition of ``buildings`` (:func:`write_buildings`)."""
    if width is not None and height is not None:
        check_cores(tiles, width, height)
    if width is None:
        width = max(t["core_col_off"] + t["core_width"] for t in tiles)
    if height is None:
        height = max(t["core_row_off"] + t["core_height"] for t in tiles)
    t = as_affine(transform)
    params = {
        "run": run, "image": image, "srid": int(srid), "pixel_area": pixel_area(t),
        "min_area_m2": float(min_area_m2), "simplify_px": float(simplify_px),
        "min_shared_px": float(min_shared_px), "merge_overlap": float(merge_overlap),
        "width": int(width), "height": int(height), "classes": list(classes),
        "a": t.a, "b": t.b, "c": t.c, "d": t.d, "e": t.e, "f": t.f,
    }

    def step(what, frac):
        if progress:
            progress(what, frac)

    load_tiles(conn, tiles, halo_px, width, height)
    with conn.cursor() as cur:
        step("clipping polygons to tile cores", 0.05)
        cur.execute(load_sql("dedup_pieces"), params)
        step("linking pieces across core borders", 0.3)
        cur.execute(load_sql("dedup_links"), params)
        step("joining linked pieces", 0.5)
        cur.execute(load_sql("dedup_components"))
        links = cur.fetchall()
        pairs = [(a, b) for a, b, _ in links]
        ids, labels = components(pairs)
        cur.execute(load_sql("dedup_components_pieces"))
        whole_of = whole_components(ids, labels, pairs, [g for _, _, g in links], cur.fetchall())
        buf = io.StringIO("".join(f"{i},{c},{w if w >= 0 else ''}\n"
                                  for i, c, w in zip(ids.tolist(), labels.tolist(), whole_of.tolist())))
        cur.copy_expert(load_sql("dedup_components_copy"), buf)
        cur.execute("ANALYZE dedup_comp")
        step("writing buildings", 0.6)
    return write_buildings(conn, params, progress)
