import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from scipy import ndimage

from footprints.errors import InputError
from footprints.geo import pixel_area, pixel_to_geo
from footprints.masks import footprint_mask, make_mask
from footprints.polygonize import (
    as_probability,
    building_labels,
    check_probabilities,
    polygonize_probabilities,
    prediction_rows,
    read_window,
    tile_polygons,
)

# the SpaceNet 4 fixture's georeferencing: EPSG:32616, 0.5 m pixels
UTM = Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)


def rect_mask(h, w, rects, value=255, dtype=np.uint8):
    m = np.zeros((h, w), dtype)
    for x0, y0, x1, y1 in rects:
        m[y0:y1, x0:x1] = value
    return m


def same_shape(a, b) -> bool:
    return shapely.symmetric_difference(a, b).area == 0


# ---------------------------------------------------------------- coordinates, score, area


def test_rectangle_in_pixel_and_geo_coordinates():
    m = rect_mask(20, 30, [(5, 4, 15, 10)])
    [(pix, geo, score)] = polygonize_probabilities(m[None], UTM)
    assert same_shape(pix, shapely.box(5, 4, 15, 10))
    x0, y0 = UTM * (5, 4)
    x1, y1 = UTM * (15, 10)
    assert shapely.symmetric_difference(geo, shapely.box(x0, y1, x1, y0)).area < 1e-9
    assert geo.area == pytest.approx(60 * 0.25)
    assert score == pytest.approx(1.0)


def test_window_offset_gives_image_pixel_coordinates():
    m = rect_mask(40, 50, [(22, 13, 30, 25)])
    whole = polygonize_probabilities(m[None], UTM)
    win = polygonize_probabilities(m[None, 10:40, 20:50], UTM, col_off=20, row_off=10)
    assert len(whole) == len(win) == 1
    assert same_shape(whole[0][0], win[0][0])
    assert shapely.symmetric_difference(whole[0][1], win[0][1]).area < 1e-6


def test_score_is_mean_footprint_probability_and_uint8_matches_float():
    p = np.zeros((16, 16), np.float32)
    p[2:6, 2:10] = 0.6
    p[2:6, 10:14] = 1.0
    [(_, _, score)] = polygonize_probabilities(p[None], UTM)
    assert score == pytest.approx((32 * 0.6 + 16 * 1.0) / 48, abs=1e-6)
    u = np.round(p * 255).astype(np.uint8)
    [(pix_u, _, score_u)] = polygonize_probabilities(u[None], UTM)
    assert score_u == pytest.approx(score, abs=1 / 255)
    assert same_shape(pix_u, shapely.box(2, 2, 14, 6))


def test_threshold_is_strict_and_configurable():
    p = np.zeros((1, 10, 10), np.float32)
    p[0, 1:4, 1:4] = 0.5
    p[0, 6:9, 6:9] = 0.7
    assert len(polygonize_probabilities(p, UTM, threshold=0.5)) == 1
    assert len(polygonize_probabilities(p, UTM, threshold=0.4)) == 2
    assert polygonize_probabilities(p, UTM, threshold=0.8) == []


def test_min_area_is_in_square_metres_of_the_image_crs():
    m = rect_mask(20, 20, [(1, 1, 3, 3), (10, 10, 16, 16)])  # 4 px and 36 px
    half_metre = UTM  # 0.25 m² pixels: 1 m² and 9 m²
    assert len(polygonize_probabilities(m[None], half_metre, min_area_m2=2.0)) == 1
    thirty_m = Affine(30, 0, 500000, 0, -30, 4600000)  # 900 m² pixels
    assert len(polygonize_probabilities(m[None], thirty_m, min_area_m2=2.0)) == 2
    assert len(polygonize_probabilities(m[None], thirty_m, min_area_m2=3601.0)) == 1
    rotated = Affine(0.3, 0.4, 0, 0.4, -0.3, 0)  # |a·e − b·d| = 0.25
    assert pixel_area(rotated) == pytest.approx(0.25)
    assert len(polygonize_probabilities(m[None], rotated, min_area_m2=2.0)) == 1


def test_edge_fragments_survive_the_min_area_when_asked():
    m = rect_mask(20, 20, [(0, 5, 2, 7), (8, 8, 10, 10)])  # both 4 px; the first touches the edge
    assert polygonize_probabilities(m[None], UTM, min_area_m2=2.0) == []
    kept = polygonize_probabilities(m[None], UTM, min_area_m2=2.0, keep_edge_fragments=True)
    assert len(kept) == 1 and kept[0][0].bounds[0] == 0


def staircase(n=12):
    m = np.zeros((n + 2, n + 2), np.uint8)
    for i in range(n):
        m[1 + i, 1:2 + i] = 255
    return m


def test_simplify_tolerance_is_in_pixels_whatever_the_pixel_size():
    m = staircase()
    raw = polygonize_probabilities(m[None], UTM)[0][0]
    for t in (UTM, Affine(30, 0, 500000, 0, -30, 4600000)):
        simple = polygonize_probabilities(m[None], t, simplify_px=1.0)[0][0]
        assert len(simple.exterior.coords) < len(raw.exterior.coords)
        assert simple.is_valid
        # never moves the outline by more than the tolerance (in pixels)
        assert raw.hausdorff_distance(simple) <= 1.0 + 1e-9
    a = polygonize_probabilities(m[None], UTM, simplify_px=1.0)[0][0]
    b = polygonize_probabilities(m[None], Affine(30, 0, 500000, 0, -30, 4600000), simplify_px=1.0)[0][0]
    assert same_shape(a, b)


def test_holes_are_kept():
    m = rect_mask(12, 12, [(1, 1, 11, 11)])
    m[4:8, 4:8] = 0
    [(pix, _, _)] = polygonize_probabilities(m[None], UTM)
    assert len(pix.interiors) == 1 and pix.area == 100 - 16


# ---------------------------------------------------------------- three classes


def row_houses(n, w, h, gap_after=()):
    """n buildings side by side (sharing walls), as polygons in the UTM CRS."""
    polys, x = [], 2
    for i in range(n):
        polys.append(shapely.box(*(UTM * (x, 2)), *(UTM * (x + w, 2 + h))))
        x += w + (3 if i in gap_after else 0)
    return polys


def test_three_class_splits_touching_buildings_back_to_full_extent():
    houses = row_houses(3, 8, 10)
    shape = (14, 2 + 3 * 8 + 2)
    mask = make_mask(houses, shape, UTM, kind="3class", boundary_width=1.0, contact_distance=2.0)
    merged = polygonize_probabilities(mask[:1], UTM)
    assert len(merged) == 1  # footprint alone: one blob
    split = polygonize_probabilities(mask, UTM, three_class=True)
    assert len(split) == 3
    for h in houses:
        truth = footprint_mask([h], shape, UTM)
        best = max(split, key=lambda r: r[1].intersection(h).area)
        assert best[0].area == truth.sum()  # the whole building, boundary band included
        assert best[1].intersection(h).area / best[1].union(h).area == pytest.approx(1.0)


def test_three_class_keeps_buildings_without_a_seed():
    p = np.zeros((3, 10, 10), np.uint8)
    p[0, 2:4, 2:4] = 255
    p[1, 2:4, 2:4] = 255  # all boundary: no seed
    labels, n = building_labels(p, three_class=True)
    assert n == 1 and (labels > 0).sum() == 4


@pytest.mark.parametrize("neck_px", [1, 2])
def test_three_class_thin_neck_does_not_split_one_building(neck_px):
    # two 8x8 px rooms joined by a neck narrower than twice the boundary band: the neck is all
    # boundary, so the seeds fall apart, but no contact separates them: one building
    a = shapely.box(*(UTM * (2, 2)), *(UTM * (10, 10)))
    b = shapely.box(*(UTM * (16, 2)), *(UTM * (24, 10)))
    neck = shapely.box(*(UTM * (10, 5)), *(UTM * (16, 5 + neck_px)))
    building = shapely.union_all([a, b, neck])
    mask = make_mask([building], (12, 26), UTM, kind="3class", boundary_width=1.0, contact_distance=2.0)
    seeds = (mask[0] > 0) & (mask[1] == 0) & (mask[2] == 0)
    assert ndimage.label(seeds)[1] == 2  # the case: two seeds in one footprint component
    labels, n = building_labels(mask, three_class=True)
    assert n == 1 and (labels > 0).sum() == (mask[0] > 0).sum()
    (out,) = polygonize_probabilities(mask, UTM, three_class=True)
    assert out[1].symmetric_difference(building).area == pytest.approx(0.0, abs=1e-6)


def test_three_class_contact_still_splits_a_shared_wall():
    # the same rooms side by side, touching: contact pixels separate them, so two buildings
    rooms = row_houses(2, 8, 8)
    mask = make_mask(rooms, (12, 20), UTM, kind="3class", boundary_width=1.0, contact_distance=2.0)
    assert ndimage.label(mask[0] > 0)[1] == 1
    assert building_labels(mask, three_class=True)[1] == 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(8, 14), st.integers(8, 14)), min_size=1, max_size=5), st.integers(0, 3))
def test_three_class_recovers_every_row_house(sizes, gap_index):
    # houses of 4 to 7 m at 0.5 m pixels; the contact band reaches 1 m (2 px) into each
    polys, x = [], 1
    for i, (w, h) in enumerate(sizes):
        polys.append(shapely.box(*(UTM * (x, 1)), *(UTM * (x + w, 1 + h))))
        x += w + (2 if i == gap_index else 0)
    shape = (17, x + 1)
    mask = make_mask(polys, shape, UTM, kind="3class", boundary_width=1.0, contact_distance=2.0)
    out = polygonize_probabilities(mask, UTM, three_class=True)
    assert len(out) == len(polys)
    # every footprint pixel goes to exactly one building (grown back over the boundary band)
    assert sum(p.area for p, _, _ in out) == (mask[0] > 0).sum()
    assert shapely.union_all([p for p, _, _ in out]).area == (mask[0] > 0).sum()
    for poly in polys:
        best = max(out, key=lambda r: r[1].intersection(poly).area)
        # pixels equidistant from two seeds (a corner on the shared wall) may go either way
        assert best[1].intersection(poly).area / best[1].union(poly).area >= 0.8


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(1, 3), st.integers(1, 3)),
                min_size=0, max_size=12, unique_by=lambda t: (t[0], t[1])))
def test_separate_rectangles_each_come_out_once(cells):
    # rectangles on a 4-px grid, never touching: one polygon each, exactly its pixels
    m = np.zeros((40, 40), np.uint8)
    want = []
    for cx, cy, w, h in cells:
        x0, y0 = cx * 4, cy * 4
        m[y0:y0 + h, x0:x0 + w] = 255
        want.append(shapely.box(x0, y0, x0 + w, y0 + h))
    out = polygonize_probabilities(m[None], UTM)
    assert len(out) == len(want)
    got = sorted((p.bounds for p, _, _ in out))
    assert got == sorted(w.bounds for w in want)
    assert all(p.is_valid for p, _, _ in out)


# ---------------------------------------------------------------- per tile


def test_read_window_grows_by_the_halo_within_the_image():
    t = {"col_off": 24, "row_off": 0, "width": 32, "height": 32}
    assert read_window(t, 0, 70, 60) == (24, 0, 32, 32)
    assert read_window(t, 8, 70, 60) == (16, 0, 48, 40)
    assert read_window(t, 100, 70, 60) == (0, 0, 70, 60)


def test_tile_polygons_keep_what_reaches_into_the_core_whole():
    m = rect_mask(40, 60, [(2, 2, 8, 8),      # left of the core: another tile's
                           (14, 10, 26, 20),  # crosses the core's left side: kept whole
                           (30, 30, 31, 31),  # a speck inside the core: below the minimum area
                           (40, 5, 60, 9)])   # reaches the read window's edge: kept, may go on
    tile = {"col_off": 10, "row_off": 0, "width": 40, "height": 40,
            "core_col_off": 20, "core_row_off": 0, "core_width": 25, "core_height": 40}
    win = read_window(tile, 4, 60, 40)  # (6, 0, 48, 40)
    c0, r0, w, h = win
    out = tile_polygons(m[None, r0:r0 + h, c0:c0 + w], UTM, tile, win, min_area_m2=2.0)
    got = sorted(p.bounds for p, _, _ in out)
    assert got == [(14, 10, 26, 20), (40, 5, 54, 9)]


# ---------------------------------------------------------------- bad input


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="bands, rows, cols"):
        polygonize_probabilities(np.zeros((1, 1, 4, 4), np.uint8), UTM)
    with pytest.raises(ValueError, match="uint8"):
        as_probability(np.zeros((1, 4, 4), np.int16))
    with pytest.raises(ValueError, match="3 bands"):
        polygonize_probabilities(np.zeros((1, 4, 4), np.uint8), UTM, three_class=True)
    with pytest.raises(ValueError, match="6 coefficients"):
        pixel_area([1, 2])


# ---------------------------------------------------------------- rows


def test_prediction_rows_are_copy_ready():
    m = rect_mask(10, 10, [(1, 1, 5, 4)])
    polys = polygonize_probabilities(m[None], UTM)
    [row] = prediction_rows("r", "img", "t1", 32616, polys, UTM)
    run, image, tile, score, area, srid, pix, geo = row
    assert (run, image, tile, srid) == ("r", "img", "t1", 32616)
    assert float(area) == pytest.approx(12 * 0.25) and float(score) == pytest.approx(1.0)
    assert same_shape(shapely.from_wkb(pix), shapely.box(1, 1, 5, 4))
    g = shapely.from_wkb(geo)
    assert shapely.get_srid(g) == 32616
    assert shapely.symmetric_difference(g, pixel_to_geo(shapely.box(1, 1, 5, 4), UTM)).area < 1e-6


# ---------------------------------------------------------------- probabilities against the tile index


def test_check_probabilities_names_the_file(tmp_path):
    path = tmp_path / "prob.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20, height=10, count=1, dtype="uint8",
                       crs=CRS.from_epsg(32616), transform=UTM) as dst:
        dst.write(np.zeros((1, 10, 20), np.uint8))
    with rasterio.open(path) as src:
        assert check_probabilities(src, {"width": 20, "height": 10}, "index.json", False) == [1]
        with pytest.raises(InputError, match=r"prob.tif: probabilities are 20x10 px .* index.json describes a 20x12"):
            check_probabilities(src, {"width": 20, "height": 12}, "index.json", False)
        with pytest.raises(InputError, match=r"prob.tif: .*3 probability bands.*the file has 1"):
            check_probabilities(src, {"width": 20, "height": 10}, "index.json", True)
