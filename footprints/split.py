"""Splitting labelled tiles into train / val / test.

Two methods:
- ``image``: whole images go to one split (:func:`split_by_image`).
- ``block``: the plane of each image's CRS is cut into square blocks drawn to splits with a
  seeded hash (:func:`block_split`). A tile whose window, grown by ``buffer``, touches blocks
  of two splits is left out, so no two kept tiles of different splits overlap or come closer
  than ``buffer`` (overlapping tiles share pixels: a tile straddling splits would leak).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from footprints.geo import window_bounds

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


def block_of(x: float, y: float, block_size: float) -> tuple[int, int]:
    return int(x // block_size), int(y // block_size)


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
                     test_fraction: float) -> str | None:
    """The split of a tile with ``bounds``, or None when its buffered window spans two splits."""
    if block_size <= 0:
        raise ValueError(f"[split] block_size must be > 0, got {block_size}")
    if buffer < 0:
        raise ValueError(f"[split] buffer must be >= 0, got {buffer}")
    minx, miny, maxx, maxy = bounds
    bx0, by0 = block_of(minx - buffer, miny - buffer, block_size)
    # a window ending exactly on a block line does not reach into the next block
    bx1, by1 = block_of(maxx + buffer - 1e-9 * block_size, maxy + buffer - 1e-9 * block_size, block_size)
    found = {block_assignment(bx, by, seed, val_fraction, test_fraction)
             for bx in range(bx0, bx1 + 1) for by in range(by0, by1 + 1)}
    return found.pop() if len(found) == 1 else None


def block_split(tiles, block_size: float, buffer: float, seed: int = 0, val_fraction: float = 0.2,
                test_fraction: float = 0.2) -> dict[str, list]:
    """``tiles``: iterable of dicts with ``transform``, ``width``, ``height`` -> {split: [tile, ...],
    "excluded": [...]} (the input dicts, in input order)."""
    out: dict[str, list] = {k: [] for k in (*SPLITS, "excluded")}
    for t in tiles:
        s = tile_block_split(window_bounds(t["transform"], t["width"], t["height"]), block_size, buffer, seed,
                             val_fraction, test_fraction)
        out[s or "excluded"].append(t)
    return out


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
                    "transform": list(t["transform"]), "building_px": m.get("building_px")})
    return out
