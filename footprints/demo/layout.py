"""Where things go in a demo scene: building shapes, rows of touching units, roads, placement.

Everything is in the scene's pixel frame (x = column, y = row) unless a name says metres; every
draw comes from the caller's ``np.random.Generator``, in a fixed order, so a seed fixes the layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon, box

MIN_BUILDING_AREA_M2 = 25.0


# --------------------------------------------------------------------------- building shapes


@dataclass
class Building:
    parts: list[tuple[float, float, float, float]]  # axis-aligned rects (u0, v0, u1, v1), metres, local frame
    local: Polygon  # outline in the local frame (metres)
    angle: float = 0.0  # radians, pixel frame
    cx: float = 0.0  # centre, pixels
    cy: float = 0.0
    height: float = 3.5  # metres
    roof: dict = field(default_factory=dict)
    px: Polygon | None = None  # outline in pixel coordinates


def to_pixels(local: Polygon, angle: float, cx: float, cy: float, res: float):
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


def make_roads(rng, size: int, res: float):
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


def tangent_angle(line: LineString, d: float) -> float:
    a = line.interpolate(max(0.0, d - 2.0))
    b = line.interpolate(min(line.length, d + 2.0))
    return math.atan2(b.y - a.y, b.x - a.x)


def place_buildings(rng, size: int, res: float, roads, n_target: int, n_pairs_target: int,
                    margin_px: float = 1.0, gap_m: float = 1.5, road_clear_m: float = 1.0):
    """Non-overlapping buildings: rows of touching units first, then single buildings.

    Most buildings line the roads, aligned with them; the rest fill the blocks with arbitrary
    orientations, often echoing a neighbour's.
    """
    road_union = shapely.union_all([r["poly"] for r in roads]) if roads else Polygon()
    shapely.prepare(road_union)
    scene_m = size * res
    max_side = max(6.5, min(35.0, scene_m / 3.5))
    placed: list[Building] = []
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
            ang = tangent_angle(r["line"], d)
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
        if not fits(to_pixels(row_local, ang, cx, cy, res)):
            continue
        h = float(rng.choice([3.2, 3.6, 6.5]) + rng.uniform(0, 0.6))
        for parts, local in units:
            b = Building(parts=parts, local=local, angle=ang, cx=cx, cy=cy,
                         height=h + float(rng.uniform(-0.3, 0.3)))
            b.px = to_pixels(local, ang, cx, cy, res)
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
        px = to_pixels(local, ang, cx, cy, res)
        if not fits(px):
            continue
        storeys = int(rng.choice([1, 2, 3, 4], p=[0.68, 0.2, 0.08, 0.04]))
        if local.area > 400:
            storeys = max(storeys, int(rng.choice([1, 2, 3])))
        b = Building(parts=parts, local=local, angle=ang, cx=cx, cy=cy,
                     height=storeys * 3.0 + float(rng.uniform(0.3, 1.4)), px=px)
        placed.append(b)
        geoms.append(px)
    return placed
