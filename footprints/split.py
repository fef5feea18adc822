"""Splitting labelled tiles into train / val / test.

Two methods:
- ``image``: whole images go to one split (:func:`split_by_image`); with image series, whole
  series do: every date of an AOI goes to the same split (:func:`split_by_group`).
- ``block``: the plane of each image's CRS is cut into square blocks drawn to splits with a
  seeded hash (:func:`block_split`). A tile whose window, grown by ``buffer``, touches blocks
  of two splits is left out, so no two kept tiles of different splits overlap or come closer
  than ``buffer`` (overlapping tiles share pixels: a tile straddling splits would leak).
  ``block_size = auto`` (:func:`auto_block_size`) sizes the blocks from the labelled extent
  so that every split with a positive fraction gets tiles; an explicit size that leaves such
  a split empty is an error naming the setting (:func:`resolve_block_split`).

Block splits are also scored on their own blocks (:func:`split_regions`,
:func:`centroid_in`): a building belongs to a split when its centroid lies in that split's
tiles, so the buffer between splits and the excluded tiles count for none.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import shapely

from footprints.geo import as_affine, window_bounds, window_polygon

SPLITS = ("train", "val", "test")


def parse_list(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [s.strip() for s in str(text or "").split(",") if s.strip()]


def split_by_image(images, train=(), val=(), test=(), val_fraction: float = 0.2,
                   test_fraction: float = 0.2) -> dict[str, list[str]]:
    """Whole images to splits.

    With explicit lists, those win and every other image goes to train. Without, the sorted
    images are cut in order: train first, then val, then test, with ``round(n * fraction)``
    images (at least 1 when n >= 3; with n == 2 one train and one test image; n == 1: train).
    """
    images = sorted(dict.fromkeys(images))
    explicit = {"train": list(train), "val": list(val), "test": list(test)}
    if any(explicit.values()):
        seen: dict[str, str] = {}
        for name, lst in explicit.items():
            for im in lst:
                if im not in images:
                    raise ValueError(f"[split] {name}_images names {im!r}, which is not a labelled image "
                                     f"(known: {', '.join(images[:20])})")
                if im in seen and seen[im] != name:
                    raise ValueError(f"[split] image {im!r} is in both {seen[im]}_images and {name}_images")
                seen[im] = name
        out = {k: sorted(set(v)) for k, v in explicit.items()}
        out["train"] = sorted(set(out["train"]) | {im for im in images if im not in seen})
        return out
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f"[split] {name} must be in [0, 1), got {f}")
    n = len(images)
    if n >= 3:
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
        if n_test + n_val >= n:
            raise ValueError(f"[split] val_fraction {val_fraction} + test_fraction {test_fraction} leave no "
                             f"training image out of {n}")
    elif n == 2:
        n_test, n_val = (1 if test_fraction > 0 else 0), 0
    else:
        n_test = n_val = 0
    n_train = n - n_val - n_test
    return {"train": images[:n_train], "val": images[n_train:n_train + n_val], "test": images[n_train + n_val:]}


def split_by_group(images, group_of, train=(), val=(), test=(), val_fraction: float = 0.2,
                   test_fraction: float = 0.2) -> dict[str, list[str]]:
    """Whole groups of images (an AOI's dates) to splits, so that no group is in two splits.

    ``group_of(image)`` names an image's group. The groups are split as :func:`split_by_image`
    splits images (sorted group names cut in order, or the explicit lists); an explicit list may
    name a group or any of its images, which then takes its whole group along. A group named in
    two lists, directly or through its images, is a ValueError.
    """
    images = sorted(dict.fromkeys(images))
    members: dict[str, list[str]] = {}
    for im in images:
        members.setdefault(str(group_of(im)), []).append(im)
    explicit = {"train": list(train), "val": list(val), "test": list(test)}
    chosen: dict[str, list[str]] = {}
    seen: dict[str, tuple[str, str]] = {}
    for name, lst in explicit.items():
        chosen[name] = []
        for entry in lst:
            if entry in images:
                g = str(group_of(entry))
            elif entry in members:
                g = entry
            else:
                raise ValueError(f"[split] {name}_images names {entry!r}, which is neither a labelled image nor "
                                 f"an AOI (known AOIs: {', '.join(sorted(members)[:20])})")
            if g in seen and seen[g][0] != name:
                raise ValueError(f"[split] AOI {g!r} would be in two splits: {seen[g][1]!r} is in "
                                 f"{seen[g][0]}_images and {entry!r} in {name}_images (a series stays in one split)")
            seen[g] = (name, entry)
            chosen[name].append(g)
    by_group = split_by_image(list(members), chosen["train"], chosen["val"], chosen["test"], val_fraction,
                              test_fraction)
    return {s: sorted(im for g in by_group[s] for im in members[g]) for s in SPLITS}


def block_of(x: float, y: float, block_size: float, origin=(0.0, 0.0)) -> tuple[int, int]:
    return int((x - origin[0]) // block_size), int((y - origin[1]) // block_size)


def block_assignment(bx: int, by: int, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Seeded, order-independent draw of a block's split."""
    h = hashlib.sha1(f"{seed}:{bx}:{by}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2 ** 64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def tile_block_split(bounds, block_size: float, buffer: float, seed: int, val_fraction: float,
                     test_fraction: float, origin=(0.0, 0.0)) -> str | None:
    """The split of a tile with ``bounds``, or None when its buffered window spans two splits.
    Blocks are ``block_size`` squares from ``origin`` (default: the CRS origin)."""
    if block_size <= 0:
        raise ValueError(f"[split] block_size must be > 0, got {block_size}")
    if buffer < 0:
        raise ValueError(f"[split] buffer must be >= 0, got {buffer}")
    minx, miny, maxx, maxy = bounds
    bx0, by0 = block_of(minx - buffer, miny - buffer, block_size, origin)
    # a window ending exactly on a block line does not reach into the next block
    bx1, by1 = block_of(maxx + buffer - 1e-9 * block_size, maxy + buffer - 1e-9 * block_size, block_size, origin)
    found = None
    for bx in range(bx0, bx1 + 1):
        for by in range(by0, by1 + 1):
            s = block_assignment(bx, by, seed, val_fraction, test_fraction)
            if found is not None and s != found:
                return None
            found = s
    return found


def block_split(tiles, block_size: float, buffer: float, seed: int = 0, val_fraction: float = 0.2,
                test_fraction: float = 0.2, origin=(0.0, 0.0)) -> dict[str, list]:
    """``tiles``: iterable of dicts with ``transform``, ``width``, ``height`` -> {split: [tile, ...],
    "excluded": [...]} (the input dicts, in input order)."""
    out: dict[str, list] = {k: [] for k in (*SPLITS, "excluded")}
    for t in tiles:
        s = tile_block_split(window_bounds(t["transform"], t["width"], t["height"]), block_size, buffer, seed,
                             val_fraction, test_fraction, origin)
        out[s or "excluded"].append(t)
    return out


def parse_block_size(value) -> float | None:
    """``[split] block_size``: a size > 0 (CRS units), or None for ``auto``."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    try:
        size = float(text)
    except ValueError:
        size = -1.0
    if not size > 0 or size == float("inf"):
        raise ValueError(f"[split] block_size must be 'auto' or a size > 0 (CRS units, metres), got {value!r}")
    return size


def _wanted(val_fraction: float, test_fraction: float) -> list[str]:
    """The splits that must get tiles: train, and val/test when their fraction is > 0."""
    return ["train"] + [s for s, f in (("val", val_fraction), ("test", test_fraction)) if f > 0]


def auto_block_size(tiles, buffer: float, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2,
                    max_blocks: int = 48) -> tuple[float, tuple[float, float]]:
    """``block_size = auto``: (block size, grid origin) sized from the tiles' extent.

    The extent's longer side is cut into k = 2 .. ``max_blocks`` blocks (the grid starts at the
    extent's corner); of the sizes that give every wanted split (:func:`_wanted`) tiles, the one
    keeping the most tiles wins (ties: the larger blocks). Deterministic for given tiles and
    seed. Raises ValueError naming the settings to change when no size works."""
    tiles = list(tiles)
    if not tiles:
        raise ValueError("[split] block_size = auto: there are no labelled tiles to split")
    bounds = [window_bounds(t["transform"], t["width"], t["height"]) for t in tiles]
    minx, miny = min(b[0] for b in bounds), min(b[1] for b in bounds)
    extent = max(max(b[2] for b in bounds) - minx, max(b[3] for b in bounds) - miny)
    wanted = _wanted(val_fraction, test_fraction)
    best = None
    for k in range(2, max_blocks + 1):
        size = extent / k
        counts = dict.fromkeys(SPLITS, 0)
        for b in bounds:
            s = tile_block_split(b, size, buffer, seed, val_fraction, test_fraction, (minx, miny))
            if s:
                counts[s] += 1
        if all(counts[s] for s in wanted) and (best is None or sum(counts.values()) > best[0]):
            best = (sum(counts.values()), size)
    if best is None:
        raise ValueError(f"[split] block_size = auto: no block size gives {', '.join(wanted)} tiles "
                         f"({len(tiles)} tiles over {extent:g} CRS units, [split] buffer = {buffer:g}); lower "
                         f"[split] buffer or [tiling] tile_size, change [split] seed, or use [split] method = image")
    return best[1], (minx, miny)


def resolve_block_split(tiles, block_size, buffer: float, seed: int = 0, val_fraction: float = 0.2,
                        test_fraction: float = 0.2) -> tuple[dict[str, list], dict]:
    """:func:`block_split` under the ``[split] block_size`` setting (a size or ``auto``):
    (the split, {"block_size": setting, "block_size_used": size, "origin": [x, y]}).
    An explicit size that leaves a wanted split (:func:`_wanted`) empty is an error naming
    ``[split] block_size``."""
    tiles = list(tiles)
    size = parse_block_size(block_size)
    origin = (0.0, 0.0)
    if size is None:
        size, origin = auto_block_size(tiles, buffer, seed, val_fraction, test_fraction)
    out = block_split(tiles, size, buffer, seed, val_fraction, test_fraction, origin)
    empty = [s for s in _wanted(val_fraction, test_fraction) if not out[s]]
    if empty:
        counts = ", ".join(f"{s} {len(out[s])}" for s in (*SPLITS, "excluded"))
        raise ValueError(f"[split] block_size = {block_size} leaves the {' and '.join(empty)} split"
                         f"{'s' if len(empty) > 1 else ''} empty (tiles: {counts}); set [split] block_size = auto "
                         f"or a smaller size (or lower [split] buffer)")
    return out, {"block_size": str(block_size), "block_size_used": size, "origin": list(origin)}


def split_regions(splits: dict) -> dict[str, dict]:
    """{split: {image: the union of the split's tile windows in the image's CRS}} from a split's
    tile entries (``split.json``'s ``splits``: dicts with image, transform, width, height)."""
    out: dict[str, dict] = {}
    for name, entries in splits.items():
        by_image: dict[str, list] = {}
        for e in entries:
            by_image.setdefault(e["image"], []).append(
                window_polygon(as_affine(e["transform"]), 0, 0, e["width"], e["height"]))
        out[name] = {im: shapely.union_all(polys) for im, polys in by_image.items()}
    return out


def centroid_in(geoms, region) -> np.ndarray:
    """bool per geometry: its centroid lies in ``region`` (boundary included); empty ones: False."""
    arr = np.asarray(list(geoms), dtype=object)
    if region is None or not len(arr):
        return np.zeros(len(arr), bool)
    empty = shapely.is_empty(arr)
    cent = shapely.centroid(arr)
    shapely.prepare(region)
    return ~empty & shapely.covers(region, cent)


def tile_entries(image: str, tile_index: dict, tile_dir: Path, mask_index: dict, mask_dir: Path) -> list[dict]:
    """Join a tile index and its mask index on tile_id -> one entry per tile (absolute paths)."""
    masks = {m["tile_id"]: m for m in mask_index.get("tiles", [])}
    out = []
    for t in tile_index["tiles"]:
        m = masks.get(t["tile_id"])
        if m is None:
            raise ValueError(f"{mask_dir / 'index.json'}: no mask for tile {t['tile_id']} of image {image}")
        out.append({"image": image, "tile_id": t["tile_id"], "tile": str(Path(tile_dir) / t["path"]),
                    "mask": str(Path(mask_dir) / m["path"]), "width": t["width"], "height": t["height"],
                    "transform": list(t["transform"]), "building_px": m.get("building_px"),
                    **({"class_px": m["class_px"]} if "class_px" in m else {})})  # building types
    return out
