import csv
import io
import json
from dataclasses import asdict

import luigi
import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS

from footprints import db
from footprints.dedup import batch_key, partition_names
from footprints.errors import InputError
from footprints.polygonize import prediction_rows, read_window, tile_polygons
from footprints.tiling import tile_grid
from tasks.dedup import DeduplicateBorders
from tasks.keys import run_key

UTM = Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)  # EPSG:32616
SRID = 32616


# the helpers of tests/footprints/test_dedup.py that the task tests need


def tiles_for(w, h, ts, ov):
    return [asdict(s) for s in tile_grid(w, h, ts, ov)]


def store_tile_predictions(conn, run, prob, tiles, three_class=False, order=None, image="img", halo=0):
    """Polygonize every tile's read window as the Polygonize task does, and COPY the rows."""
    _, h, w = prob.shape
    rows = []
    for t in tiles:
        c0, r0, ww, hh = win = read_window(t, halo, w, h)
        polys = tile_polygons(prob[:, r0:r0 + hh, c0:c0 + ww], UTM, t, win, three_class=three_class)
        rows.append(prediction_rows(run, image, t["tile_id"], SRID, polys, UTM))
    if order is not None:
        rows = [rows[i] for i in order]
    buf = io.StringIO()
    w = csv.writer(buf)
    for r in rows:
        w.writerows(r)
    buf.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(db.load_sql("predictions_copy"), buf)


def fetch_buildings(conn, run, image="img"):
    with conn.cursor() as cur:
        cur.execute("SELECT building_id, score, area_m2, srid, ST_AsBinary(geom_pix), ST_AsBinary(geom), "
                    "ST_AsBinary(geom_4326), ST_SRID(geom) FROM buildings "
                    "WHERE batch = buildings_batch(%(run)s, %(image)s) AND run = %(run)s AND image = %(image)s "
                    "ORDER BY building_id", {"run": run, "image": image})
        return [(bid, score, area, srid, shapely.from_wkb(bytes(p)), shapely.from_wkb(bytes(g)),
                 shapely.from_wkb(bytes(g4)), gsrid) for bid, score, area, srid, p, g, g4, gsrid in cur.fetchall()]


def partitions_of(conn, run, image):
    """The partitions of `buildings` whose bound is the batch of (run, image)."""
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'buildings'::regclass")
        rows = cur.fetchall()
        cur.execute("SELECT format('FOR VALUES IN (%%L)', buildings_batch(%s, %s))", (run, image))
        bound = cur.fetchone()[0]
    return sorted(name for name, b in rows if b == bound)


# ---------------------------------------------------------------- the Luigi task


class _File(luigi.ExternalTask):
    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)


class _Dedup(DeduplicateBorders):
    index = luigi.Parameter()

    def requires(self):
        return {"tiles": _File(path=self.index)}


def test_deduplicate_task_writes_buildings_with_marker(pg, tmp_path, luigi_config):
    luigi_config("polygonize", "simplify_px", "0")
    luigi_config("polygonize", "min_area_m2", "2")
    w, h, ts, ov = 70, 50, 24, 6
    m = np.zeros((h, w), np.uint8)
    m[3:30, 15:40] = 255   # over several tiles
    m[40:42, 60:62] = 255  # 1 m²: below the minimum area
    tiles = tiles_for(w, h, ts, ov)
    run = run_key()
    store_tile_predictions(pg, run, m[None], tiles, image="imgA", halo=8)  # [polygonize] halo_px default
    pg.commit()
    index = {"width": w, "height": h, "transform": list(UTM)[:6], "crs_wkt": CRS.from_epsg(SRID).to_wkt(),
             "tiles": tiles}
    ipath = tmp_path / "index.json"
    ipath.write_text(json.dumps(index))
    task = _Dedup(image="imgA", index=str(ipath))
    assert not task.complete()
    assert luigi.build([task], local_scheduler=True)
    assert task.complete()
    got = fetch_buildings(pg, run, "imgA")
    assert len(got) == 1
    assert shapely.symmetric_difference(got[0][4], shapely.box(15, 3, 40, 30)).area == 0
    assert partitions_of(pg, run, "imgA") == [partition_names(batch_key(pg, run, "imgA"))[0]]
    pg.commit()  # a rerun replaces the partition: it waits for open transactions that read `buildings`
    task.run()  # rerun: replaced, not duplicated
    assert len(fetch_buildings(pg, run, "imgA")) == 1
    assert partitions_of(pg, run, "imgA") == [partition_names(batch_key(pg, run, "imgA"))[1]]
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM table_updates WHERE update_id = %s", (task.output().update_id,))
        assert cur.fetchone()[0] == 1


def test_deduplicate_task_rejects_a_broken_tile_index(pg, tmp_path):
    tiles = tiles_for(40, 40, 16, 4)
    tiles[1]["core_col_off"] += 1
    ipath = tmp_path / "index.json"
    ipath.write_text(json.dumps({"width": 40, "height": 40, "transform": list(UTM)[:6],
                                 "crs_wkt": CRS.from_epsg(SRID).to_wkt(), "tiles": tiles}))
    with pytest.raises(InputError, match=str(ipath)):
        _Dedup(image="imgB", index=str(ipath)).run()

