import json
from pathlib import Path

import luigi
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from tasks.masks import MakeMasks, boundary_mask, contact_mask, footprint_mask, make_mask


def _use_fixture_chip(luigi_config, fixtures_dir, tile_size, overlap=0, kind="footprint"):
    luigi_config("data", "images", str(fixtures_dir / "imagery" / "sample_geotiff.tif"))
    luigi_config("data", "labels", str(fixtures_dir / "imagery" / "geotiff_labels.geojson"))
    luigi_config("tiling", "tile_size", tile_size)
    luigi_config("tiling", "overlap", overlap)
    luigi_config("masks", "kind", kind)


def test_whole_chip_mask_equals_solaris_reference(pg, workdir, luigi_config, fixtures_dir):
    _use_fixture_chip(luigi_config, fixtures_dir, tile_size=900)
    task = MakeMasks(image="sample_geotiff")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    index = json.loads(Path(task.output().path).read_text())
    (tile,) = index["tiles"]
    with rasterio.open(Path(task.output().path).parent / tile["path"]) as m:
        mask = m.read(1)
        assert m.crs.to_epsg() == 32616
    with rasterio.open(fixtures_dir / "masks" / "sample_fp_mask_from_geojson.tif") as ref:
        expected = ref.read(1)
    assert int((mask == 255).sum()) == 33818
    np.testing.assert_array_equal(mask, expected)


def test_tile_label_counts_match_solaris_vector_tiles(pg, workdir, luigi_config, fixtures_dir):
    _use_fixture_chip(luigi_config, fixtures_dir, tile_size=90)
    task = MakeMasks(image="sample_geotiff")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    index = json.loads(Path(task.output().path).read_text())
    expected = json.loads((fixtures_dir / "EXPECTED.json").read_text())["tiling/vectortile_test_expected"]["per_tile"]
    tiles = json.loads((workdir / "tiles" / "sample_geotiff" / "ts90_ov0" / "index.json").read_text())["tiles"]
    assert len(index["tiles"]) == 100
    whole = np.zeros((900, 900), np.uint8)
    for t, m in zip(tiles, index["tiles"]):
        tr = Affine(*t["transform"])
        left, top = tr.c, tr.f
        assert m["n_labels"] == expected[f"geoms_{int(left)}_{int(top)}.geojson"]["n"], t["tile_id"]
        with rasterio.open(Path(task.output().path).parent / m["path"]) as mm:
            whole[t["row_off"]:t["row_off"] + 90, t["col_off"]:t["col_off"] + 90] = mm.read(1)
    # tiles rasterized with their own transforms add up to the reference mask
    with rasterio.open(fixtures_dir / "masks" / "sample_fp_mask_from_geojson.tif") as ref:
        np.testing.assert_array_equal(whole, ref.read(1))


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
    from scipy import ndimage

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


def test_labels_outside_every_raster_warn_not_fail(pg, workdir, luigi_config, fixtures_dir, tmp_path, caplog):
    far = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[10, 10], [10.001, 10], [10.001, 10.001], [10, 10.001], [10, 10]]]}}]}
    lp = tmp_path / "elsewhere.geojson"
    lp.write_text(json.dumps(far))
    luigi_config("data", "images", str(fixtures_dir / "imagery" / "sample_geotiff.tif"))
    luigi_config("data", "labels", str(lp))
    luigi_config("tiling", "tile_size", 450)
    luigi_config("tiling", "overlap", 0)
    task = MakeMasks(image="sample_geotiff")
    with caplog.at_level("WARNING", logger="luigi-interface"):
        assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    assert any("none of the labels" in r.getMessage() for r in caplog.records)
    index = json.loads(Path(task.output().path).read_text())
    assert index["labels_in_image"] == 0 and all(t["building_px"] == 0 for t in index["tiles"])


def test_assign_to_tiles_matches_brute_force():
    from hypothesis import given, settings, strategies as st

    from tasks.masks import assign_to_tiles
    from tasks.tiling import tile_grid

    @settings(max_examples=40, deadline=None)
    @given(st.integers(0, 10_000), st.sampled_from([(64, 0), (64, 16), (100, 30)]), st.floats(0, 5))
    def check(seed, grid, margin):
        rng = np.random.default_rng(seed)
        specs = tile_grid(300, 250, *grid)
        geoms = [shapely.box(x, y, x + w, y + h) for x, y, w, h in
                 zip(rng.uniform(1000, 1150, 30), rng.uniform(1875, 2000, 30), rng.uniform(0.2, 20, 30), rng.uniform(0.2, 20, 30))]
        got = assign_to_tiles(np.array(geoms, dtype=object), T, [s.tile_id for s in specs],
                              [s.col_off for s in specs], [s.row_off for s in specs], specs[0].width, specs[0].height, margin)
        for s in specs:
            grown = shapely.box(*(T * (s.col_off - margin, s.row_off + s.height + margin)),
                                *(T * (s.col_off + s.width + margin, s.row_off - margin)))
            expect = [g for g in geoms if shapely.intersects(shapely.envelope(g), grown)]
            assert sorted(map(id, got.get(s.tile_id, []))) == sorted(map(id, expect)), s.tile_id

    check()
