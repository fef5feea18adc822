"""Burning labels into mask rasters, and finding each tile's labels.

One set-based query per image returns every label that touches any of the image's tiles
(no per-tile round trips, no clipping in SQL); the labels are assigned to the tiles of the
regular grid client-side, and each tile's mask is rasterized with the tile's own transform
(pixel-centre rule).

Mask kinds:
- ``footprint``: 1 band, 255 inside buildings.
- ``3class``: 3 bands (footprint, boundary, contact), each 0/255. Boundary is the band of
  ``boundary_width`` pixels just inside each building's outline; contact marks pixels
  within ``contact_distance``/2 metres of two or more buildings, i.e. the gaps and shared
  walls between buildings closer than ``contact_distance``.

Building types (``classes``): the footprint band becomes one band per class (each building
burnt into its class's band), in the order of the classes, followed by boundary and contact
(``3class``), which are computed over all buildings together.
"""
from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio import features
from rasterio.enums import MergeAlg

from footprints.db import load_sql
from footprints.errors import InputError
from footprints.geo import footprint_4326, pixel_size, window_polygon

# ---------------------------------------------------------------- rasterizing


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
              contact_distance: float = 2.0, classes=None, n_classes: int = 0) -> np.ndarray:
    """(bands, H, W) uint8 mask with values 0/255. ``n_classes`` >= 1 (building types):
    ``classes[i]`` is geometry i's class index, and the footprint is one band per class."""
    if kind not in ("footprint", "3class"):
        raise ValueError(f"unknown mask kind {kind!r}")
    if n_classes:
        cls = np.asarray(classes, dtype=np.int64).reshape(-1)
        if len(cls) != len(geoms) or (len(cls) and (cls.min() < 0 or cls.max() >= n_classes)):
            raise ValueError(f"make_mask: {len(geoms)} geometries need as many class indexes in [0, {n_classes})")
        fps = [footprint_mask([g for g, c in zip(geoms, cls) if c == k], shape, transform) for k in range(n_classes)]
        fp = np.maximum.reduce(fps)
    else:
        fp = footprint_mask(geoms, shape, transform)
        fps = [fp]
    if kind == "footprint":
        return np.stack(fps) * np.uint8(255)
    bd = boundary_mask(geoms, shape, transform, boundary_width, fp)
    ct = contact_mask(geoms, shape, transform, contact_distance)
    return np.stack([*fps, bd, ct]) * np.uint8(255)


def mask_bands(kind: str, classes=()) -> list[str]:
    """Names of a mask kind's bands, in order (with building types, the class names in place
    of ``footprint``)."""
    fp = list(classes) or ["footprint"]
    return fp if kind == "footprint" else [*fp, "boundary", "contact"]


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


# ---------------------------------------------------------------- labels to tiles


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
    cache = {}

    def crs(srid):
        with conn.cursor() as cur:
            cur.execute(load_sql("srid_srtext"), {"srid": srid})
            return CRS.from_wkt(cur.fetchone()[0])

    def to_image_crs(geoms, src, dst):
        if (src, dst) not in cache:
            cache[(src, dst)] = Transformer.from_crs(crs(src), crs(dst), always_xy=True)
        tr = cache[(src, dst)]
        return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))

    return to_image_crs


def query_tile_labels(conn, image: str, tiling: str, sources: list[str], margin: float,
                      class_of: dict | None = None) -> dict[str, list]:
    """Every tile's labels, in the image CRS: {tile_id: [geometry]}. ``class_of`` (building
    types): a dict filled with ``{id(geometry): its class}`` (None where the label has none).

    One set-based label query per image (an index scan over the image outline grown by
    ``margin``, in image CRS units); the labels are then assigned to the tiles of the regular
    grid client-side by their bounding boxes (a superset; rasterization and clipping are exact).
    """
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
    if class_of is not None:
        class_of.update((id(g), r[2]) for g, r in zip(geoms, rows))
    return assign_to_tiles(geoms, transform, tile_ids, col_offs, row_offs, tw, th, m + 1)


def source_extent(conn, source: str) -> tuple[int, tuple | None]:
    """``(number of labels, (lon0, lat0, lon1, lat1) or None)`` of a label source in PostGIS."""
    with conn.cursor() as cur:
        cur.execute(load_sql("labels_extent"), {"source": source})
        n, *box = cur.fetchone()
    return int(n), (tuple(box) if n else None)


def check_labels_inside(conn, image: str, source: str, path, own_file: bool, image_4326) -> str | None:
    """After :func:`query_tile_labels` found no label of ``source`` inside ``image``: an
    image-specific label file (``own_file``) that has labels, all elsewhere, is an
    :class:`InputError` naming it (a wrong CRS, or the labels of another scene); a label file
    shared by many images, or one with no labels at all (valid: no buildings), gives the
    warning text to log instead (None when the file is simply empty)."""
    n, box = source_extent(conn, source)
    if n == 0:
        return None
    where = (f"none of its {n} labels (lon {box[0]:.5f}..{box[2]:.5f}, lat {box[1]:.5f}..{box[3]:.5f}) fall "
             f"inside image {image} (lon {image_4326[0]:.5f}..{image_4326[2]:.5f}, "
             f"lat {image_4326[1]:.5f}..{image_4326[3]:.5f})")
    if own_file:
        raise InputError(path, f"{where}: the labels of another scene, or a wrong CRS "
                               f"(check the crs member or [data] label_crs)")
    return f"{path}: {where}; its masks are empty"
