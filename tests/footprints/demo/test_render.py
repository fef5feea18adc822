"""footprints/demo/render.py: the pieces of the painter that carry geometry (sun, shadows, noise)."""
from __future__ import annotations

import math

import numpy as np
import shapely

from footprints.demo.render import fractal_noise, shadow_vector, swept


def test_shadows_fall_away_from_the_sun():
    # sun in the south (azimuth 180 degrees): shadows point north, i.e. up the image (negative rows)
    v = shadow_vector(math.pi, math.radians(45), 0.5)
    assert abs(v[0]) < 1e-12 and v[1] < 0
    assert math.isclose(float(np.hypot(*v)), 2.0)  # 1 m at 45 degrees is 1 m of shadow, 2 px at 0.5 m/px


def test_swept_prism_covers_roof_and_its_shifted_copy():
    roof = shapely.box(0, 0, 4, 2)
    shadow = swept(roof, np.array([3.0, 1.0]))
    assert shadow.contains(roof) and shadow.contains(shapely.box(3, 1, 7, 3))
    assert shadow.area < 4 * 2 * 2 + 3 * 2 + 1 * 4 + 1e-9  # the hull of both, no more


def test_fractal_noise_is_seeded_and_bounded():
    a = fractal_noise(np.random.default_rng(1), (40, 60), 4, 3)
    b = fractal_noise(np.random.default_rng(1), (40, 60), 4, 3)
    assert a.shape == (40, 60) and a.dtype == np.float32
    assert np.array_equal(a, b) and np.abs(a).max() <= 2
