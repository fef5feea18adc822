import json
from dataclasses import asdict

import luigi
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS

from footprints.errors import InputError
from footprints.geo import pixel_to_geo
from footprints.masks import make_mask
from footprints.polygonize import read_window
from footprints.tiling import tile_grid
from tasks.keys import run_key
from tasks.polygonize import Polygonize

# the SpaceNet 4 fixture's georeferencing: EPSG:32616, 0.5 m pixels
UTM = Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)


@pytest.fixture(autouse=True)
def _explicit_polygon_settings(luigi_config):
    """These tests run the task with its inputs faked: explicit values, not ``auto`` (which needs
    TuneThreshold; tests/tasks/test_tune.py)."""
    luigi_config("polygonize", "threshold", "0.5")
    luigi_config("polygonize", "min_area_m2", "5")


def rect_mask(h, w, rects, value=255, dtype=np.uint8):
    m = np.zeros((h, w), dtype)
    for x0, y0, x1, y1 in rects:
        m[y0:y1, x0:x1] = value
    return m


def row_houses(n, w, h, gap_after=()):
    """n buildings side by side (sharing walls), as polygons in the UTM CRS."""
    polys, x = [], 2
    for i in range(n):
        polys.append(shapely.box(*(UTM * (x, 2)), *(UTM * (x + w, 2 + h))))
        x += w + (3 if i in gap_after else 0)
    return polys


# ---------------------------------------------------------------- run key


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
    with pytest.raises(InputError, match="3 probability bands"):
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
