import json
from dataclasses import asdict

import luigi
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS

from tasks.masks import footprint_mask, make_mask
from tasks.polygonize import (Polygonize, as_probability, building_labels, pixel_area, pixel_to_geo,
                              polygonize_probabilities, prediction_rows, read_window, run_key, tile_polygons)
from tasks.tiling import tile_grid

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


# ---------------------------------------------------------------- run key and rows


def test_run_key_names_the_significant_parameters(luigi_config):
    base = run_key()
    assert base == run_key()
    assert base.startswith("unet-") or base.startswith("oracle-")
    luigi_config("polygonize", "threshold", "0.6")
    k1 = run_key()
    assert k1 != base
    luigi_config("tiling", "overlap", "0")
    k2 = run_key()
    assert k2 != k1 and "_ov0-" in k2
    luigi_config("model", "name", "oracle")
    assert run_key().startswith("oracle-")
    luigi_config("tiling", "workers", "7")  # insignificant: same key
    assert run_key().startswith("oracle-") and run_key() == run_key()


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


# ---------------------------------------------------------------- the Luigi task


class _File(luigi.ExternalTask):
    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)


class _Polygonize(Polygonize):
    prob = luigi.Parameter()
    index = luigi.Parameter()

    def requires(self):
        return {"prob": _File(path=self.prob), "tiles": _File(path=self.index)}


def write_inputs(tmp_path, prob, tile_size, overlap):
    bands, h, w = prob.shape
    path = tmp_path / "prob.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=bands, dtype="uint8",
                       crs=CRS.from_epsg(32616), transform=UTM) as dst:
        dst.write(prob)
    tiles = [asdict(s) for s in tile_grid(w, h, tile_size, overlap)]
    index = {"width": w, "height": h, "transform": list(UTM)[:6], "crs_wkt": CRS.from_epsg(32616).to_wkt(),
             "tiles": tiles}
    ipath = tmp_path / "index.json"
    ipath.write_text(json.dumps(index))
    return path, ipath, tiles


def test_polygonize_task_stores_tile_polygons_with_marker(pg, tmp_path, luigi_config):
    luigi_config("masks", "kind", "footprint")
    m = rect_mask(60, 70, [(3, 3, 20, 12), (28, 20, 45, 40), (50, 50, 52, 52)])
    prob_path, index_path, tiles = write_inputs(tmp_path, m[None], 32, 8)
    task = _Polygonize(image="img1", prob=str(prob_path), index=str(index_path))
    assert not task.complete()
    assert luigi.build([task], local_scheduler=True)
    assert task.complete()
    with pg.cursor() as cur:
        cur.execute("SELECT run, tile_id, score, area_m2, srid, ST_AsBinary(geom_pix), ST_AsBinary(geom), "
                    "ST_SRID(geom_pix) FROM predictions WHERE image = 'img1'")
        rows = cur.fetchall()
    assert rows and {r[0] for r in rows} == {run_key()}
    ids = {t["tile_id"] for t in tiles}
    assert {r[1] for r in rows} <= ids
    for _, tile_id, score, area, srid, pix, geo, srid_pix in rows:
        pix, geo = shapely.from_wkb(bytes(pix)), shapely.from_wkb(bytes(geo))
        assert srid == 32616 and srid_pix == 0 and score == pytest.approx(1.0)
        assert area == pytest.approx(pix.area * 0.25)
        assert shapely.symmetric_difference(geo, pixel_to_geo(pix, UTM)).area < 1e-6
        t = next(t for t in tiles if t["tile_id"] == tile_id)
        c0, r0, ww, hh = read_window(t, 8, 70, 60)  # [polygonize] halo_px = 8
        assert shapely.box(c0, r0, c0 + ww, r0 + hh).covers(pix)  # seen through the tile's read window
        core = shapely.box(t["core_col_off"], t["core_row_off"], t["core_col_off"] + t["core_width"],
                           t["core_row_off"] + t["core_height"])
        assert shapely.intersection(core, pix).area > 0  # ...and reaching into its core
    # every pixel of every building is covered by the tiles' polygons, except the 1 m² speck
    # (below [polygonize] min_area_m2 = 2 and inside one tile, so it cannot be a fragment)
    union = shapely.union_all([shapely.from_wkb(bytes(r[5])) for r in rows])
    assert union.area == (m > 0).sum() - 4
    assert not union.intersects(shapely.box(50, 50, 52, 52))
    # rerunning replaces, never duplicates
    n = len(rows)
    task.run()
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM predictions WHERE image = 'img1'")
        assert cur.fetchone()[0] == n


def test_polygonize_task_three_class_needs_three_bands(pg, tmp_path, luigi_config):
    luigi_config("masks", "kind", "3class")
    m = rect_mask(20, 20, [(3, 3, 9, 9)])
    prob_path, index_path, _ = write_inputs(tmp_path, m[None], 16, 4)
    task = _Polygonize(image="img2", prob=str(prob_path), index=str(index_path))
    with pytest.raises(ValueError, match="3 probability bands"):
        task.run()


def test_polygonize_task_three_class(pg, tmp_path, luigi_config):
    luigi_config("masks", "kind", "3class")
    houses = row_houses(3, 8, 10)
    mask = make_mask(houses, (16, 30), UTM, kind="3class")
    prob_path, index_path, _ = write_inputs(tmp_path, mask, 64, 8)  # one tile
    task = _Polygonize(image="img3", prob=str(prob_path), index=str(index_path))
    task.run()
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM predictions WHERE image = 'img3'")
        assert cur.fetchone()[0] == 3
