"""Polygonize: building probabilities -> building polygons (and their rows in PostGIS ``predictions``).

Arrays and affine transforms in, shapely polygons out; :func:`polygonize_image` stores one
image's polygons, tile by tile, in the caller's transaction.

* A pixel is a building where its footprint probability is > ``threshold``.
* With the 3-class head (footprint, boundary, contact) touching buildings are split: the
  seeds are footprint pixels that are neither boundary nor contact; the seeds of one
  4-connected piece of footprint-minus-contact are one building (so a thin neck, all
  boundary, never cuts a building in two: only the contact channel separates buildings), and
  each building grows back over the footprint (geodesic dilation, one pixel per step,
  constrained to the footprint), so every building keeps its full extent. Footprint pixels
  that no seed reaches become buildings of their own.
* Polygons come from ``rasterio.features.shapes`` (4-connectivity) and are pixel-exact: their
  vertices lie on pixel corners, in the IMAGE's pixel space (column, row) when the array is a
  window at ``col_off``/``row_off``. ``transform`` is always the image's affine transform.
* ``min_area_m2`` is in m² of the image CRS (pixel area = |a·e − b·d|), ``simplify_px`` in
  pixels; the score is the mean footprint probability inside the polygon.
* Building types (``n_classes`` >= 1): the first ``n_classes`` bands are one footprint channel
  per class (then boundary and contact). Buildings are found class-agnostically, on the union of
  the class channels (their per-pixel maximum is the footprint), with the same seeds and
  splitting; each polygon then carries ``conf``, the mean probability of every class channel
  inside it (its class is the highest, decided after DeduplicateBorders).

Polygonize reads each tile's window grown by a halo (``[polygonize] halo_px``, within the
image) and stores the raw, pixel-exact polygons that reach into the tile's core (only polygons
that cannot be a fragment of a larger building, i.e. that do not touch the read window's
edge, are dropped below the minimum area). DeduplicateBorders (:mod:`footprints.dedup`) then
joins the fragments across tile cores and applies the minimum area and the simplification to
whole buildings.
"""
from __future__ import annotations

import csv
import tempfile

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import Polygon, shape

from footprints import db
from footprints.errors import InputError
from footprints.geo import pixel_area, pixel_to_geo

__all__ = [
    "as_probability", "building_labels", "grow_labels", "polygonize_labels",
    "polygonize_probabilities", "probability_bands", "read_window", "tile_polygons", "prediction_rows", "check_probabilities",
    "store_predictions", "polygonize_image",
]

_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


def as_probability(prob: np.ndarray) -> np.ndarray:
    """(C, H, W) float32 in [0, 1] from a uint8 (0..255 = prob·255) or float array.
    A 2-D array is one footprint band."""
    a = np.asarray(prob)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"probabilities must be (bands, rows, cols), got an array of shape {a.shape}")
    return probability_values(a)


def probability_values(a: np.ndarray) -> np.ndarray:
    """float32 probabilities in [0, 1] from uint8 (0..255 = prob·255: the GeoTIFFs, and the
    predictor's output) or float values, any shape."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"probabilities must be uint8 (0..255) or float (0..1), got {a.dtype}")
    return a.astype(np.float32, copy=False)


def grow_labels(labels: np.ndarray, mask: np.ndarray, max_steps: int | None = None) -> np.ndarray:
    """Grow labelled seeds one pixel (4-neighbourhood) per step over ``mask`` until nothing
    changes. Where two labels reach a pixel in the same step, the larger label wins. In place."""
    steps = 0
    todo = mask & (labels == 0)
    while todo.any() and (max_steps is None or steps < max_steps):
        # only the bounding box of what is left (plus a 1 px rim) needs the dilation
        rows = np.flatnonzero(todo.any(axis=1))
        cols = np.flatnonzero(todo.any(axis=0))
        r0, r1 = max(rows[0] - 1, 0), rows[-1] + 2
        c0, c1 = max(cols[0] - 1, 0), cols[-1] + 2
        sub = labels[r0:r1, c0:c1]
        grown = ndimage.grey_dilation(sub, footprint=_CROSS, mode="constant", cval=0)
        fill = todo[r0:r1, c0:c1] & (grown > 0)
        if not fill.any():
            break
        sub[fill] = grown[fill]
        todo[r0:r1, c0:c1] &= ~fill
        steps += 1
    return labels


def building_labels(prob: np.ndarray, threshold: float = 0.5, three_class: bool = False) -> tuple[np.ndarray, int]:
    """(labels int32 (H, W), n): one positive label per building, 0 for background."""
    p = as_probability(prob)
    fp = p[0] > threshold
    if not three_class:
        labels, n = ndimage.label(fp, structure=_CROSS)
        return labels.astype(np.int32, copy=False), int(n)
    if p.shape[0] < 3:
        raise ValueError(f"three_class needs 3 bands (footprint, boundary, contact), got {p.shape[0]}")
    contact = p[2] > threshold
    seeds = fp & ~(p[1] > threshold) & ~contact
    # Seeds of one building can fall apart where it narrows below twice the boundary band (a
    # thin neck is all boundary). Only the contact channel separates buildings: seeds lying in
    # one 4-connected piece of footprint-minus-contact are one building.
    pieces, _ = ndimage.label(fp & ~contact, structure=_CROSS)
    ids, inverse = np.unique(pieces[seeds], return_inverse=True)
    labels = np.zeros(fp.shape, np.int32)
    labels[seeds] = (inverse.reshape(-1) + 1).astype(np.int32)
    n = len(ids)
    grow_labels(labels, fp)
    rest = fp & (labels == 0)
    if rest.any():  # footprint no seed can reach (e.g. a building thinner than its boundary band)
        extra, m = ndimage.label(rest, structure=_CROSS)
        labels[rest] = extra[rest] + n
        n += int(m)
    return labels, int(n)


def _polygon_parts(g) -> list[Polygon]:
    if g.is_empty:
        return []
    if not g.is_valid:
        g = shapely.make_valid(g)
    if g.geom_type == "Polygon":
        return [g]
    return [p for p in getattr(g, "geoms", []) if p.geom_type == "Polygon" and not p.is_empty] + [
        q for p in getattr(g, "geoms", []) if p.geom_type == "MultiPolygon" for q in p.geoms]


def polygonize_labels(labels: np.ndarray, col_off: int = 0, row_off: int = 0):
    """[(label, pixel-exact Polygon in image pixel coordinates)] from a label array."""
    lab = np.ascontiguousarray(labels, dtype=np.int32)
    out = []
    for geom, value in features.shapes(lab, mask=lab > 0, connectivity=4,
                                       transform=Affine.translation(col_off, row_off)):
        for poly in _polygon_parts(shape(geom)):
            out.append((int(value), poly))
    return out


def _touches_window_edge(poly: Polygon, col_off: int, row_off: int, width: int, height: int) -> bool:
    x0, y0, x1, y1 = poly.bounds
    return x0 <= col_off or y0 <= row_off or x1 >= col_off + width or y1 >= row_off + height


def class_footprint(p: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities (C, H, W) whose first ``n_classes`` bands are class channels -> the
    class-agnostic bands: their maximum (the union's footprint), then the rest (boundary, contact)."""
    if p.shape[0] < n_classes:
        raise ValueError(f"{n_classes} class channels expected, the probabilities have {p.shape[0]} bands")
    return np.concatenate([p[:n_classes].max(axis=0, keepdims=True), p[n_classes:]])


def probability_bands(three_class: bool = False, n_classes: int = 0) -> list[int]:
    """The 1-based bands of a probability raster that Polygonize reads: the footprint (with
    building types, the ``n_classes`` class channels), then boundary and contact with ``three_class``."""
    return list(range(1, max(1, int(n_classes)) + (3 if three_class else 1)))


def polygonize_probabilities(prob: np.ndarray, transform, threshold: float = 0.5, min_area_m2: float = 0.0,
                             simplify_px: float = 0.0, three_class: bool = False, col_off: int = 0,
                             row_off: int = 0, keep_edge_fragments: bool = False, n_classes: int = 0):
    """Building polygons of a probability array: ``[(polygon_pix, polygon_geo, score), ...]``.

    ``prob``: (C, H, W) uint8 (prob·255) or float in [0, 1]; band 0 = footprint, and with
    ``three_class`` band 1 = boundary, band 2 = contact. ``transform``: the image's affine
    transform; ``col_off``/``row_off``: where the array lies in the image, so that the pixel
    polygons are in image pixel coordinates. ``min_area_m2``: in m² of the image CRS, on the
    pixel-exact polygon. ``simplify_px``: topology-preserving simplification tolerance in
    pixels. ``keep_edge_fragments``: keep polygons that touch the array's edge whatever their
    area (they may be fragments of a building that continues in the next tile).
    Score: the mean footprint probability inside the polygon.
    ``n_classes`` >= 1 (building types): the first bands are class channels (see the module
    doc), and each tuple gets a fourth item, the mean probability of each class inside it.
    """
    p = as_probability(prob)
    classes = None
    if n_classes:
        classes, p = p[:n_classes], class_footprint(p, n_classes)
    labels, n = building_labels(p, threshold, three_class)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    means = ndimage.mean(p[0], labels=labels, index=index)
    conf = None if classes is None else np.stack([ndimage.mean(c, labels=labels, index=index) for c in classes], 1)
    px_area = pixel_area(transform)
    h, w = labels.shape
    out = []
    for value, poly in polygonize_labels(labels, col_off, row_off):
        if poly.area * px_area < min_area_m2 and not (
                keep_edge_fragments and _touches_window_edge(poly, col_off, row_off, w, h)):
            continue
        if simplify_px > 0:
            # the same steps as sql/buildings_insert.sql: collinear vertices out, canonical
            # vertex order, then the simplification
            poly = shapely.normalize(shapely.simplify(poly, 0.0, preserve_topology=True))
            poly = shapely.normalize(shapely.simplify(poly, simplify_px, preserve_topology=True))
            if poly.is_empty or poly.geom_type != "Polygon":
                continue
        item = (poly, pixel_to_geo(poly, transform), float(means[value - 1]))
        out.append(item if conf is None else item + (tuple(float(v) for v in conf[value - 1]),))
    return out


def read_window(tile: dict, halo: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(col_off, row_off, width, height) of the tile's window grown by ``halo`` pixels on every
    side and clipped to the width x height image: what Polygonize reads for the tile."""
    c0 = max(0, int(tile["col_off"]) - halo)
    r0 = max(0, int(tile["row_off"]) - halo)
    c1 = min(width, int(tile["col_off"]) + int(tile["width"]) + halo)
    r1 = min(height, int(tile["row_off"]) + int(tile["height"]) + halo)
    return c0, r0, c1 - c0, r1 - r0


def tile_polygons(prob: np.ndarray, transform, tile: dict, window, threshold: float = 0.5,
                  min_area_m2: float = 0.0, three_class: bool = False, n_classes: int = 0):
    """The polygons one tile contributes: ``prob`` is the tile's read window (``window`` =
    ``read_window(...)``) of the image's probabilities; every polygon (pixel-exact, image pixel
    coordinates, never simplified) that reaches into the tile's core, whole as seen through
    the window. Polygons below ``min_area_m2`` are dropped unless they touch the window's edge
    (then they may be fragments of a larger building). ``n_classes``: as in
    :func:`polygonize_probabilities`."""
    c0, r0, _, _ = window
    cx0, cy0 = tile["core_col_off"], tile["core_row_off"]
    cx1, cy1 = cx0 + tile["core_width"], cy0 + tile["core_height"]
    out = []
    for item in polygonize_probabilities(prob, transform, threshold=threshold, min_area_m2=min_area_m2,
                                         three_class=three_class, col_off=c0, row_off=r0,
                                         keep_edge_fragments=True, n_classes=n_classes):
        x0, y0, x1, y1 = item[0].bounds
        if x0 < cx1 and x1 > cx0 and y0 < cy1 and y1 > cy0:
            out.append(item)
    return out


def prediction_rows(run: str, image: str, tile_id: str, srid: int, polygons, transform):
    """COPY-ready CSV rows (run, image, tile_id, score, area_m2, srid, geom_pix, geom) for
    ``polygonize_probabilities`` output; geometries as (E)WKB hex. Polygons with class
    confidences (building types) get a ninth field, ``conf`` as an array literal
    (``sql/predictions_copy_classes.sql``)."""
    if not polygons:
        return []
    pix = np.array([p[0] for p in polygons], dtype=object)
    geo = shapely.set_srid(np.array([p[1] for p in polygons], dtype=object), int(srid))
    pix_hex = shapely.to_wkb(pix, hex=True)
    geo_hex = shapely.to_wkb(geo, hex=True, include_srid=True)
    areas = shapely.area(pix) * pixel_area(transform)
    return [(run, image, tile_id, repr(float(p[2])), repr(float(a)), int(srid), ph, gh)
            + (("{" + ",".join(repr(float(v)) for v in p[3]) + "}",) if len(p) > 3 else ())
            for p, a, ph, gh in zip(polygons, areas, pix_hex, geo_hex)]


# ---------------------------------------------------------------- one image into PostGIS


def check_probabilities(src, index: dict, index_path, three_class: bool, classes=()) -> list[int]:
    """The bands to read from the open probability raster ``src`` (footprint; with
    ``three_class`` also boundary and contact; with building types ``classes``, one footprint
    band per class first). Raises InputError (naming the file) unless it has the size the tile
    index describes and enough bands (and, with classes, band names that agree)."""
    if (src.width, src.height) != (index["width"], index["height"]):
        raise InputError(src.name, f"probabilities are {src.width}x{src.height} px but the tile index "
                                   f"{index_path} describes a {index['width']}x{index['height']} px image")
    if classes:
        n = len(classes) + (2 if three_class else 0)
        names = list(classes) + (["boundary", "contact"] if three_class else [])
        have = list(src.descriptions or ())
        if src.count != n or (any(have) and have != names):
            raise InputError(src.name, f"building types {', '.join(classes)} need {n} probability bands "
                                       f"({', '.join(names)}), the file has {src.count} ({have}): a model or masks "
                                       f"of other [data] classes?")
        return list(range(1, n + 1))
    if three_class and src.count < 3:
        raise InputError(src.name, f"[masks] kind = 3class needs 3 probability bands "
                                   f"(footprint, boundary, contact), the file has {src.count}")
    return [1, 2, 3] if three_class else [1]


def store_predictions(conn, run: str, image: str, rows_csv, with_conf: bool = False) -> None:
    """Replace the ``predictions`` of (run, image) by the rows of ``rows_csv`` (a file of
    :func:`prediction_rows` as CSV, read from its current position; ``with_conf``: rows with
    class confidences) with one COPY, in the caller's transaction."""
    with conn.cursor() as cur:
        cur.execute(db.load_sql("predictions_delete"), {"run": run, "image": image})
        cur.copy_expert(db.load_sql("predictions_copy_classes" if with_conf else "predictions_copy"), rows_csv)


def iter_tile_polygons(src, tiles, *, halo_px: int = 0, threshold: float = 0.5, min_area_m2: float = 0.0,
                       three_class: bool = False, bands=None, n_classes: int = 0):
    """``(tile, polygons)`` for each tile of the open probability raster ``src``: the tile's
    window grown by ``halo_px`` (within the image) read on its own (bounded memory), and
    :func:`tile_polygons` of it. Polygonize stores them in PostGIS; the prediction service
    deduplicates them in memory (:mod:`footprints.borders`). ``bands``: the bands to read
    (default: :func:`probability_bands`)."""
    if bands is None:
        bands = probability_bands(three_class, n_classes)
    for t in tiles:
        win = read_window(t, halo_px, src.width, src.height)
        arr = src.read(bands, window=Window(*win))
        yield t, tile_polygons(arr, src.transform, t, win, threshold=threshold, min_area_m2=min_area_m2,
                               three_class=three_class, n_classes=n_classes)


def polygonize_image(conn, src, tiles, run: str, image: str, *, halo_px: int = 0, threshold: float = 0.5,
                     min_area_m2: float = 0.0, three_class: bool = False, bands=None, progress=None,
                     n_classes: int = 0) -> int:
    """Polygonize the open probability raster ``src`` of ``image`` tile by tile and replace
    the image's ``predictions`` of ``run`` with the result; returns the number of rows.

    Each tile's window, grown by ``halo_px`` (within the image), is read on its own (bounded
    memory); the tile stores the polygons that reach into its core, whole as it sees them
    (:func:`tile_polygons`). The rows go through a temporary CSV file and one COPY, in the
    caller's transaction (the caller commits them with its marker). ``bands``: the bands to
    read (default: :func:`probability_bands`).
    ``progress(what, fraction)``: optional; ``fraction`` is None when only the message changes."""
    transform = src.transform
    srid = db.srid_for_crs(conn, src.crs)
    with tempfile.TemporaryFile("w+", newline="") as buf:
        writer = csv.writer(buf)
        n = 0
        for i, (t, polys) in enumerate(iter_tile_polygons(src, tiles, halo_px=halo_px, threshold=threshold,
                                                          min_area_m2=min_area_m2, three_class=three_class,
                                                          bands=bands, n_classes=n_classes)):
            rows = prediction_rows(run, image, t["tile_id"], srid, polys, transform)
            writer.writerows(rows)
            n += len(rows)
            if progress and (i % 16 == 0 or i == len(tiles) - 1):
                progress(f"tile {i + 1}/{len(tiles)}: {n} polygons", 0.9 * (i + 1) / len(tiles))
        buf.flush()
        buf.seek(0)
        if progress:
            progress(f"storing {n} polygons", None)
        store_predictions(conn, run, image, buf, with_conf=n_classes > 0)
    return n
