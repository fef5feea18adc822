"""The built-in demo dataset: seeded synthetic aerial scenes with exact building labels.

Each scene is a north-up 3-band uint8 raster in UTM (default EPSG:32737, around Dar es
Salaam, 0.5 m/px) showing a peri-urban neighbourhood: textured soil and grass, a road
network (paved and dirt), footpaths, concrete pads, cars, buildings of many shapes, sizes,
orientations and roof tones (gabled, hipped and flat roofs, some close to the ground
colour), their cast shadows in one sun direction, and trees, some of them overhanging
roofs and roads. Mild blur and sensor noise finish the image.

Labels are the exact building polygons (in the scene's UTM CRS) that were rendered.
Buildings never overlap, except rows of units that share a wall exactly (touching pairs),
and always lie fully inside the raster. Everything derives from one integer seed through
``np.random.default_rng``: the same seed gives the same bytes.

Pure functions first (:func:`generate_scene`, :func:`buildings_to_geojson`, writers);
the thin Luigi task :class:`GenerateDemo` is last.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import luigi
import numpy as np
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.polygon import orient

from tasks.config import data, workdir

GENERATOR_VERSION = 1
DEFAULT_CRS = "EPSG:32737"  # WGS 84 / UTM zone 37S: Dar es Salaam
DEFAULT_ORIGIN = (525000.0, 9252000.0)  # upper-left corner (x, y) in metres, north of the city centre
MIN_BUILDING_AREA_M2 = 25.0

# roof palette: name -> (weight, base RGB)
_ROOFS = {
    "white": (0.15, (214, 217, 219)),
    "tin": (0.17, (163, 170, 176)),
    "rusty": (0.13, (150, 108, 82)),
    "concrete": (0.12, (146, 143, 136)),
    "tile_red": (0.10, (168, 82, 60)),
    "tile_brown": (0.07, (126, 88, 66)),
    "dark": (0.09, (72, 74, 80)),
    "painted": (0.05, (70, 112, 128)),
    "ground": (0.12, None),  # sampled from the ground around the building
}


# --------------------------------------------------------------------------- names, places


def demo_scene_names(n: int) -> list[str]:
    """``demo_00 .. demo_{n-1}``."""
    if n < 1:
        raise ValueError(f"demo scene count must be >= 1, got {n}")
    return [f"demo_{i:02d}" for i in range(n)]


def scene_seed(demo_seed: int, index: int) -> int:
    """Independent per-scene seed derived from the dataset seed and the scene index."""
    return int(np.random.SeedSequence([int(demo_seed), int(index)]).generate_state(1)[0])


def scene_origin(index: int, size: int = 1024, resolution: float = 0.5,
                 base: tuple[float, float] = DEFAULT_ORIGIN, columns: int = 4,
                 gap_m: float = 500.0) -> tuple[float, float]:
    """Upper-left corner of scene ``index``: scenes lie on a grid, ``gap_m`` apart, never overlapping."""
    step = size * resolution + gap_m
    col, row = index % columns, index // columns
    return (base[0] + col * step, base[1] - row * step)


def demo_key(scenes: int, size: int, seed: int) -> str:
    """Directory name encoding the significant parameters, e.g. ``n4_s1024_seed42``."""
    return f"n{scenes}_s{size}_seed{seed}"


# --------------------------------------------------------------------------- noise helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise in about [-1, 1] with ``cells`` random values across the larger side."""
    h, w = shape
    cells = max(2, int(cells))
    gh = max(2, int(math.ceil(cells * h / max(h, w)))) + 3
    gw = max(2, int(math.ceil(cells * w / max(h, w)))) + 3
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    iy, wy = _cubic_weights(h, gh - 3)
    ix, wx = _cubic_weights(w, gw - 3)
    rows = sum(wy[k][:, None] * grid[iy[k], :] for k in range(4))  # (h, gw)
    out = sum(wx[k][None, :] * rows[:, ix[k]] for k in range(4))  # (h, w)
    return np.clip(out * 0.8, -2, 2)


def _cubic_weights(n_out: int, cells: int):
    """Catmull-Rom interpolation taps: output pixel i samples grid coordinate 1 + (i + .5) * cells / n_out.

    Separable gathers and element-wise products only (no BLAS), so results are bit-identical
    on every machine.
    """
    x = 1.0 + (np.arange(n_out, dtype=np.float64) + 0.5) * cells / n_out
    i1 = np.floor(x).astype(np.intp)
    t = x - i1
    w = [
        ((-0.5 * t + 1.0) * t - 0.5) * t,
        (1.5 * t - 2.5) * t * t + 1.0,
        ((-1.5 * t + 2.0) * t + 0.5) * t,
        (0.5 * t - 0.5) * t * t,
    ]
    return [i1 - 1, i1, i1 + 1, i1 + 2], [wk.astype(np.float32) for wk in w]


def _fractal_noise(rng, shape, base_cells: int, octaves: int, persistence: float = 0.55) -> np.ndarray:
    total = np.zeros(shape, np.float32)
    amp, norm, cells = 1.0, 0.0, base_cells
    for _ in range(octaves):
        total += amp * _smooth_noise(rng, shape, cells)
        norm += amp
        amp *= persistence
        cells *= 2
    return total / norm


def _window(bounds, shape, pad: int = 2) -> tuple[int, int, int, int] | None:
    """Integer pixel window (r0, r1, c0, c1) around pixel-space bounds, clipped to the raster."""
    minx, miny, maxx, maxy = bounds
    h, w = shape
    c0, r0 = max(0, int(math.floor(minx)) - pad), max(0, int(math.floor(miny)) - pad)
    c1, r1 = min(w, int(math.ceil(maxx)) + pad), min(h, int(math.ceil(maxy)) + pad)
    if c1 <= c0 or r1 <= r0:
        return None
    return r0, r1, c0, c1


def _coverage(geom, win, ss: int = 4) -> np.ndarray:
    """Fraction of each pixel of ``win`` covered by ``geom`` (pixel coordinates), by supersampling."""
    r0, r1, c0, c1 = win
    h, w = r1 - r0, c1 - c0
    t = Affine(1.0 / ss, 0, c0, 0, 1.0 / ss, r0)
    m = rasterize([(geom, 1)], out_shape=(h * ss, w * ss), transform=t, fill=0, dtype="uint8")
    return m.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)


def _blend(img, win, alpha, colour) -> None:
    r0, r1, c0, c1 = win
    a = alpha[..., None]
    img[r0:r1, c0:c1] = img[r0:r1, c0:c1] * (1.0 - a) + colour * a


# --------------------------------------------------------------------------- building shapes


@dataclass
class _Building:
    parts: list[tuple[float, float, float, float]]  # axis-aligned rects (u0, v0, u1, v1), metres, local frame
    local: Polygon  # outline in the local frame (metres)
    angle: float = 0.0  # radians, pixel frame
    cx: float = 0.0  # centre, pixels
    cy: float = 0.0
    height: float = 3.5  # metres
    roof: dict = field(default_factory=dict)
    px: Polygon | None = None  # outline in pixel coordinates


def _to_pixels(local: Polygon, angle: float, cx: float, cy: float, res: float):
    ca, sa = math.cos(angle), math.sin(angle)

    def f(c):
        u, v = c[:, 0], c[:, 1]
        return np.column_stack([cx + (u * ca - v * sa) / res, cy + (u * sa + v * ca) / res])

    return shapely.transform(local, f)


def _side(rng, lo=6.0, hi=35.0) -> float:
    return float(lo + (hi - lo) * rng.beta(1.5, 3.8))


def _random_shape(rng: np.random.Generator, max_side: float) -> list[tuple[float, float, float, float]]:
    """Parts of one building: rectangle, L, T or U, sides 6..max_side metres."""
    kind = rng.choice(["rect", "L", "T", "U"], p=[0.6, 0.24, 0.09, 0.07])
    if kind == "rect":
        a = min(_side(rng), max_side)
        b = float(np.clip(a * rng.uniform(0.45, 1.0), 6.0, max_side))
        if a * b < MIN_BUILDING_AREA_M2 + 1:
            a = b = 6.5
        return [(-a / 2, -b / 2, a / 2, b / 2)]
    L = float(np.clip(_side(rng, 12.0, 35.0), 12.0, max(12.0, max_side)))
    W = float(np.clip(L * rng.uniform(0.55, 1.0), 10.0, max(10.0, max_side)))
    t = float(rng.uniform(0.38, 0.55) * W)  # thickness of the main bar
    t = max(t, 4.5)
    if kind == "L":
        s = float(max(4.5, rng.uniform(0.3, 0.5) * L))
        return [(-L / 2, -W / 2, L / 2, -W / 2 + t), (-L / 2, -W / 2 + t, -L / 2 + s, W / 2)]
    if kind == "T":
        s = float(max(4.5, rng.uniform(0.3, 0.45) * L))
        return [(-L / 2, -W / 2, L / 2, -W / 2 + t), (-s / 2, -W / 2 + t, s / 2, W / 2)]
    s = float(max(4.0, rng.uniform(0.22, 0.32) * L))  # U: courtyard width L - 2s >= ~3.5 m
    return [(-L / 2, -W / 2, L / 2, -W / 2 + t), (-L / 2, -W / 2 + t, -L / 2 + s, W / 2),
            (L / 2 - s, -W / 2 + t, L / 2, W / 2)]


def _outline(parts) -> Polygon:
    if len(parts) == 1:
        u0, v0, u1, v1 = parts[0]
        return Polygon([(u0, v0), (u1, v0), (u1, v1), (u0, v1)])
    poly = shapely.union_all([box(*p) for p in parts])
    return shapely.simplify(poly, 0.0)


def _row_units(rng: np.random.Generator, k: int) -> list[tuple[list, Polygon]]:
    """A row of ``k`` units sharing walls exactly: shared wall vertices are identical floats."""
    lengths = [float(rng.uniform(6.0, 13.0)) for _ in range(k)]
    base_depth = float(rng.uniform(7.0, 13.0))
    depths = [base_depth if rng.random() < 0.6 else float(np.clip(base_depth + rng.uniform(-3, 3), 6.0, 15.0))
              for _ in range(k)]
    us = np.concatenate([[0.0], np.cumsum(lengths)])
    us = us - us[-1] / 2
    v0 = -max(depths) / 2
    units = []
    for i in range(k):
        ua, ub, d = float(us[i]), float(us[i + 1]), depths[i]
        pts = [(ua, v0), (ub, v0)]
        if i + 1 < k and depths[i + 1] < d:
            pts.append((ub, v0 + depths[i + 1]))
        pts += [(ub, v0 + d), (ua, v0 + d)]
        if i > 0 and depths[i - 1] < d:
            pts.append((ua, v0 + depths[i - 1]))
        units.append(([(ua, v0, ub, v0 + d)], Polygon(pts)))
    return units


# --------------------------------------------------------------------------- layout


def _roads(rng, size: int, res: float):
    """Road centrelines (pixel frame) with width (px), kind and colour."""
    c = np.array([size / 2, size / 2])
    theta = float(rng.uniform(0, math.pi / 2))
    e1 = np.array([math.cos(theta), math.sin(theta)])
    e2 = np.array([-math.sin(theta), math.cos(theta)])
    far = 1.5 * size
    roads = []

    def offsets(spacing_m):
        lo, hi = -0.75 * size, 0.75 * size
        s = lo + rng.uniform(0.2, 1.0) * spacing_m[0] / res
        out = []
        while s < hi:
            out.append(s)
            s += rng.uniform(*spacing_m) / res
        return out

    a_offs = offsets((110.0, 220.0))
    for s in a_offs:
        paved = rng.random() < 0.65
        roads.append(dict(line=LineString([c + s * e2 - far * e1, c + s * e2 + far * e1]),
                          width=rng.uniform(7.0, 12.0) / res if paved else rng.uniform(5.0, 8.0) / res,
                          paved=paved, main=True))
    bounds = [-far] + sorted(a_offs) + [far]
    for s in offsets((130.0, 260.0)):
        paved = rng.random() < 0.35
        if rng.random() < 0.5 or len(bounds) < 3:
            t0, t1 = -far, far
        else:  # a segment between two parallel roads: T-junctions
            j = int(rng.integers(0, len(bounds) - 1))
            t0, t1 = bounds[j], bounds[j + 1]
        roads.append(dict(line=LineString([c + s * e1 + t0 * e2, c + s * e1 + t1 * e2]),
                          width=rng.uniform(5.0, 9.0) / res if paved else rng.uniform(4.0, 7.0) / res,
                          paved=paved, main=False))
    if rng.random() < 0.8:  # one winding dirt road
        psi = float(rng.uniform(0, math.pi))
        d1 = np.array([math.cos(psi), math.sin(psi)])
        d2 = np.array([-math.sin(psi), math.cos(psi)])
        p0 = c + rng.uniform(-0.3, 0.3, 2) * size
        amp = rng.uniform(15.0, 45.0) / res
        wl = rng.uniform(180.0, 380.0) / res
        ph = rng.uniform(0, 2 * math.pi)
        t = np.linspace(-far, far, 400)
        pts = p0 + t[:, None] * d1 + (amp * np.sin(2 * math.pi * t / wl + ph))[:, None] * d2
        roads.append(dict(line=LineString(pts), width=rng.uniform(4.0, 6.0) / res, paved=False, main=False))
    scene = box(-50, -50, size + 50, size + 50)
    out = []
    for r in roads:
        line = r["line"].intersection(scene)
        if line.is_empty or line.length < 1:
            continue
        if line.geom_type != "LineString":
            line = max(getattr(line, "geoms", [line]), key=lambda g: g.length)
        r["line"] = line
        r["poly"] = line.buffer(r["width"] / 2, cap_style="flat")
        if r["paved"]:
            g = rng.uniform(88, 160)
            r["colour"] = np.array([g * rng.uniform(0.97, 1.03), g, g * rng.uniform(0.98, 1.06)], np.float32)
        else:
            r["colour"] = np.array([rng.uniform(150, 190), rng.uniform(120, 148), rng.uniform(88, 110)], np.float32)
        out.append(r)
    return out


def _tangent_angle(line: LineString, d: float) -> float:
    a = line.interpolate(max(0.0, d - 2.0))
    b = line.interpolate(min(line.length, d + 2.0))
    return math.atan2(b.y - a.y, b.x - a.x)


def _place_buildings(rng, size: int, res: float, roads, n_target: int, n_pairs_target: int,
                     margin_px: float = 1.0, gap_m: float = 1.5, road_clear_m: float = 1.0):
    """Non-overlapping buildings: rows of touching units first, then single buildings.

    Most buildings line the roads, aligned with them; the rest fill the blocks with arbitrary
    orientations, often echoing a neighbour's.
    """
    road_union = shapely.union_all([r["poly"] for r in roads]) if roads else Polygon()
    shapely.prepare(road_union)
    scene_m = size * res
    max_side = max(6.5, min(35.0, scene_m / 3.5))
    placed: list[_Building] = []
    geoms: list[Polygon] = []
    lengths = np.array([r["line"].length for r in roads]) if roads else np.array([])

    def fits(poly: Polygon) -> bool:
        minx, miny, maxx, maxy = poly.bounds
        if minx < margin_px or miny < margin_px or maxx > size - margin_px or maxy > size - margin_px:
            return False
        if not road_union.is_empty and shapely.dwithin(road_union, poly, road_clear_m / res):
            return False
        if geoms and bool(shapely.dwithin(np.asarray(geoms, dtype=object), poly, gap_m / res).any()):
            return False
        return True

    def pose(depth_m: float):
        """Centre and angle: along a road (aligned) or free (random / neighbour-aligned)."""
        if len(roads) and rng.random() < 0.6:
            r = roads[int(rng.choice(len(roads), p=lengths / lengths.sum()))]
            d = float(rng.uniform(0, r["line"].length))
            p = r["line"].interpolate(d)
            ang = _tangent_angle(r["line"], d)
            side = 1 if rng.random() < 0.5 else -1
            off = r["width"] / 2 + (rng.uniform(1.5, 9.0) + depth_m / 2) / res
            cx = p.x - side * math.sin(ang) * off
            cy = p.y + side * math.cos(ang) * off
            ang += rng.normal(0, math.radians(2.5))
            if rng.random() < 0.2:
                ang += math.pi / 2
            return cx, cy, ang
        if placed and rng.random() < 0.55:  # grow a cluster: next to an existing building
            nb = placed[int(rng.integers(len(placed)))]
            d, phi = rng.uniform(8.0, 28.0) / res, rng.uniform(0, 2 * math.pi)
            cx, cy = nb.cx + d * math.cos(phi), nb.cy + d * math.sin(phi)
        else:
            cx, cy = rng.uniform(0, size, 2)
        if placed and rng.random() < 0.5:
            near = min(placed, key=lambda b: (b.cx - cx) ** 2 + (b.cy - cy) ** 2)
            ang = near.angle + rng.normal(0, math.radians(6)) + (math.pi / 2 if rng.random() < 0.3 else 0)
        else:
            ang = rng.uniform(0, math.pi)
        return float(cx), float(cy), float(ang)

    # rows of touching units (terraces, shop-houses)
    pairs, tries = 0, 0
    while pairs < n_pairs_target and tries < 300 and len(placed) + 2 <= n_target:
        tries += 1
        k = int(min(rng.integers(2, 5), n_target - len(placed), n_pairs_target - pairs + 1))
        k = max(k, 2)
        units = _row_units(rng, k)
        row_local = shapely.union_all([u[1] for u in units])
        depth = row_local.bounds[3] - row_local.bounds[1]
        cx, cy, ang = pose(depth)
        if not fits(_to_pixels(row_local, ang, cx, cy, res)):
            continue
        h = float(rng.choice([3.2, 3.6, 6.5]) + rng.uniform(0, 0.6))
        for parts, local in units:
            b = _Building(parts=parts, local=local, angle=ang, cx=cx, cy=cy,
                          height=h + float(rng.uniform(-0.3, 0.3)))
            b.px = _to_pixels(local, ang, cx, cy, res)
            placed.append(b)
            geoms.append(b.px)
        pairs += k - 1

    # single buildings
    tries = 0
    while len(placed) < n_target and tries < 80 * n_target + 500:
        tries += 1
        parts = _random_shape(rng, max_side)
        local = _outline(parts)
        if local.area < MIN_BUILDING_AREA_M2:
            continue
        depth = local.bounds[3] - local.bounds[1]
        cx, cy, ang = pose(depth)
        px = _to_pixels(local, ang, cx, cy, res)
        if not fits(px):
            continue
        storeys = int(rng.choice([1, 2, 3, 4], p=[0.68, 0.2, 0.08, 0.04]))
        if local.area > 400:
            storeys = max(storeys, int(rng.choice([1, 2, 3])))
        b = _Building(parts=parts, local=local, angle=ang, cx=cx, cy=cy,
                      height=storeys * 3.0 + float(rng.uniform(0.3, 1.4)), px=px)
        placed.append(b)
        geoms.append(px)
    return placed


# --------------------------------------------------------------------------- rendering


def _ground(rng, shape) -> np.ndarray:
    """Soil, dry grass and green grass mixed by fractal noise, with fine texture."""
    h, w = shape
    big = max(h, w)
    soil = np.array([rng.uniform(170, 195), rng.uniform(138, 155), rng.uniform(105, 120)], np.float32)
    dark_soil = np.array([128, 104, 84], np.float32) * rng.uniform(0.9, 1.1)
    dry = np.array([rng.uniform(150, 172), rng.uniform(145, 160), rng.uniform(98, 112)], np.float32)
    grass = np.array([rng.uniform(88, 112), rng.uniform(112, 132), rng.uniform(62, 78)], np.float32)
    f_veg = _fractal_noise(rng, shape, max(2, big // 160), 5)
    f_dry = _fractal_noise(rng, shape, max(2, big // 90), 4)
    f_dark = _fractal_noise(rng, shape, max(2, big // 60), 4)
    veg = np.clip((f_veg + rng.uniform(-0.1, 0.25)) * 2.2 + 0.5, 0, 1)[..., None]
    dryness = np.clip(f_dry * 2.0 + 0.5, 0, 1)[..., None]
    darkness = np.clip(f_dark * 1.5 - 0.1, 0, 0.6)[..., None]
    plants = dry * dryness + grass * (1 - dryness)
    img = soil * (1 - veg) + plants * veg
    img = img * (1 - darkness) + dark_soil * darkness
    # shrubs and grass tufts: small dark-green spots, denser where it is green
    spots = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.3)
    spots = np.clip((spots / spots.std() - 2.1) * 1.5, 0, 1) * np.clip(veg[..., 0] + 0.25, 0, 1)
    shrub = np.array([62, 84, 44], np.float32) * rng.uniform(0.85, 1.15)
    img = img * (1 - spots[..., None] * 0.8) + shrub * (spots[..., None] * 0.8)
    fine = _fractal_noise(rng, shape, max(4, big // 4), 3, 0.7)
    speck = rng.standard_normal(shape).astype(np.float32)
    img *= (1.0 + 0.07 * fine + 0.035 * speck)[..., None]
    return img.astype(np.float32)


def _draw_roads(img, rng, roads, tex, res):
    for r in roads:  # worn sandy shoulders first
        if not r["paved"]:
            continue
        sh = r["line"].buffer(r["width"] / 2 + rng.uniform(0.8, 2.5) / res, cap_style="flat")
        win = _window(sh.bounds, img.shape[:2])
        if win is None:
            continue
        a = ndimage.gaussian_filter(_coverage(sh, win, ss=1), 1.5) * rng.uniform(0.35, 0.7)
        a = a * np.clip(0.7 + 0.8 * tex[win[0]:win[1], win[2]:win[3]], 0, 1)
        _blend(img, win, a, np.array([196, 170, 136], np.float32) * rng.uniform(0.9, 1.05))
    for r in roads:
        win = _window(r["poly"].bounds, img.shape[:2])
        if win is None:
            continue
        a = _coverage(r["poly"], win, ss=2)
        a = ndimage.gaussian_filter(a, 0.5 if r["paved"] else 1.4)
        if not r["paved"]:
            a = a * np.clip(0.85 + 0.3 * tex[win[0]:win[1], win[2]:win[3]], 0, 1)
        r0, r1, c0, c1 = win
        t = tex[r0:r1, c0:c1, None]
        colour = r["colour"] * (1 + (0.04 if r["paved"] else 0.09) * t)
        _blend(img, win, a, colour)


def _draw_patches(img, rng, size, res, n_paths, n_pads, tex):
    """Footpaths (light, winding) and concrete / compacted-soil pads: ground clutter, not buildings."""
    for _ in range(n_paths):
        p0 = rng.uniform(0, size, 2)
        ang = rng.uniform(0, 2 * math.pi)
        pts = [p0]
        for _ in range(int(rng.integers(4, 10))):
            ang += rng.normal(0, 0.5)
            pts.append(pts[-1] + rng.uniform(15, 40) / res * np.array([math.cos(ang), math.sin(ang)]))
        poly = LineString(pts).buffer(rng.uniform(0.6, 1.1) / res)
        win = _window(poly.bounds, img.shape[:2])
        if win is None:
            continue
        a = ndimage.gaussian_filter(_coverage(poly, win, ss=2), 0.8) * rng.uniform(0.4, 0.75)
        _blend(img, win, a, np.array([200, 178, 145], np.float32) * rng.uniform(0.92, 1.05))
    for _ in range(n_pads):
        c = rng.uniform(0, size, 2)
        a_, b_ = rng.uniform(4, 16) / res, rng.uniform(3, 10) / res
        poly = shapely.affinity.rotate(box(c[0] - a_ / 2, c[1] - b_ / 2, c[0] + a_ / 2, c[1] + b_ / 2),
                                       rng.uniform(0, 180))
        win = _window(poly.bounds, img.shape[:2])
        if win is None:
            continue
        a = ndimage.gaussian_filter(_coverage(poly, win, ss=2), 0.6) * rng.uniform(0.6, 0.95)
        g = rng.uniform(120, 200)
        colour = np.array([g, g * 0.98, g * 0.94], np.float32) * (1 + 0.05 * tex[win[0]:win[1], win[2]:win[3], None])
        _blend(img, win, a, colour)


def _shadow_vector(sun_az: float, sun_el: float, res: float) -> np.ndarray:
    """Pixel offset of the shadow of a 1 m tall point (away from the sun)."""
    # azimuth clockwise from north; pixel frame x = east, y = south
    to_sun = np.array([math.sin(sun_az), -math.cos(sun_az)])
    return -to_sun / math.tan(sun_el) / res


def _swept(poly: Polygon, d: np.ndarray) -> Polygon:
    """``poly`` extruded along the offset ``d``: the shadow of a prism on flat ground."""
    moved = shapely.affinity.translate(poly, d[0], d[1])
    c = np.asarray(poly.exterior.coords)
    quads = [Polygon([c[i], c[i + 1], c[i + 1] + d, c[i] + d]) for i in range(len(c) - 1)]
    quads = [q for q in quads if q.area > 1e-9]
    return shapely.union_all([poly, moved] + quads)


def _apply_shadow(img, polys, strength: float, blur: float, tint=(0.50, 0.53, 0.62)) -> None:
    if not polys:
        return
    h, w = img.shape[:2]
    ss = 2
    m = rasterize([(p, 1) for p in polys], out_shape=(h * ss, w * ss),
                  transform=Affine(1.0 / ss, 0, 0, 0, 1.0 / ss, 0), fill=0, dtype="uint8")
    a = m.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)
    a = ndimage.gaussian_filter(a, blur) * strength
    factor = 1.0 - a[..., None] * (1.0 - np.asarray(tint, np.float32))
    img *= factor


def _roof_colour(rng, name: str, ground_rgb) -> np.ndarray:
    if name == "ground":
        return np.asarray(ground_rgb, np.float32) * rng.uniform(0.9, 1.12) + rng.normal(0, 4, 3)
    base = np.asarray(_ROOFS[name][1], np.float32)
    return base * rng.uniform(0.88, 1.1) + rng.normal(0, 5, 3)


def _draw_building(img, b: _Building, res: float, sun_dir: np.ndarray, tex: np.ndarray) -> None:
    win = _window(b.px.bounds, img.shape[:2], pad=1)
    alpha = _coverage(b.px, win, ss=4)
    r0, r1, c0, c1 = win
    rows, cols = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    dx, dy = cols + 0.5 - b.cx, rows + 0.5 - b.cy
    ca, sa = math.cos(b.angle), math.sin(b.angle)
    u = (dx * ca + dy * sa) * res  # local frame, metres
    v = (-dx * sa + dy * ca) * res
    roof = b.roof
    shade = np.zeros(u.shape, np.float32)
    ridge = np.zeros(u.shape, np.float32)
    eave = np.zeros(u.shape, np.float32)
    assigned = np.zeros(u.shape, bool)
    e_u = np.array([ca, sa])  # local axes in the pixel frame
    e_v = np.array([-sa, ca])
    for (pu0, pv0, pu1, pv1) in b.parts:
        inside = (~assigned) & (u >= pu0 - 0.6) & (u <= pu1 + 0.6) & (v >= pv0 - 0.6) & (v <= pv1 + 0.6)
        assigned |= inside
        mu, mv = (pu0 + pu1) / 2, (pv0 + pv1) / 2
        hu, hv = (pu1 - pu0) / 2, (pv1 - pv0) / 2
        a_, b_ = u - mu, v - mv
        if hu >= hv:  # ridge along u
            along, across, hl, hw, e_al, e_ac = a_, b_, hu, hv, e_u, e_v
        else:
            along, across, hl, hw, e_al, e_ac = b_, a_, hv, hu, e_v, e_u
        k = roof["pitch"]
        if roof["style"] == "flat":
            g = roof["grad"] * (along / max(hl, 1e-3))
            d_edge = np.minimum(hl - np.abs(along), hw - np.abs(across))
            par = np.where(d_edge < 0.45, -0.10, 0.0)
            shade = np.where(inside, g + par, shade)
            continue
        if roof["style"] == "hip":
            end = (np.abs(along) - (hl - hw)) > np.abs(across)
            n_dot = np.where(end, np.sign(along) * float(e_al @ sun_dir), np.sign(across) * float(e_ac @ sun_dir))
            crease = np.abs(np.abs(along) - (hl - hw) - np.abs(across)) < 0.3
            rl = ((np.abs(across) < 0.3) & (np.abs(along) <= hl - hw)) | crease
        else:
            n_dot = np.sign(across) * float(e_ac @ sun_dir)
            rl = np.abs(across) < 0.3
        shade = np.where(inside, k * n_dot, shade)
        ridge = np.where(inside & rl, 1.0, ridge)
        eave = np.where(inside & (np.abs(across) > hw - 0.4), 1.0, eave)
    colour = np.broadcast_to(roof["rgb"], u.shape + (3,)).astype(np.float32)
    t = tex[r0:r1, c0:c1]
    if roof["name"] == "rusty":
        rust = np.clip(0.5 + 1.6 * tex[r0:r1, c0:c1][::-1, ::-1], 0, 1)[..., None]
        colour = colour * (1 - rust) + np.array([120, 72, 48], np.float32) * rust
    lum = 1.0 + shade + roof["ridge"] * ridge - 0.05 * eave + roof["texture"] * t
    colour = colour * lum[..., None]
    _blend(img, win, alpha, colour)


def _draw_cars(img, rng, roads, res, n, shadow_vec) -> None:
    paved = [r for r in roads if r["paved"]]
    if not paved or n <= 0:
        return
    palette = np.array([[225, 226, 228], [175, 178, 182], [48, 50, 55], [160, 40, 38], [40, 70, 140],
                        [230, 230, 225]], np.float32)
    lens = np.array([r["line"].length for r in paved])
    for _ in range(n):
        r = paved[int(rng.choice(len(paved), p=lens / lens.sum()))]
        d = float(rng.uniform(0, r["line"].length))
        p = r["line"].interpolate(d)
        ang = _tangent_angle(r["line"], d)
        off = (rng.choice([-1, 1]) * r["width"] / 4)
        cx, cy = p.x - math.sin(ang) * off, p.y + math.cos(ang) * off
        local = box(-2.2, -0.9, 2.2, 0.9)
        poly = _to_pixels(local, ang, cx, cy, res)
        sh = shapely.affinity.translate(poly, *(shadow_vec * 1.5))
        for geom, col, s in ((sh, None, 0.5), (poly, palette[rng.integers(len(palette))], 1.0)):
            win = _window(geom.bounds, img.shape[:2])
            if win is None:
                continue
            a = _coverage(geom, win, ss=4)
            if col is None:
                r0, r1, c0, c1 = win
                img[r0:r1, c0:c1] *= (1 - s * a)[..., None]
            else:
                _blend(img, win, a, col)


def _tree_blob(cx, cy, R, palm: bool, rng):
    k = np.arange(2, 6)
    amps = rng.uniform(0.03, 0.09, k.size)
    phs = rng.uniform(0, 2 * math.pi, k.size)
    if palm:
        nk = int(rng.integers(7, 12))
        k, amps, phs = np.append(k, nk), np.append(amps, 0.3), np.append(phs, rng.uniform(0, 2 * math.pi))
    return dict(cx=cx, cy=cy, R=R, k=k, amps=amps, phs=phs)


def _blob_alpha(t, win, dx_off=0.0, dy_off=0.0):
    r0, r1, c0, c1 = win
    rows, cols = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    dx, dy = cols + 0.5 - (t["cx"] + dx_off), rows + 0.5 - (t["cy"] + dy_off)
    r = np.hypot(dx, dy)
    th = np.arctan2(dy, dx)
    rad = t["R"] * (1 + (t["amps"][:, None, None] * np.sin(t["k"][:, None, None] * th + t["phs"][:, None, None])).sum(0))
    return np.clip(rad - r + 0.5, 0, 1), dx, dy, r


def _place_trees(rng, size, res, buildings, n_trees, n_overhang):
    trees = []
    centres = rng.uniform(0, size, (max(1, n_trees // 12), 2))
    bgeoms = np.asarray([b.px for b in buildings], dtype=object)
    tries = 0
    while len(trees) < n_trees and tries < 20 * n_trees:
        tries += 1
        if rng.random() < 0.65:
            c = centres[rng.integers(len(centres))] + rng.normal(0, 16 / res, 2)
        else:
            c = rng.uniform(0, size, 2)
        R = float(1.5 + 6.5 * rng.beta(1.6, 3.0)) / res
        if len(bgeoms) and bool(shapely.dwithin(bgeoms, Point(c), 0.4 * R).any()):
            continue
        trees.append(_tree_blob(float(c[0]), float(c[1]), R, rng.random() < 0.22, rng))
    for _ in range(min(n_overhang, len(buildings))):  # trees partly over roofs
        b = buildings[int(rng.integers(len(buildings)))]
        p = b.px.exterior.interpolate(float(rng.uniform(0, 1)), normalized=True)
        minside = min(b.local.bounds[2] - b.local.bounds[0], b.local.bounds[3] - b.local.bounds[1])
        R = float(rng.uniform(1.5, max(1.6, min(4.0, 0.35 * minside)))) / res
        trees.append(_tree_blob(p.x, p.y, R, rng.random() < 0.3, rng))
    return trees


def _draw_trees(img, rng, trees, tex, sun_dir, shadow_vec) -> None:
    h, w = img.shape[:2]
    shadow = np.zeros((h, w), np.float32)
    heights = [float(rng.uniform(4.0, 12.0)) for _ in trees]
    for t, ht in zip(trees, heights):
        off = shadow_vec * ht * 0.8
        R = t["R"]
        win = _window((t["cx"] + off[0] - R * 1.4, t["cy"] + off[1] - R * 1.4,
                       t["cx"] + off[0] + R * 1.4, t["cy"] + off[1] + R * 1.4), (h, w))
        if win is None:
            continue
        a = _blob_alpha(t, win, off[0], off[1])[0]
        r0, r1, c0, c1 = win
        shadow[r0:r1, c0:c1] = np.maximum(shadow[r0:r1, c0:c1], a)
    shadow = ndimage.gaussian_filter(shadow, 0.9) * 0.55
    img *= 1.0 - shadow[..., None] * (1.0 - np.array([0.5, 0.53, 0.62], np.float32))
    for t in trees:
        R = t["R"]
        win = _window((t["cx"] - R * 1.4, t["cy"] - R * 1.4, t["cx"] + R * 1.4, t["cy"] + R * 1.4), (h, w))
        if win is None:
            continue
        a, dx, dy, r = _blob_alpha(t, win)
        r0, r1, c0, c1 = win
        base = np.array([rng.uniform(40, 80), rng.uniform(68, 105), rng.uniform(30, 52)], np.float32)
        lit = (dx * sun_dir[0] + dy * sun_dir[1]) / max(R, 1e-3)
        clump = tex[r0:r1, c0:c1]
        lum = 1.0 + 0.28 * np.clip(lit, -1, 1) + 0.22 * clump - 0.15 * np.clip(r / max(R, 1e-3), 0, 1) ** 3
        _blend(img, win, a * 0.97, base * lum[..., None])


# --------------------------------------------------------------------------- the scene


def generate_scene(seed: int, size: int = 1024, resolution: float = 0.5, crs: str = DEFAULT_CRS,
                   origin: tuple[float, float] | None = None, n_buildings: int | None = None):
    """One synthetic aerial scene and its exact building labels.

    Returns ``(image, transform, crs, buildings)``: ``image`` is uint8 ``(3, size, size)``,
    ``transform`` the north-up :class:`affine.Affine` with ``resolution`` metres per pixel and
    upper-left corner ``origin`` (default :data:`DEFAULT_ORIGIN`), ``buildings`` a list of
    shapely Polygons in the CRS ``crs``. ``n_buildings`` defaults to 130..180 per 512 m x 512 m
    of ground, scaled by area. The same arguments always give identical results.
    """
    if size < 32:
        raise ValueError(f"demo scene size must be >= 32 px, got {size}")
    if resolution <= 0:
        raise ValueError(f"demo resolution must be > 0, got {resolution}")
    x0, y0 = origin if origin is not None else DEFAULT_ORIGIN
    transform = Affine(resolution, 0.0, float(x0), 0.0, -resolution, float(y0))
    rng = np.random.default_rng(seed)
    area_scale = (size * resolution / 512.0) ** 2
    if n_buildings is None:
        n_buildings = max(1, int(round(int(rng.integers(130, 181)) * area_scale)))
    n_pairs = min(n_buildings // 3, max(6, n_buildings // 14))
    shape = (size, size)

    # sun: consistent direction for every shadow in the scene
    sun_az = float(rng.uniform(0, 2 * math.pi))
    sun_el = float(math.radians(rng.uniform(48, 68)))
    sun_dir = np.array([math.sin(sun_az), -math.cos(sun_az)], np.float32)
    shadow_vec = _shadow_vector(sun_az, sun_el, resolution)

    roads = _roads(rng, size, resolution)
    buildings = _place_buildings(rng, size, resolution, roads, n_buildings, n_pairs)

    img = _ground(rng, shape)
    ground = ndimage.uniform_filter(img, size=(9, 9, 1))
    tex = _fractal_noise(rng, shape, max(8, size // 6), 3, 0.6)  # fine texture shared by roofs, roads, trees
    _draw_patches(img, rng, size, resolution, int(rng.integers(3, 9) * max(area_scale, 0.2)),
                  int(rng.integers(6, 16) * max(area_scale, 0.2)), tex)
    _draw_roads(img, rng, roads, tex, resolution)

    # roofs: tone, style, pitch
    names = list(_ROOFS)
    weights = np.array([_ROOFS[k][0] for k in names])
    for b in buildings:
        name = str(rng.choice(names, p=weights / weights.sum()))
        gx = int(np.clip(b.cx, 0, size - 1))
        gy = int(np.clip(b.cy, 0, size - 1))
        style = str(rng.choice(["gable", "hip", "flat"], p=[0.45, 0.3, 0.25]))
        if name == "concrete":
            style = "flat"
        b.roof = dict(name=name, rgb=_roof_colour(rng, name, ground[gy, gx]), style=style,
                      pitch=float(rng.uniform(0.06, 0.2)), grad=float(rng.uniform(-0.08, 0.08)),
                      ridge=float(rng.uniform(-0.08, 0.12)),
                      texture=float(rng.uniform(0.02, 0.06)))

    _apply_shadow(img, [_swept(b.px, shadow_vec * b.height) for b in buildings], strength=0.62, blur=0.6)
    _draw_cars(img, rng, roads, resolution, int(rng.integers(5, 30) * area_scale), shadow_vec)
    for b in buildings:
        _draw_building(img, b, resolution, sun_dir, tex)
    trees = _place_trees(rng, size, resolution, buildings, int(rng.integers(160, 300) * area_scale),
                         int(rng.integers(8, 20) * area_scale))
    _draw_trees(img, rng, trees, tex, sun_dir, shadow_vec)

    # optics and sensor: slight blur, haze, gain, noise
    img = ndimage.gaussian_filter(img, sigma=(0.55, 0.55, 0))
    gain = rng.uniform(0.92, 1.06, 3).astype(np.float32)
    haze = rng.uniform(0, 10)
    img = img * gain + haze
    img += rng.normal(0, 2.2, img.shape).astype(np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(2, 0, 1).copy()

    t = transform
    labels = [shapely.transform(b.px, lambda c: np.column_stack([t.c + c[:, 0] * t.a, t.f + c[:, 1] * t.e]))
              for b in buildings]
    return image, transform, crs, labels


# --------------------------------------------------------------------------- writers


def buildings_to_geojson(buildings, crs) -> dict:
    """RFC 7946 FeatureCollection (EPSG:4326, lon/lat, CCW exteriors, full precision, no ``crs``)."""
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)

    def ring(coords):
        c = np.asarray(coords, dtype=float)
        lon, lat = tr.transform(c[:, 0], c[:, 1])
        return np.column_stack([lon, lat])

    features = []
    for i, poly in enumerate(buildings, start=1):
        geo = orient(Polygon(ring(poly.exterior.coords), [ring(r.coords) for r in poly.interiors]), sign=1.0)
        coords = [[[float(x), float(y)] for x, y in geo.exterior.coords]]
        coords += [[[float(x), float(y)] for x, y in r.coords] for r in geo.interiors]
        features.append({
            "type": "Feature",
            "id": i,
            "geometry": {"type": "Polygon", "coordinates": coords},
            "properties": {"id": i, "building": "yes", "area_m2": float(poly.area)},
        })
    return {"type": "FeatureCollection", "features": features}


def _atomic_tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_geotiff(image: np.ndarray, transform: Affine, crs, path) -> None:
    """Tiled, DEFLATE-compressed RGB GeoTIFF, written to a temp name then renamed."""
    path = Path(path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{path}: expected a uint8 (3, H, W) image, got {image.dtype} {image.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_tmp(path)
    profile = dict(driver="GTiff", width=image.shape[2], height=image.shape[1], count=3, dtype="uint8",
                   crs=crs, transform=transform, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", predictor=2, photometric="RGB", interleave="pixel")
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(image)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_geojson(fc: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_tmp(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(fc, f)  # repr floats: full double precision
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_scene(image, transform, crs, buildings, image_path, label_path) -> None:
    """The scene's GeoTIFF and its RFC 7946 GeoJSON labels, each written atomically."""
    write_geotiff(image, transform, crs, image_path)
    write_geojson(buildings_to_geojson(buildings, crs), label_path)


def touching_pairs(buildings, tol: float = 1e-6) -> list[tuple[int, int]]:
    """Index pairs of buildings that touch (share a wall) without overlapping."""
    tree = shapely.STRtree(buildings)
    out = []
    for i, j in zip(*tree.query(buildings, predicate="dwithin", distance=tol)):
        if i < j:
            out.append((int(i), int(j)))
    return out


# --------------------------------------------------------------------------- Luigi


def demo_dir() -> Path:
    """``workdir()/demo/<key>``: where :class:`GenerateDemo` puts the scenes of the current config."""
    cfg = data()
    return workdir() / "demo" / demo_key(cfg.demo_scenes, cfg.demo_size, cfg.demo_seed)


def demo_image_path(name: str) -> Path:
    return demo_dir() / "images" / f"{name}.tif"


def demo_label_path(name: str) -> Path:
    return demo_dir() / "labels" / f"{name}.geojson"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class GenerateDemo(luigi.Task):
    """The demo dataset of ``[data] demo_scenes / demo_size / demo_seed``.

    Writes ``images/<name>.tif``, ``labels/<name>.geojson`` and, last, ``manifest.json`` into a
    temporary sibling directory that is renamed into place, so a killed run leaves nothing
    half-written (stale temporary directories of dead processes are removed on the next run).
    """

    def output(self):
        return luigi.LocalTarget(str(demo_dir() / "manifest.json"))

    def run(self):
        cfg = data()
        n, size, seed = int(cfg.demo_scenes), int(cfg.demo_size), int(cfg.demo_seed)
        if n < 1:
            raise ValueError(f"[data] demo_scenes must be >= 1, got {n}")
        if size < 64:
            raise ValueError(f"[data] demo_size must be >= 64 px, got {size}")
        final = demo_dir()
        parent = final.parent
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(f".{final.name}.tmp-*"):
            try:
                pid = int(stale.name.rsplit("-", 2)[-2])
            except (ValueError, IndexError):
                continue
            if not _pid_alive(pid):
                shutil.rmtree(stale, ignore_errors=True)
        for old in parent.glob(f".{final.name}.old-*"):
            shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is not
        try:
            scenes = []
            names = demo_scene_names(n)
            for i, name in enumerate(names):
                self.set_status_message(f"generating {name} ({i + 1}/{n}, {size} px)")
                s = scene_seed(seed, i)
                origin = scene_origin(i, size, 0.5)
                image, transform, crs, buildings = generate_scene(s, size=size, resolution=0.5, origin=origin)
                write_scene(image, transform, crs, buildings,
                            tmp / "images" / f"{name}.tif", tmp / "labels" / f"{name}.geojson")
                scenes.append(dict(name=name, image=f"images/{name}.tif", labels=f"labels/{name}.geojson",
                                   seed=s, crs=crs, resolution=0.5, size=size, origin=list(origin),
                                   transform=list(transform)[:6], n_buildings=len(buildings),
                                   n_touching_pairs=len(touching_pairs(buildings))))
                self.set_progress_percentage(int(100 * (i + 1) / (n + 1)))
            manifest = dict(generator_version=GENERATOR_VERSION, key=final.name, demo_scenes=n, demo_size=size,
                            demo_seed=seed, scenes=scenes)
            with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=2)
            if final.exists():  # an incomplete leftover (no manifest): move it aside, then drop it
                junk = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=parent))
                os.replace(final, junk / "old")
                shutil.rmtree(junk, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.set_progress_percentage(100)
        self.set_status_message(f"{n} demo scenes in {final}")
