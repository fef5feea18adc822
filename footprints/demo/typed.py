"""The typed demo: every building has a condition, as in the Open AI Tanzania data, and looks it.

* ``Complete``: drawn as in the plain demo (roof, shadow);
* ``Incomplete``: walls standing around an exposed interior (a dark floor, partition walls),
  part of them roofed or none; the walls cast a shadow;
* ``Foundation``: a flat concrete slab with a rim of blocks: no roof texture, no shadow.

The conditions and every draw here come from generators of their own, seeded from the scene's
seed, so the scene's layout (and every other pixel) is the plain demo's. A few Complete
buildings get no ``condition`` in their label (the Tanzania file has such features too): the
default class stands for them.
"""
from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import LineString, box

from footprints.demo import render
from footprints.demo.layout import Building, to_pixels

CONDITIONS = ("Complete", "Incomplete", "Foundation")
SHARES = (0.66, 0.2, 0.14)
UNLABELLED = 0.05  # share of Complete buildings whose label carries no condition
FIELD = "condition"
_STREAM = 0x7E9ED  # the typed demo's own generators: np.random.default_rng([seed, _STREAM, k])


def conditions(seed: int, n: int) -> list[str]:
    """The condition of each of a scene's ``n`` buildings (layout order); deterministic in (seed, n)."""
    rng = np.random.default_rng([int(seed), _STREAM, 0])
    return [CONDITIONS[i] for i in rng.choice(len(CONDITIONS), size=n, p=SHARES).tolist()]


def label_conditions(seed: int, conds: list[str]) -> list[str | None]:
    """The ``condition`` written in each label: the building's, or None (no property) for a few
    Complete ones."""
    rng = np.random.default_rng([int(seed), _STREAM, 1])
    drop = rng.random(len(conds)) < UNLABELLED
    return [None if d and c == "Complete" else c for c, d in zip(conds, drop)]


def casts_shadow(condition: str) -> bool:
    return condition != "Foundation"


def draw_rng(seed: int) -> np.random.Generator:
    """The generator of the typed drawing (separate from the scene's)."""
    return np.random.default_rng([int(seed), _STREAM, 2])


def draw(img, b: Building, condition: str, res: float, sun_dir, tex, rng: np.random.Generator) -> None:
    """Paint building ``b`` as its ``condition`` says."""
    if condition == "Foundation":
        _foundation(img, b, res, tex, rng)
    elif condition == "Incomplete":
        _incomplete(img, b, res, sun_dir, tex, rng)
    else:
        render.draw_building(img, b, res, sun_dir, tex)


def _fill(img, geom, colour, ss: int = 4) -> None:
    win = render._window(geom.bounds, img.shape[:2], pad=1)
    if win is None:
        return
    render._blend(img, win, render._coverage(geom, win, ss=ss), colour)


def _ring(poly, width_px: float):
    inner = shapely.buffer(poly, -width_px, join_style="mitre")
    return shapely.difference(poly, inner) if not inner.is_empty else poly


def _foundation(img, b: Building, res: float, tex, rng) -> None:
    """A flat slab (one tone, faint noise only) with a rim of blocks, slightly darker."""
    g = float(rng.uniform(150, 185))
    slab = np.array([g, g * 0.97, g * 0.92], np.float32)
    _fill(img, b.px, slab)
    _fill(img, _ring(b.px, 0.35 / res), slab * np.float32(rng.uniform(0.78, 0.88)))


def _incomplete(img, b: Building, res: float, sun_dir, tex, rng) -> None:
    """Walls around an exposed interior: a dark floor, partition walls, and part of a roof."""
    floor = np.array([rng.uniform(95, 120), rng.uniform(88, 108), rng.uniform(78, 95)], np.float32)
    _fill(img, b.px, floor)
    wall = np.array([rng.uniform(185, 215)] * 3, np.float32) * np.array([1.0, 0.97, 0.92], np.float32)
    walls = [_ring(b.px, 0.5 / res)]
    u0, v0, u1, v1 = b.local.bounds
    for _ in range(int(rng.integers(1, 3))):  # partition walls across the long side
        if u1 - u0 >= v1 - v0:
            u = float(rng.uniform(u0 + 2.0, max(u0 + 2.1, u1 - 2.0)))
            line = LineString([(u, v0), (u, v1)])
        else:
            v = float(rng.uniform(v0 + 2.0, max(v0 + 2.1, v1 - 2.0)))
            line = LineString([(u0, v), (u1, v)])
        piece = shapely.intersection(to_pixels(line, b.angle, b.cx, b.cy, res).buffer(0.2 / res), b.px)
        if not piece.is_empty:
            walls.append(piece)
    _fill(img, shapely.union_all(walls), wall)
    if rng.random() < 0.65:  # a partial roof over one end
        f = float(rng.uniform(0.3, 0.6))
        if u1 - u0 >= v1 - v0:
            part = box(u0 - 1, v0 - 1, u0 + f * (u1 - u0), v1 + 1)
        else:
            part = box(u0 - 1, v0 - 1, u1 + 1, v0 + f * (v1 - v0))
        roofed = shapely.intersection(b.px, to_pixels(part, b.angle, b.cx, b.cy, res))
        if not roofed.is_empty and roofed.area > 4:
            hull = Building(parts=b.parts, local=b.local, angle=b.angle, cx=b.cx, cy=b.cy, height=b.height,
                            roof=b.roof, px=roofed)
            render.draw_building(img, hull, res, sun_dir, tex)
