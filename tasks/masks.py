"""MakeMasks: burn each tile's labels into a mask GeoTIFF.

One set-based query per image returns every label that touches any of the image's tiles,
with the ids of those tiles (no per-tile round trips, no clipping in SQL); each tile's
mask is then rasterized with the tile's own transform (pixel-centre rule).

Mask kinds ([masks] kind):
- ``footprint``: 1 band, 255 inside buildings.
- ``3class``: 3 bands (footprint, boundary, contact), each 0/255. Boundary is the band of
  ``boundary_width`` pixels just inside each building's outline; contact marks pixels
  within ``contact_distance``/2 metres of two or more buildings, i.e. the gaps and shared
  walls between buildings closer than ``contact_distance``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import luigi
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio import features
from rasterio.enums import MergeAlg

from tasks.config import masks, tiling_key, workdir
from tasks.fsutil import atomic_dir

log = logging.getLogger("luigi-interface")

# ---------------------------------------------------------------- pure functions


def pixel_size(transform: Affine) -> float:
    return float(np.sqrt(abs(transform.a * transform.e - transform.b * transform.d)))


def footprint_mask(geoms, shape, transform: Affine) -> np.ndarray:
    """uint8 0/1 mask; a pixel is in when its centre is inside a polygon."""
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(shape, np.uint8)
    return features.rasterize(((g, 1) for g in geoms), out_shape=shape, transform=transform, fill=0, dtype="uint8")


def boundary_mask(geoms, shape, transform: Affine, width_px: float, fp: np.ndarray | None = None) -> np.ndarray:
    """Pixels of each building within ``width_px`` of its outline (inside it)."""
    if fp is None:
        fp = footprint_mask(geoms, shape, transform)
    d = width_px * pixel_size(transform)
    inner = [shapely.buffer(g, -d, join_style="mitre") for g in geoms]
    core = footprint_mask(inner, shape, transform)
    return (fp & (1 - core)).astype(np.uint8)


def contact_mask(geoms, shape, transform: Affine, distance_m: float) -> np.ndarray:
    """Pixels within ``distance_m / 2`` of at least two different buildings."""
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if len(geoms) < 2 or distance_m <= 0:
        return np.zeros(shape, np.uint8)
    grown = [shapely.buffer(g, distance_m / 2.0, join_style="mitre") for g in geoms]
    count = features.rasterize(((g, 1) for g in grown), out_shape=shape, transform=transform, fill=0,
                               dtype="uint8", merge_alg=MergeAlg.add)
    return (count >= 2).astype(np.uint8)


def make_mask(geoms, shape, transform: Affine, kind: str = "footprint", boundary_width: float = 1.0,
              contact_distance: float = 2.0) -> np.ndarray:
    """(bands, H, W) uint8 mask with values 0/255."""
    fp = footprint_mask(geoms, shape, transform)
    if kind == "footprint":
        return fp[None] * np.uint8(255)
    if kind != "3class":
        raise ValueError(f"unknown mask kind {kind!r}")
    bd = boundary_mask(geoms, shape, transform, boundary_width, fp)
    ct = contact_mask(geoms, shape, transform, contact_distance)
    return np.stack([fp, bd, ct]) * np.uint8(255)


def labels_in_window(geoms, window_poly) -> int:
    """Number of polygon pieces with area left after clipping to the window."""
    n = 0
    for g in geoms:
        piece = shapely.intersection(g, window_poly)
        if piece.is_empty:
            continue
        parts = piece.geoms if hasattr(piece, "geoms") else [piece]
        n += sum(1 for p in parts if p.geom_type == "Polygon" and p.area > 0)
    return n


def tiles_touched(bounds_px: np.ndarray, col_offs, row_offs, tile_w: int, tile_h: int, margin_px: float):
    """For label bounding boxes in image pixels (N x 4: minx, miny, maxx, maxy), the indices into
    the sorted unique ``col_offs`` / ``row_offs`` of the first and last tile column and row whose
    window grown by ``margin_px`` overlaps the box. Vectorised over labels."""
    xs, ys = np.unique(col_offs), np.unique(row_offs)
    c0 = np.searchsorted(xs + tile_w + margin_px, bounds_px[:, 0], side="right")
    c1 = np.searchsorted(xs - margin_px, bounds_px[:, 2], side="left") - 1
    r0 = np.searchsorted(ys + tile_h + margin_px, bounds_px[:, 1], side="right")
    r1 = np.searchsorted(ys - margin_px, bounds_px[:, 3], side="left") - 1
    return xs, ys, c0, c1, r0, r1


def assign_to_tiles(geoms, transform: Affine, tile_ids, col_offs, row_offs, tile_w, tile_h, margin_px) -> dict[str, list]:
    """{tile_id: [geometries whose bounding box touches the tile window grown by margin_px]}."""
    out: dict[str, list] = {}
    if len(geoms) == 0:
        return out
    inv = ~transform
    b = shapely.bounds(geoms)
    # the four corners of each box in pixels (handles any affine, rotated ones included)
    cx = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0]], 1)
    cy = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], 1)
    px = inv.a * cx + inv.b * cy + inv.c
    py = inv.d * cx + inv.e * cy + inv.f
    box = np.stack([px.min(1), py.min(1), px.max(1), py.max(1)], 1)
    xs, ys, c0, c1, r0, r1 = tiles_touched(box, col_offs, row_offs, tile_w, tile_h, margin_px)
    by_offset = {(int(c), int(r)): t for t, c, r in zip(tile_ids, col_offs, row_offs)}
    for g, a0, a1, b0, b1 in zip(geoms, c0, c1, r0, r1):
        for r in ys[b0:b1 + 1]:
            for c in xs[a0:a1 + 1]:
                t = by_offset.get((int(c), int(r)))
                if t is not None:
                    out.setdefault(t, []).append(g)
    return out


def srid_transformer(conn):
    """A function that reprojects arrays of geometries between two PostGIS SRIDs."""
    from pyproj import CRS, Transformer

    cache = {}

    def crs(srid):
        with conn.cursor() as cur:
            cur.execute("SELECT srtext FROM spatial_ref_sys WHERE srid = %(srid)s", {"srid": srid})
            return CRS.from_wkt(cur.fetchone()[0])

    def to_image_crs(geoms, src, dst):
        if (src, dst) not in cache:
            cache[(src, dst)] = Transformer.from_crs(crs(src), crs(dst), always_xy=True)
        tr = cache[(src, dst)]
        return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))

    return to_image_crs


def mask_key() -> str:
    m = masks()
    if m.kind == "footprint":
        return "footprint"
    return f"3class_bw{m.boundary_width:g}_cd{m.contact_distance:g}"


def query_tile_labels(conn, image: str, tiling: str, sources: list[str], margin: float) -> dict[str, list]:
    """Every tile's labels, in the image CRS: {tile_id: [geometry]}.

    One set-based label query per image (an index scan over the image outline grown by
    ``margin``, in image CRS units); the labels are then assigned to the tiles of the regular
    grid client-side by their bounding boxes (a superset; rasterization and clipping are exact).
    """
    from tasks.db import load_sql
    from tasks.tiling import footprint_4326, window_polygon

    with conn.cursor() as cur:
        cur.execute(load_sql("tile_grid"), {"image": image, "tiling": tiling})
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"no tiles recorded for image {image!r} with tiling {tiling!r}; run TileImage first")
        tr, width, height, srid, srtext, tile_ids, col_offs, row_offs, tw, th = row
        transform = Affine(*tr[:6])
        m = margin / pixel_size(transform)
        probe = footprint_4326(window_polygon(transform, -m, -m, width + 2 * m, height + 2 * m), srtext)
        cur.execute(load_sql("tile_labels"), {"sources": sources, "probe": probe.wkb})
        rows = cur.fetchall()
    if not rows:
        return {}
    geoms = shapely.from_wkb([bytes(r[0]) for r in rows])
    label_srids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    to_image_crs = srid_transformer(conn)
    for s in np.unique(label_srids):
        if s != srid:
            sel = label_srids == s
            geoms[sel] = to_image_crs(geoms[sel], int(s), srid)
    return assign_to_tiles(geoms, transform, tile_ids, col_offs, row_offs, tw, th, m + 1)


# ---------------------------------------------------------------- the task


class MakeMasks(luigi.Task):
    """Writes ``<workdir>/masks/<image>/<tiling>/<mask kind>/<tile_id>.tif`` + index.json."""

    image = luigi.Parameter()

    def requires(self):
        from tasks.labels import LoadLabels
        from tasks.sources import label_path
        from tasks.tiling import TileImage

        lp = label_path(self.image)
        if lp is None:
            raise FileNotFoundError(f"no label file for image {self.image!r}; set [data] labels")
        return {"tiles": TileImage(image=self.image), "labels": LoadLabels(path=str(lp))}

    def mask_dir(self) -> Path:
        return workdir() / "masks" / self.image / tiling_key() / mask_key()

    def output(self):
        return luigi.LocalTarget(str(self.mask_dir() / "index.json"))

    def run(self):
        from tasks import db
        from tasks.labels import source_name
        from tasks.tiling import read_tile_index, window_polygon

        m = masks()
        index = read_tile_index(self.input()["tiles"].path)
        transform = Affine(*index["transform"])
        px = pixel_size(transform)
        margin = max(m.contact_distance, 1.0 * px) + px
        source = source_name(self.requires()["labels"].path)
        with db.connection() as conn:
            by_tile = query_tile_labels(conn, self.image, index["tiling"], [source], margin)
        n_labels = len({id(g) for gs in by_tile.values() for g in gs})
        if n_labels == 0:
            log.warning("image %s: none of the labels in %s fall inside the raster; masks are empty",
                        self.image, source)
            self.set_status_message(f"WARNING: no labels of {source} inside {self.image}")
        crs = rasterio.crs.CRS.from_wkt(index["crs_wkt"])
        with atomic_dir(self.mask_dir()) as tmp:
            records = []
            for i, t in enumerate(index["tiles"]):
                tt = Affine(*t["transform"])
                geoms = by_tile.get(t["tile_id"], [])
                arr = make_mask(geoms, (t["height"], t["width"]), tt, m.kind, m.boundary_width, m.contact_distance)
                prof = {"driver": "GTiff", "width": t["width"], "height": t["height"], "count": arr.shape[0],
                        "dtype": "uint8", "crs": crs, "transform": tt, "compress": "deflate", "nodata": None}
                with rasterio.open(tmp / f"{t['tile_id']}.tif", "w", **prof) as dst:
                    dst.write(arr)
                win = window_polygon(tt, 0, 0, t["width"], t["height"])
                records.append({"tile_id": t["tile_id"], "path": f"{t['tile_id']}.tif",
                                "n_labels": labels_in_window(geoms, win),
                                "building_px": int((arr[0] > 0).sum())})
                if i % 20 == 0:
                    self.set_progress_percentage(int(100 * i / len(index["tiles"])))
            out = {"image": self.image, "tiling": index["tiling"], "kind": m.kind, "mask_key": mask_key(),
                   "bands": ["footprint"] if m.kind == "footprint" else ["footprint", "boundary", "contact"],
                   "labels_source": source, "labels_in_image": n_labels, "tiles": records}
            with open(tmp / "index.json", "w") as f:
                json.dump(out, f, indent=1)
        self.set_progress_percentage(100)
