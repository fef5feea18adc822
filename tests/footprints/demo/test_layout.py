"""footprints/demo/layout.py: building placement and the pixel frame, without rendering."""
from __future__ import annotations

import math

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from footprints.demo.layout import MIN_BUILDING_AREA_M2, make_roads, place_buildings, to_pixels


def test_to_pixels_rotates_then_scales_by_resolution():
    square = shapely.box(-1.0, -1.0, 1.0, 1.0)  # metres
    px = to_pixels(square, math.pi / 2, 10.0, 20.0, 0.5)
    assert px.area == 16.0  # 2 m x 2 m at 0.5 m/px
    assert px.centroid.x == 10.0 and px.centroid.y == 20.0
    assert np.allclose(to_pixels(shapely.Point(1.0, 0.0), math.pi / 2, 0.0, 0.0, 1.0).coords[0], (0.0, 1.0))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([128, 256]), st.integers(1, 12))
def test_placed_buildings_never_overlap_and_stay_inside(seed, size, n):
    rng = np.random.default_rng(seed)
    roads = make_roads(rng, size, 0.5)
    placed = place_buildings(rng, size, 0.5, roads, n, n // 3)
    assert 1 <= len(placed) <= n
    road_union = shapely.union_all([r["poly"] for r in roads]) if roads else shapely.Polygon()
    for b in placed:
        assert b.px.is_valid and b.local.area >= MIN_BUILDING_AREA_M2
        minx, miny, maxx, maxy = b.px.bounds
        assert 0 < minx and 0 < miny and maxx < size and maxy < size
        assert not b.px.intersects(road_union)
    for i, a in enumerate(placed):
        for b in placed[i + 1:]:
            assert a.px.intersection(b.px).area < 1e-9  # touching rows share walls, nothing overlaps
