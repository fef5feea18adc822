"""footprints/masks.py: rasterizing footprints, boundaries and contacts; labels to tiles."""
import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from footprints.masks import (
    assign_to_tiles,
    boundary_mask,
    contact_mask,
    footprint_mask,
    labels_in_window,
    make_mask,
    mask_bands,
)
from footprints.tiling import tile_grid

T = Affine(0.5, 0, 1000, 0, -0.5, 2000)  # 0.5 m pixels


def test_footprint_pixel_centre_rule():
    # a 2 m x 2 m square aligned to pixel edges covers exactly 4 x 4 pixels
    sq = shapely.box(1001, 1995, 1003, 1997)
    m = footprint_mask([sq], (20, 20), T)
    assert m.sum() == 16
    # shifting by less than half a pixel does not change the count (centres decide)
    m2 = footprint_mask([shapely.box(1001.2, 1995.2, 1003.2, 1997.2)], (20, 20), T)
    assert m2.sum() == 16


def test_three_class_contact_separates_touching_buildings():
    a = shapely.box(1001, 1990, 1004, 1996)
    b = shapely.box(1004, 1990, 1007, 1996)  # shares a wall with a
    far = shapely.box(1001, 1980, 1003, 1982)
    mask = make_mask([a, b, far], (40, 20), T, "3class", boundary_width=1, contact_distance=2.0)
    fp, bd, ct = (mask > 0)
    assert fp.sum() == footprint_mask([a, b, far], (40, 20), T).sum()
    assert (bd <= fp).all(), "boundary lies inside buildings"
    # the contact band straddles the shared wall and is absent around the isolated building
    wall_col = int((1004 - 1000) / 0.5)
    assert ct[:, wall_col - 1].any() and ct[:, wall_col].any()
    rows_far = slice(int((2000 - 1982) / 0.5), int((2000 - 1980) / 0.5))
    assert not ct[rows_far].any()
    # removing boundary + contact leaves two separate interiors for a and b
    interior = fp & ~bd & ~ct
    _, n = ndimage.label(interior[: int((2000 - 1985) / 0.5)])
    assert n == 2


def test_boundary_width():
    sq = shapely.box(1001, 1990, 1006, 1995)  # 10 x 10 px
    b1 = boundary_mask([sq], (30, 30), T, 1.0)
    b2 = boundary_mask([sq], (30, 30), T, 2.0)
    assert b1.sum() == 100 - 64 and b2.sum() == 100 - 36


def test_contact_distance_is_in_metres():
    a = shapely.box(1001, 1990, 1004, 1996)
    b = shapely.box(1005.5, 1990, 1008, 1996)  # 1.5 m gap
    assert contact_mask([a, b], (40, 30), T, 1.0).sum() == 0
    assert contact_mask([a, b], (40, 30), T, 2.0).sum() > 0


def test_make_mask_bands_and_unknown_kind():
    sq = shapely.box(1001, 1990, 1006, 1995)
    assert make_mask([sq], (30, 30), T).shape == (1, 30, 30)
    m = make_mask([sq], (30, 30), T, "3class")
    assert m.shape == (3, 30, 30) and set(np.unique(m)) <= {0, 255}
    assert mask_bands("footprint") == ["footprint"] and mask_bands("3class") == ["footprint", "boundary", "contact"]
    with pytest.raises(ValueError, match="unknown mask kind"):
        make_mask([sq], (30, 30), T, "4class")


def test_labels_in_window_counts_clipped_pieces():
    window = shapely.box(0, 0, 10, 10)
    # a C open to the right whose back lies outside the window: clipping leaves two pieces
    c = shapely.Polygon([(-3, 2), (5, 2), (5, 3), (-1, 3), (-1, 7), (5, 7), (5, 8), (-3, 8)])
    touching_edge = shapely.box(10, 0, 12, 5)  # shares only a line with the window
    assert labels_in_window([shapely.box(1, 1, 2, 2), shapely.box(20, 20, 21, 21), touching_edge, c], window) == 3


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([(64, 0), (64, 16), (100, 30)]), st.floats(0, 5))
def test_assign_to_tiles_matches_brute_force(seed, grid, margin):
    rng = np.random.default_rng(seed)
    specs = tile_grid(300, 250, *grid)
    geoms = [shapely.box(x, y, x + w, y + h) for x, y, w, h in
             zip(rng.uniform(1000, 1150, 30), rng.uniform(1875, 2000, 30), rng.uniform(0.2, 20, 30), rng.uniform(0.2, 20, 30))]
    got = assign_to_tiles(np.array(geoms, dtype=object), T, [s.tile_id for s in specs],
                          [s.col_off for s in specs], [s.row_off for s in specs], specs[0].width, specs[0].height, margin)
    for s in specs:
        grown = shapely.box(*(T @ (s.col_off - margin, s.row_off + s.height + margin)),
                            *(T @ (s.col_off + s.width + margin, s.row_off - margin)))
        expect = [g for g in geoms if shapely.intersects(shapely.envelope(g), grown)]
        assert sorted(map(id, got.get(s.tile_id, []))) == sorted(map(id, expect)), s.tile_id
