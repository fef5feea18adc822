"""The temporal demo: one scene seen on several dates, as SpaceNet 7's monthly mosaics.

Every date of a scene shares its layout (roads, trees, the place and shape of every building
that ever stands there); :func:`date_plan` says what each building is on a date, from a
generator of its own seeded by the scene seed, so the single-date demo's random draws (and
bytes) are untouched:

- most buildings stand from the first date; about a third are *built later*: the date before
  they stand they are a construction site (a foundation slab with its walls' outline);
- a few (about 5 %, at least one when a scene has 4 buildings or more) are *demolished*: from
  their demolition date on they are a cleared plot;
- with 3 dates or more, one date between the first and the last has a *cloud*: an opaque patch
  that hides the buildings it touches, in the image and in the labels (as SpaceNet 7's UDM masks
  remove them), grown to cover each of them whole. They are back on the next date.

A building's label ``Id`` is its index in the layout plus 1 on every date: ids are stable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
import shapely.affinity
from scipy import ndimage
from shapely.geometry import Point

from footprints import geojson
from footprints.demo import render
from footprints.geo import to_4326

__all__ = ["DatePlan", "NEW_FRACTION", "DEMOLISHED_FRACTION", "date_labels", "date_plan", "draw_works",
           "draw_cloud", "series_to_geojson", "describe"]

NEW_FRACTION = 0.3
DEMOLISHED_FRACTION = 0.05
SITE_RGB = np.array([158, 155, 148], np.float32)  # fresh concrete slab
WALL_RGB = np.array([112, 108, 102], np.float32)  # blockwork being laid along the outline
CLEARED_RGB = np.array([152, 124, 98], np.float32)  # bare, scraped soil
CLOUD_RGB = np.array([234, 236, 240], np.float32)


@dataclass(frozen=True)
class DatePlan:
    """What each building of the layout is on one date (boolean arrays, layout order), and the
    cloud (pixel frame) when the date has one."""

    date: int
    built: np.ndarray
    site: np.ndarray
    cleared: np.ndarray
    hidden: np.ndarray
    cloud: object = None

    @property
    def labelled(self) -> np.ndarray:
        """Layout indexes of the buildings in this date's labels: standing, not under the cloud."""
        return np.flatnonzero(self.built & ~self.hidden)


def date_labels(n: int, start: tuple[int, int] = (2018, 1)) -> list[str]:
    """``n`` monthly dates as SpaceNet 7 writes them: ``2018_01``, ``2018_02``, ..."""
    y, m = start
    out = []
    for k in range(n):
        mm = m - 1 + k
        out.append(f"{y + mm // 12:04d}_{mm % 12 + 1:02d}")
    return out


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float):
    return shapely.affinity.rotate(shapely.affinity.scale(Point(cx, cy).buffer(1.0, 32), rx, ry), angle)


def date_plan(seed: int, footprints, dates: int, date: int, size: int) -> DatePlan:
    """The plan of ``date`` (0-based) of a scene of ``dates`` dates; ``footprints`` are the
    layout's building polygons (pixel frame). The same arguments give the same plan."""
    if not 0 <= date < dates:
        raise ValueError(f"date {date} outside 0..{dates - 1}")
    n = len(footprints)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7153]))
    u = rng.random(n)
    born = np.where(u < NEW_FRACTION, rng.integers(1, max(dates, 2), n), 0) if dates > 1 else np.zeros(n, int)
    if dates > 1 and n >= 2 and not (born > 0).any():
        born[int(np.argmin(u))] = dates - 1  # at least one new building: SCOT's change term needs one
    gone = np.full(n, dates)
    old = np.flatnonzero(born == 0)
    k = max(1, round(DEMOLISHED_FRACTION * n)) if dates > 1 and n >= 4 else 0
    k = min(k, max(len(old) - 1, 0))
    if k:
        pick = rng.choice(old, size=k, replace=False)
        gone[pick] = rng.integers(1, dates, k)
    built = (born <= date) & (date < gone)
    site = born == date + 1
    cleared = date >= gone
    hidden = np.zeros(n, bool)
    cloud = None
    if dates >= 3:
        cloud_date = int(rng.integers(1, dates - 1))
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        rx, ry = rng.uniform(0.12, 0.2, 2) * size
        angle = float(rng.uniform(0, 180))
        if date == cloud_date:
            patch = _ellipse(float(cx), float(cy), float(rx), float(ry), angle)
            geoms = np.asarray(list(footprints), dtype=object)
            hidden = built & (shapely.intersects(geoms, patch) if n else np.zeros(0, bool))
            cloud = shapely.union_all([patch, *[shapely.buffer(g, 2.5) for g in geoms[hidden]]])
    return DatePlan(date, built, site, cleared, hidden, cloud)


def _paint(img, poly, colour, alpha: float, tex, blur: float = 0.6) -> None:
    win = render._window(poly.bounds, img.shape[:2])
    if win is None:
        return
    a = ndimage.gaussian_filter(render._coverage(poly, win, ss=2), blur) * alpha
    r0, r1, c0, c1 = win
    render._blend(img, win, a, colour * (1 + 0.05 * tex[r0:r1, c0:c1, None]))


def draw_works(img, buildings, plan: DatePlan, tex, res: float) -> None:
    """Construction sites (a slab and the outline of its walls) and cleared plots, where the
    plan has them. No random draws."""
    for b, site, cleared in zip(buildings, plan.site, plan.cleared):
        if site:
            _paint(img, b.px, SITE_RGB, 0.9, tex)
            wall = b.px.difference(b.px.buffer(-0.5 / res, join_style="mitre"))
            if not wall.is_empty:
                _paint(img, wall, WALL_RGB, 0.85, tex, blur=0.4)
        elif cleared:
            _paint(img, b.px.buffer(0.8 / res), CLEARED_RGB, 0.8, tex)


def draw_cloud(img, cloud, tex) -> None:
    """An opaque cloud: whole inside ``cloud``, with a soft rim just outside it."""
    if cloud is None or cloud.is_empty:
        return
    win = render._window(cloud.bounds, img.shape[:2], pad=8)
    if win is None:
        return
    cov = render._coverage(cloud, win, ss=2)
    a = np.maximum(cov, np.clip(ndimage.gaussian_filter(cov, 3.0) * 1.5, 0, 1))
    r0, r1, c0, c1 = win
    render._blend(img, win, a, CLOUD_RGB * (1 + 0.03 * tex[r0:r1, c0:c1, None]))


def series_to_geojson(ids, buildings, crs) -> dict:
    """RFC 7946 FeatureCollection of one date's labels: property ``Id`` (stable through the
    dates, as in SpaceNet 7's labels), ``building`` and ``area_m2``."""
    lonlat = to_4326(np.asarray(buildings, dtype=object), crs) if len(buildings) else []
    features = [geojson.feature(geo, {"Id": int(i), "building": "yes", "area_m2": float(poly.area)}, int(i))
                for i, poly, geo in zip(ids, buildings, lonlat)]
    return {"type": "FeatureCollection", "features": features}


def describe(plans) -> dict:
    """Counts of a scene's dates for the manifest: labelled, new, demolished, hidden."""
    out = []
    seen: set = set()
    for p in plans:
        lab = set(int(i) for i in p.labelled)
        out.append({"labelled": len(lab), "new": len(lab - seen) if p.date else 0,
                    "sites": int(p.site.sum()), "demolished": int(p.cleared.sum()),
                    "hidden_by_cloud": int(p.hidden.sum())})
        seen |= lab
    return {"dates": out}

