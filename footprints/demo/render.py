"""Painting a demo scene: ground, texture noise, roads, pads, shadows, roofs, cars and trees.

Images are float32 ``(H, W, 3)`` arrays in the pixel frame, modified in place; every random
draw comes from the caller's generator, in a fixed order, so a seed fixes the bytes.
"""
from __future__ import annotations

import math

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import LineString, Point, Polygon, box

from footprints.demo.layout import Building, tangent_angle, to_pixels

ROOFS = {
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


def fractal_noise(rng, shape, base_cells: int, octaves: int, persistence: float = 0.55) -> np.ndarray:
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


# --------------------------------------------------------------------------- rendering


def ground(rng, shape) -> np.ndarray:
    """Soil, dry grass and green grass mixed by fractal noise, with fine texture."""
    h, w = shape
    big = max(h, w)
    soil = np.array([rng.uniform(170, 195), rng.uniform(138, 155), rng.uniform(105, 120)], np.float32)
    dark_soil = np.array([128, 104, 84], np.float32) * rng.uniform(0.9, 1.1)
    dry = np.array([rng.uniform(150, 172), rng.uniform(145, 160), rng.uniform(98, 112)], np.float32)
    grass = np.array([rng.uniform(88, 112), rng.uniform(112, 132), rng.uniform(62, 78)], np.float32)
    f_veg = fractal_noise(rng, shape, max(2, big // 160), 5)
    f_dry = fractal_noise(rng, shape, max(2, big // 90), 4)
    f_dark = fractal_noise(rng, shape, max(2, big // 60), 4)
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
    fine = fractal_noise(rng, shape, max(4, big // 4), 3, 0.7)
    speck = rng.standard_normal(shape).astype(np.float32)
    img *= (1.0 + 0.07 * fine + 0.035 * speck)[..., None]
    return img.astype(np.float32)


def draw_roads(img, rng, roads, tex, res):
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


def draw_patches(img, rng, size, res, n_paths, n_pads, tex):
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


def shadow_vector(sun_az: float, sun_el: float, res: float) -> np.ndarray:
    """Pixel offset of the shadow of a 1 m tall point (away from the sun)."""
    # azimuth clockwise from north; pixel frame x = east, y = south
    to_sun = np.array([math.sin(sun_az), -math.cos(sun_az)])
    return -to_sun / math.tan(sun_el) / res


def swept(poly: Polygon, d: np.ndarray) -> Polygon:
    """``poly`` extruded along the offset ``d``: the shadow of a prism on flat ground."""
    moved = shapely.affinity.translate(poly, d[0], d[1])
    c = np.asarray(poly.exterior.coords)
    quads = [Polygon([c[i], c[i + 1], c[i + 1] + d, c[i] + d]) for i in range(len(c) - 1)]
    quads = [q for q in quads if q.area > 1e-9]
    return shapely.union_all([poly, moved] + quads)


def apply_shadow(img, polys, strength: float, blur: float, tint=(0.50, 0.53, 0.62)) -> None:
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


def roof_colour(rng, name: str, ground_rgb) -> np.ndarray:
    if name == "ground":
        return np.asarray(ground_rgb, np.float32) * rng.uniform(0.9, 1.12) + rng.normal(0, 4, 3)
    base = np.asarray(ROOFS[name][1], np.float32)
    return base * rng.uniform(0.88, 1.1) + rng.normal(0, 5, 3)


def draw_building(img, b: Building, res: float, sun_dir: np.ndarray, tex: np.ndarray) -> None:
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


def draw_cars(img, rng, roads, res, n, shadow_vec) -> None:
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
        ang = tangent_angle(r["line"], d)
        off = (rng.choice([-1, 1]) * r["width"] / 4)
        cx, cy = p.x - math.sin(ang) * off, p.y + math.cos(ang) * off
        local = box(-2.2, -0.9, 2.2, 0.9)
        poly = to_pixels(local, ang, cx, cy, res)
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


def place_trees(rng, size, res, buildings, n_trees, n_overhang):
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


def draw_trees(img, rng, trees, tex, sun_dir, shadow_vec) -> None:
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
