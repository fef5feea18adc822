"""footprints/tuning.py: the grid's buildings are exactly Polygonize + DeduplicateBorders' at
each point; the building-level score; the choice and its tie rule; the figure."""
from dataclasses import asdict

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from scipy import ndimage

from footprints.borders import deduplicate_polygons
from footprints.polygonize import iter_tile_polygons
from footprints.tiling import tile_grid
from footprints.tuning import choose, grid_buildings, plot_tuning, score_grid

UTM = Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)


def _raster(path, seed=3, h=150, w=170, bands=3):
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.random((bands, h, w)), sigma=(0, 3, 3))
    f = np.round((f - f.min()) / np.ptp(f) * 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=bands, dtype="uint8",
                       crs="EPSG:32616", transform=UTM) as dst:
        dst.write(f)
    return path


@pytest.mark.parametrize("three_class,halo", [(False, 0), (True, 4)])
def test_grid_gives_the_buildings_of_polygonize_and_dedup_at_every_point(tmp_path, three_class, halo):
    path = _raster(tmp_path / "p.tif")
    tiles = [asdict(s) for s in tile_grid(170, 150, 64, 16)]
    thresholds, areas = [0.45, 0.55], [0.0, 2.0, 6.0]
    kw = dict(halo_px=halo, simplify_px=1.0, merge_overlap=0.5, min_shared_px=1.0)
    with rasterio.open(path) as src:
        grid = grid_buildings(src, tiles, thresholds, areas, three_class=three_class, **kw)
        assert sorted(grid) == [(t, m) for t in thresholds for m in areas]
        for (t, m), got in grid.items():
            preds = [(tile["tile_id"], float(np.float32(s)), pix)
                     for tile, polys in iter_tile_polygons(src, tiles, halo_px=halo, threshold=t, min_area_m2=m,
                                                           three_class=three_class)
                     for pix, _, s in polys]
            ref = deduplicate_polygons(tiles, preds, src.transform, 170, 150, None, min_area_m2=m, **kw)
            assert len(got) == len(ref) > 0, (t, m)
            for g, r in zip(got, ref):
                assert shapely.equals_exact(g, r["geom"], 0.0)
    n = {k: len(v) for k, v in grid.items()}
    assert n[(0.45, 6.0)] <= n[(0.45, 2.0)] <= n[(0.45, 0.0)]  # the area filter only removes


@pytest.mark.parametrize("three_class", [False, True])
def test_typed_grid_finds_buildings_on_the_union_of_the_class_channels(tmp_path, three_class):
    """Building types (3 class channels first): the grid's buildings are Polygonize's with
    ``n_classes``, found on the union of the class channels, at every point."""
    path = _raster(tmp_path / "p.tif", seed=5, bands=5 if three_class else 3)
    tiles = [asdict(s) for s in tile_grid(170, 150, 64, 16)]
    kw = dict(halo_px=4, simplify_px=1.0, merge_overlap=0.5, min_shared_px=1.0)
    with rasterio.open(path) as src:
        grid = grid_buildings(src, tiles, [0.55], [0.0, 4.0], three_class=three_class, n_classes=3, **kw)
        for (t, m), got in grid.items():
            preds = [(tile["tile_id"], float(np.float32(p[2])), p[0])
                     for tile, polys in iter_tile_polygons(src, tiles, halo_px=4, threshold=t, min_area_m2=m,
                                                           three_class=three_class, n_classes=3)
                     for p in polys]
            ref = deduplicate_polygons(tiles, preds, src.transform, 170, 150, None, min_area_m2=m, **kw)
            assert len(got) == len(ref) > 0, (t, m)
            for g, r in zip(got, ref):
                assert shapely.equals_exact(g, r["geom"], 0.0)


def test_a_building_of_the_second_class_only_is_found(tmp_path):
    """Class 0's channel empty, class 1's full where the building is: the grid finds it (channel 0
    alone would find nothing)."""
    prob = np.zeros((5, 64, 64), np.uint8)
    prob[1, 10:30, 12:40] = 255
    with rasterio.open(tmp_path / "p.tif", "w", driver="GTiff", width=64, height=64, count=5, dtype="uint8",
                       crs="EPSG:32616", transform=UTM) as dst:
        dst.write(prob)
    tiles = [asdict(s) for s in tile_grid(64, 64, 64, 0)]
    with rasterio.open(tmp_path / "p.tif") as src:
        grid = grid_buildings(src, tiles, [0.3, 0.5], [5.0], three_class=True, n_classes=3)
    for point, found in grid.items():
        assert len(found) == 1 and found[0].area == pytest.approx(20 * 28 * 0.25), point


def test_score_grid_is_the_building_metric_with_the_points_min_area():
    a, b, small = shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10), shapely.box(40, 0, 41, 2)
    truth = {"i1": [a, b, small], "i2": []}
    found = {(0.5, 0.0): {"i1": [a, small], "i2": [b]},
             (0.5, 5.0): {"i1": [a], "i2": [b]}}
    rows = {(r["threshold"], r["min_area_m2"]): r for r in score_grid(truth, found)}
    r0, r5 = rows[(0.5, 0.0)], rows[(0.5, 5.0)]
    assert (r0["tp"], r0["fp"], r0["fn"]) == (2, 1, 1)
    assert (r5["tp"], r5["fp"], r5["fn"]) == (1, 1, 1)  # truth under 5 m² is not a miss
    assert r5["f1_by_image"] == {"i1": pytest.approx(2 / 3), "i2": 0.0}
    assert r5["f1_variance"] == pytest.approx(np.var([2 / 3, 0.0]))
    fixed = {(r["threshold"], r["min_area_m2"]): r for r in score_grid(truth, found, truth_min_area=0.0)}
    assert (fixed[(0.5, 5.0)]["tp"], fixed[(0.5, 5.0)]["fn"]) == (1, 2)  # one truth for every point: the shed is missed


def _row(t, m, f1, var):
    return {"threshold": t, "min_area_m2": m, "f1": f1, "f1_variance": var, "precision": f1, "recall": f1}


def test_choose_best_then_least_variance_within_the_tie():
    rows = [_row(0.4, 5, 0.800, 0.02), _row(0.5, 5, 0.797, 0.01), _row(0.6, 5, 0.790, 0.0)]
    pick, why = choose(rows, tie=0.005)
    assert (pick["threshold"], pick["min_area_m2"]) == (0.5, 5)  # 0.6 is outside the tie
    assert "0.8000" in why and "varies least" in why
    pick, _ = choose(rows, tie=0.0)
    assert pick["threshold"] == 0.4
    # exact ties everywhere (the oracle): the point nearest the defaults
    pick, why = choose([_row(t, m, 1.0, 0.0) for t in (0.3, 0.5, 0.8) for m in (2, 5, 20)])
    assert (pick["threshold"], pick["min_area_m2"]) == (0.5, 5) and "defaults" in why
    with pytest.raises(ValueError):
        choose([])


def test_plot_tuning_writes_a_png(tmp_path):
    rows = [_row(t, m, 0.5 + t / 10 - m / 100, 0.0) for t in (0.3, 0.5) for m in (2, 5)]
    plot_tuning(tmp_path / "tuning.png", rows, rows[0])
    plot_tuning(tmp_path / "empty.png", [], None)
    for p in ("tuning.png", "empty.png"):
        assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*tmp*"))
