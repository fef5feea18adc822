"""DeduplicateBorders: every building exactly once and whole, however the tiles overlap.

Works in SQL over the ``predictions`` of one (run, image) and writes ``buildings``:

1. ``dedup_pieces``: every tile's polygon is clipped to the tile's core. Cores partition the
   image, so the duplicates from overlapping windows disappear and each building becomes a set
   of non-overlapping pieces whose edges on the core lines coincide exactly (the polygons are
   pixel-exact, the cores integer rectangles).
2. ``dedup_links``: pieces in neighbouring cores are the same building when
   - the two tile windows overlap and both tiles' polygons agree there (their shared area is
     > 0 and at least ``merge_overlap`` times the smaller one's area inside the overlap) -- two
     buildings a pixel apart share no area, nor do buildings the 3-class head split apart, even
     where their split line lies on the core line;
   - or, where the windows only touch (overlap 0, so no tile saw across the line), the pieces
     share a stretch of the core line at least ``min_shared_px`` long.
3. ``dedup_components``: connected components of the links (label propagation in SQL).
4. ``buildings_insert``: each component unioned; then per whole building the minimum area
   (m²), the simplification (pixels), the geo geometry (image CRS, via the image's affine
   transform) and EPSG:4326.

All thresholds are in pixels or in units of the image CRS, never in degrees. Everything runs
inside the caller's transaction; the task commits the rows with its marker.
"""
from __future__ import annotations

import csv
import io
import json

import luigi

from tasks.polygonize import _affine, pixel_area, run_key

__all__ = ["TILE_FIELDS", "check_cores", "load_tiles", "deduplicate", "DeduplicateBorders"]

TILE_FIELDS = ("tile_id", "col_off", "row_off", "width", "height",
               "core_col_off", "core_row_off", "core_width", "core_height")


# ---------------------------------------------------------------- pure functions


def check_cores(tiles, width: int, height: int, source: str = "tile index") -> None:
    """Raise ValueError (naming ``source``) unless every core lies in its window and the cores
    partition the width x height image (no gap, no overlap)."""
    if not tiles:
        raise ValueError(f"{source}: no tiles")
    seen = set()
    total = 0
    boxes = []
    for t in tiles:
        missing = [k for k in TILE_FIELDS if k not in t]
        if missing:
            raise ValueError(f"{source}: tile {t.get('tile_id', '?')!r} lacks {', '.join(missing)}")
        tid = t["tile_id"]
        if tid in seen:
            raise ValueError(f"{source}: tile id {tid!r} appears twice")
        seen.add(tid)
        x0, y0, x1, y1 = t["col_off"], t["row_off"], t["col_off"] + t["width"], t["row_off"] + t["height"]
        cx0, cy0 = t["core_col_off"], t["core_row_off"]
        cx1, cy1 = cx0 + t["core_width"], cy0 + t["core_height"]
        if t["core_width"] <= 0 or t["core_height"] <= 0:
            raise ValueError(f"{source}: tile {tid!r} has an empty core")
        if not (x0 <= cx0 and cx1 <= x1 and y0 <= cy0 and cy1 <= y1):
            raise ValueError(f"{source}: the core of tile {tid!r} ({cx0},{cy0})-({cx1},{cy1}) is not inside its "
                             f"window ({x0},{y0})-({x1},{y1})")
        if not (0 <= cx0 and cx1 <= width and 0 <= cy0 and cy1 <= height):
            raise ValueError(f"{source}: the core of tile {tid!r} leaves the {width}x{height} image")
        total += (cx1 - cx0) * (cy1 - cy0)
        boxes.append((cx0, cy0, cx1, cy1, tid))
    if total != width * height:
        raise ValueError(f"{source}: the tile cores cover {total} px, the image has {width * height}: "
                         "cores must partition the image")
    # equal total area + pairwise disjoint == partition; sweep along x for overlaps
    boxes.sort()
    active: list = []
    for b in boxes:
        active = [a for a in active if a[2] > b[0]]
        for a in active:
            if a[1] < b[3] and b[1] < a[3]:
                raise ValueError(f"{source}: the cores of tiles {a[4]!r} and {b[4]!r} overlap")
        active.append(b)


def load_tiles(conn, tiles) -> None:
    """Create the transaction's ``dedup_tiles`` table and COPY the tile records into it."""
    from tasks.db import load_sql

    buf = io.StringIO()
    w = csv.writer(buf)
    for t in tiles:
        w.writerow([t["tile_id"]] + [int(t[k]) for k in TILE_FIELDS[1:]])
    buf.seek(0)
    with conn.cursor() as cur:
        cur.execute(load_sql("dedup_tiles"))
        cur.copy_expert(load_sql("dedup_tiles_copy"), buf)
        cur.execute("ANALYZE dedup_tiles")


def deduplicate(conn, run: str, image: str, tiles, transform, srid: int, *, min_area_m2: float = 0.0,
                simplify_px: float = 0.0, min_shared_px: float = 1.0, merge_overlap: float = 0.5,
                width: int | None = None, height: int | None = None, progress=None) -> int:
    """Replace the ``buildings`` of (run, image) by the deduplicated ``predictions`` of the same
    (run, image); returns the number of buildings. ``tiles``: the tile records (window and core
    in image pixels, see TILE_FIELDS); ``transform``: the image's affine transform; ``srid``:
    the image CRS. Runs in the caller's transaction and does not commit."""
    from tasks.db import load_sql

    if width is not None and height is not None:
        check_cores(tiles, width, height)
    t = _affine(transform)
    params = {
        "run": run, "image": image, "srid": int(srid), "pixel_area": pixel_area(t),
        "min_area_m2": float(min_area_m2), "simplify_px": float(simplify_px),
        "min_shared_px": float(min_shared_px), "merge_overlap": float(merge_overlap),
        "a": t.a, "b": t.b, "c": t.c, "d": t.d, "e": t.e, "f": t.f,
    }
    steps = [("clipping polygons to tile cores", "dedup_pieces", True),
             ("linking pieces across core borders", "dedup_links", True),
             ("joining linked pieces", "dedup_components", False),
             ("writing buildings", "buildings_delete", True),
             ("writing buildings", "buildings_insert", True)]
    load_tiles(conn, tiles)
    n = 0
    with conn.cursor() as cur:
        for i, (what, name, with_params) in enumerate(steps):
            if progress:
                progress(what, i / len(steps))
            if with_params:
                cur.execute(load_sql(name), params)
            else:
                cur.execute(load_sql(name))
            if name == "buildings_insert":
                n = cur.rowcount
    return n


# ---------------------------------------------------------------- the task


class DeduplicateBorders(luigi.Task):
    """The buildings of one image, each exactly once and whole, in PostGIS ``buildings``."""

    image = luigi.Parameter(description="image id")

    def requires(self):
        from tasks.polygonize import Polygonize
        from tasks.tiling import TileImage

        return {"predictions": Polygonize(image=self.image), "tiles": TileImage(image=self.image)}

    def run_key(self) -> str:
        return run_key()

    def output(self):
        from tasks.db import PostgresMarker

        return PostgresMarker(f"dedup:{self.run_key()}:{self.image}", "buildings")

    def run(self):
        from tasks import config, db

        index_path = self.input()["tiles"].path
        with open(index_path) as f:
            index = json.load(f)
        tiles = index.get("tiles") or []
        check_cores(tiles, index["width"], index["height"], source=index_path)
        pc, dc = config.polygonize(), config.dedup()

        def progress(what, frac):
            self.set_status_message(what)
            self.set_progress_percentage(int(100 * frac))

        with db.connection() as conn:
            srid = db.srid_for_crs(conn, index["crs_wkt"])
            n = deduplicate(conn, self.run_key(), self.image, tiles, index["transform"], srid,
                            min_area_m2=pc.min_area_m2, simplify_px=pc.simplify_px,
                            min_shared_px=dc.min_shared_px, merge_overlap=dc.merge_overlap, progress=progress)
            self.output().touch(conn)
        self.set_status_message(f"{n} buildings")
        self.set_progress_percentage(100)
