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

Modules: :mod:`footprints.demo.layout` (shapes, roads, placement), :mod:`footprints.demo.render`
(painting), :mod:`footprints.demo.series` (the temporal demo: one scene on several dates); here the scene itself (:func:`generate_scene`), its names, seeds and places, and the
writers (GeoTIFF, RFC 7946 GeoJSON).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from scipy import ndimage

from footprints import geojson
from footprints.atomic import atomic_path
from footprints.demo import layout, render, series, spectral, typed
from footprints.demo.layout import MIN_BUILDING_AREA_M2
from footprints.geo import to_4326
from footprints.names import sn7_image_name

GENERATOR_VERSION = 1
DEFAULT_CRS = "EPSG:32737"  # WGS 84 / UTM zone 37S: Dar es Salaam
DEFAULT_ORIGIN = (525000.0, 9252000.0)  # upper-left corner (x, y) in metres, north of the city centre

__all__ = ["DEFAULT_CRS", "DEFAULT_ORIGIN", "GENERATOR_VERSION", "MIN_BUILDING_AREA_M2", "buildings_to_geojson",
           "demo_scene_names", "demo_series_names", "generate_scene", "generate_series", "generate_typed_scene", "scene_origin", "scene_seed", "touching_pairs", "write_geojson",
           "write_geotiff", "write_scene"]


# --------------------------------------------------------------------------- names, places


def demo_scene_names(n: int) -> list[str]:
    """``demo_00 .. demo_{n-1}``."""
    if n < 1:
        raise ValueError(f"demo scene count must be >= 1, got {n}")
    return [f"demo_{i:02d}" for i in range(n)]


def demo_series_names(n: int, dates: int) -> list[tuple[str, str, str]]:
    """``(aoi, date, image id)`` of every scene and date of a temporal demo: the AOIs are
    ``demo_00 ..``, the dates ``2018_01 ..`` (monthly), the image ids SpaceNet 7's
    ``global_monthly_<date>_mosaic_<aoi>`` (so that the default ``[data] series_pattern`` groups them)."""
    return [(aoi, d, sn7_image_name(aoi, d)) for aoi in demo_scene_names(n) for d in series.date_labels(dates)]


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
    image, transform, crs, labels, _ = _scene(seed, size, resolution, crs, origin, n_buildings)
    return image, transform, crs, labels


def generate_series(seed: int, dates: int, size: int = 1024, resolution: float = 0.5, crs: str = DEFAULT_CRS,
                    origin: tuple[float, float] | None = None, n_buildings: int | None = None) -> list[dict]:
    """The scene of :func:`generate_scene` on ``dates`` dates (:mod:`footprints.demo.series`:
    buildings added and demolished between dates, a cloud on one date). One dict per date:
    ``image``, ``transform``, ``crs``, ``ids`` (stable label ids), ``buildings`` (their
    polygons) and ``plan`` (:class:`~footprints.demo.series.DatePlan`)."""
    if dates < 1:
        raise ValueError(f"demo dates must be >= 1, got {dates}")
    out = []
    for d in range(dates):
        image, transform, crs_, labels, plan = _scene(seed, size, resolution, crs, origin, n_buildings, dates, d)
        keep = plan.labelled
        out.append(dict(image=image, transform=transform, crs=crs_, ids=[int(i) + 1 for i in keep],
                        buildings=[labels[i] for i in keep], plan=plan))
    return out


def generate_typed_scene(seed: int, size: int = 1024, resolution: float = 0.5, crs: str = DEFAULT_CRS,
                         origin: tuple[float, float] | None = None, n_buildings: int | None = None):
    """The scene of :func:`generate_scene` (the same layout) whose buildings have a condition
    (:mod:`footprints.demo.typed`: Complete as drawn there, Incomplete, Foundation). Returns
    ``(image, transform, crs, buildings, conditions)``, ``conditions[i]`` the ``condition``
    written in building i's label (None for the few without one: the default class)."""
    image, transform, crs, labels, _ = _scene(seed, size, resolution, crs, origin, n_buildings, typed_=True)
    return image, transform, crs, labels, typed.label_conditions(seed, typed.conditions(seed, len(labels)))


def _scene(seed, size, resolution, crs, origin, n_buildings, dates: int = 0, date: int = 0, typed_: bool = False):
    """The scene; with ``dates`` > 0, as it is on ``date`` (its :class:`series.DatePlan` is
    returned too; the labels are then every building of the layout, in layout order); with
    ``typed_``, its buildings drawn as their conditions (:mod:`footprints.demo.typed`) say."""
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
    shadow_vec = render.shadow_vector(sun_az, sun_el, resolution)

    roads = layout.make_roads(rng, size, resolution)
    buildings = layout.place_buildings(rng, size, resolution, roads, n_buildings, n_pairs)

    img = render.ground(rng, shape)
    ground = ndimage.uniform_filter(img, size=(9, 9, 1))
    tex = render.fractal_noise(rng, shape, max(8, size // 6), 3, 0.6)  # fine texture shared by roofs, roads, trees
    render.draw_patches(img, rng, size, resolution, int(rng.integers(3, 9) * max(area_scale, 0.2)),
                        int(rng.integers(6, 16) * max(area_scale, 0.2)), tex)
    render.draw_roads(img, rng, roads, tex, resolution)

    # roofs: tone, style, pitch
    names = list(render.ROOFS)
    weights = np.array([render.ROOFS[k][0] for k in names])
    for b in buildings:
        name = str(rng.choice(names, p=weights / weights.sum()))
        gx = int(np.clip(b.cx, 0, size - 1))
        gy = int(np.clip(b.cy, 0, size - 1))
        style = str(rng.choice(["gable", "hip", "flat"], p=[0.45, 0.3, 0.25]))
        if name == "concrete":
            style = "flat"
        b.roof = dict(name=name, rgb=render.roof_colour(rng, name, ground[gy, gx]), style=style,
                      pitch=float(rng.uniform(0.06, 0.2)), grad=float(rng.uniform(-0.08, 0.08)),
                      ridge=float(rng.uniform(-0.08, 0.12)),
                      texture=float(rng.uniform(0.02, 0.06)))

    plan = None
    standing = buildings
    if dates:  # a date of a series: its own generator decides, the scene's draws stay as they are
        plan = series.date_plan(seed, [b.px for b in buildings], dates, date, size)
        standing = [b for b, on in zip(buildings, plan.built) if on]
        series.draw_works(img, buildings, plan, tex, resolution)
    conds = dict(zip(map(id, buildings), typed.conditions(seed, len(buildings)))) if typed_ else {}
    casting = [b for b in standing if typed.casts_shadow(conds.get(id(b), "Complete"))]
    render.apply_shadow(img, [render.swept(b.px, shadow_vec * b.height) for b in casting], strength=0.62, blur=0.6)
    render.draw_cars(img, rng, roads, resolution, int(rng.integers(5, 30) * area_scale), shadow_vec)
    trng = typed.draw_rng(seed) if typed_ else None
    for b in standing:
        if typed_:
            typed.draw(img, b, conds[id(b)], resolution, sun_dir, tex, trng)
        else:
            render.draw_building(img, b, resolution, sun_dir, tex)
    trees = render.place_trees(rng, size, resolution, buildings, int(rng.integers(160, 300) * area_scale),
                               int(rng.integers(8, 20) * area_scale))
    render.draw_trees(img, rng, trees, tex, sun_dir, shadow_vec)
    if plan is not None:
        series.draw_cloud(img, plan.cloud, tex)

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
    return image, transform, crs, labels, plan


# --------------------------------------------------------------------------- writers


def buildings_to_geojson(buildings, crs, conditions=None) -> dict:
    """RFC 7946 FeatureCollection (EPSG:4326, lon/lat, CCW exteriors, full precision, no ``crs``).
    ``conditions`` (the typed demo): each building's ``condition`` property, None for none."""
    lonlat = to_4326(np.asarray(buildings, dtype=object), crs) if len(buildings) else []
    conds = conditions if conditions is not None else [None] * len(buildings)
    features = [geojson.feature(geo, {"id": i, "building": "yes", "area_m2": float(poly.area),
                                      **({typed.FIELD: c} if c is not None else {})}, i)
                for i, (poly, geo, c) in enumerate(zip(buildings, lonlat, conds), start=1)]
    return {"type": "FeatureCollection", "features": features}


def write_geotiff(image: np.ndarray, transform: Affine, crs, path) -> None:
    """Tiled, DEFLATE-compressed GeoTIFF, written to a temp name then renamed: a uint8 (3, H, W)
    RGB scene, or a uint16 (8, H, W) WorldView-2-like one (:mod:`footprints.demo.spectral`, its
    bands named)."""
    path = Path(path)
    rgb = image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] == 3
    mul = image.dtype == np.uint16 and image.ndim == 3 and image.shape[0] == len(spectral.WORLDVIEW_BANDS)
    if not (rgb or mul):
        raise ValueError(f"{path}: expected a uint8 (3, H, W) or uint16 (8, H, W) image, got {image.dtype} {image.shape}")
    profile = dict(driver="GTiff", width=image.shape[2], height=image.shape[1], count=image.shape[0],
                   dtype=image.dtype.name, crs=crs, transform=transform, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", predictor=2, photometric="RGB" if rgb else "MINISBLACK", interleave="pixel")
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(image)
        if mul:
            dst.descriptions = spectral.WORLDVIEW_BANDS


def write_geojson(fc: dict, path) -> None:
    """A FeatureCollection dict (:func:`buildings_to_geojson`), written atomically."""
    geojson.write(path, fc["features"])


def write_scene(image, transform, crs, buildings, image_path, label_path, conditions=None) -> None:
    """The scene's GeoTIFF and its RFC 7946 GeoJSON labels (with ``conditions``: the typed
    demo's ``condition`` property), each written atomically."""
    write_geotiff(image, transform, crs, image_path)
    write_geojson(buildings_to_geojson(buildings, crs, conditions), label_path)


def touching_pairs(buildings, tol: float = 1e-6) -> list[tuple[int, int]]:
    """Index pairs of buildings that touch (share a wall) without overlapping."""
    tree = shapely.STRtree(buildings)
    out = []
    for i, j in zip(*tree.query(buildings, predicate="dwithin", distance=tol)):
        if i < j:
            out.append((int(i), int(j)))
    return out
