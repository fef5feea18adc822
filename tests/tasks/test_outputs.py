"""WriteOutputs and WriteRunOutputs: the files of an image and of a run, from PostGIS."""
import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

import geopandas as gpd
import luigi
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from PIL import Image

from footprints import db
from footprints.dedup import deduplicate
from footprints.geo import pixel_to_geo
from footprints.outputs import FN_COLOR, FP_COLOR, TP_COLOR, UNMATCHED_COLOR, read_buildings
from footprints.polygonize import polygonize_probabilities, prediction_rows
from footprints.tiling import tile_grid
from tasks.keys import run_key
from tasks.outputs import WriteOutputs, WriteRunOutputs

SRID = 32616


@pytest.fixture(scope="module")
def georef():
    """Transform and CRS of the real SpaceNet 4 fixture chip (Atlanta, EPSG:32616, 0.5 m)."""
    path = Path(__file__).parents[2] / ".." / "shared" / "fixtures" / "spacenet" / "imagery" / "sample_geotiff.tif"
    with rasterio.open(path) as src:
        return src.transform, src.crs


# ---------------------------------------------------------------- the tasks


class _File(luigi.ExternalTask):
    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)


class _WriteOutputs(WriteOutputs):
    index = luigi.Parameter()
    labels = luigi.Parameter(default="")

    def requires(self):
        req = {"tiles": _File(path=self.index)}
        if self.labels:
            req["labels"] = _File(path=self.labels)
        return req


class _WriteRunOutputs(WriteRunOutputs):
    indexes = luigi.ListParameter()

    def requires(self):
        return [_WriteOutputs(image=i, index=p) for i, p in zip(self.images, self.indexes)]


def prepare_image(conn, tmp_path, name, georef, rects, ts=40, ov=8, w=100, h=80):
    """A source GeoTIFF, its tile index, and its deduplicated buildings in PostGIS."""
    t, crs = georef
    src = tmp_path / f"{name}.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(src, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16", crs=crs,
                       transform=t) as dst:
        dst.write(rng.integers(200, 900, (1, h, w)).astype(np.uint16))
    m = np.zeros((1, h, w), np.uint8)
    for x0, y0, x1, y1 in rects:
        m[0, y0:y1, x0:x1] = 255
    tiles = [asdict(s) for s in tile_grid(w, h, ts, ov)]
    rows = []
    for tl in tiles:
        arr = m[:, tl["row_off"]:tl["row_off"] + tl["height"], tl["col_off"]:tl["col_off"] + tl["width"]]
        polys = polygonize_probabilities(arr, t, col_off=tl["col_off"], row_off=tl["row_off"], keep_edge_fragments=True)
        rows += prediction_rows(run_key(), name, tl["tile_id"], SRID, polys, t)
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    buf.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(db.load_sql("predictions_copy"), buf)
    deduplicate(conn, run_key(), name, tiles, t, SRID, width=w, height=h)
    conn.commit()
    index = {"image": name, "source": str(src), "width": w, "height": h, "transform": list(t)[:6],
             "crs_wkt": crs.to_wkt(), "tiles": tiles}
    ipath = tmp_path / f"{name}.index.json"
    ipath.write_text(json.dumps(index))
    return ipath


def insert_labels(conn, source, pix_boxes, georef):
    t, _ = georef
    with conn.cursor() as cur:
        for i, b in enumerate(pix_boxes):
            wkt = pixel_to_geo(shapely.box(*b), t).wkt
            cur.execute("INSERT INTO labels (source, feature_index, srid, geom, geom_4326) VALUES "
                        "(%s, %s, %s, ST_Multi(ST_GeomFromText(%s, %s)), "
                        "ST_Transform(ST_Multi(ST_GeomFromText(%s, %s)), 4326))",
                        (source, i, SRID, wkt, SRID, wkt, SRID))
    conn.commit()


def test_write_outputs_task(pg, tmp_path, workdir, luigi_config, georef):
    luigi_config("polygonize", "simplify_px", "0")
    # building 1 straddles tile borders and matches a label; building 2 has no label (FP);
    # the second label has no building (a miss)
    ipath = prepare_image(pg, tmp_path, "AOI_9_Atl_img7", georef, [(30, 20, 50, 45), (70, 60, 90, 75)])
    insert_labels(pg, "labels_img7", [(31, 20, 50, 45), (5, 60, 20, 75)], georef)
    lpath = tmp_path / "labels_img7.geojson"
    lpath.write_text('{"type": "FeatureCollection", "features": []}')
    task = _WriteOutputs(image="AOI_9_Atl_img7", index=str(ipath), labels=str(lpath))
    assert luigi.build([task], local_scheduler=True)
    out = task.output()
    assert all(t.exists() for t in out.values())
    assert str(workdir) in out["csv"].path and run_key() in out["csv"].path

    df = pd.read_csv(out["csv"].path)
    assert len(df) == 2 and set(df["ImageId"]) == {"AOI_9_Atl_img7"}
    assert all(g.is_valid for g in shapely.from_wkt(df["PolygonWKT_Pix"].to_numpy()))
    gj = gpd.read_file(out["geojson"].path)
    assert gj.crs.to_epsg() == 4326 and len(gj) == 2
    gp = gpd.read_file(out["gpkg"].path)
    assert gp.crs.to_epsg() == 32616 and len(gp) == 2
    assert sorted(round(a) for a in gp.geometry.area) == sorted(round(a) for a in gj["area_m2"])

    png = np.asarray(Image.open(out["png"].path).convert("RGB"))
    assert png.shape == (80, 100, 3)
    colours = {tuple(c) for c in png.reshape(-1, 3)}
    assert TP_COLOR in colours and FP_COLOR in colours and FN_COLOR in colours
    assert tuple(png[20, 40]) == TP_COLOR   # top edge of the matched building
    assert tuple(png[60, 80]) == FP_COLOR   # top edge of the unmatched building
    assert tuple(png[60, 10]) == FN_COLOR   # top edge of the missed label


def test_run_outputs_concatenate_images(pg, tmp_path, workdir, luigi_config, georef):
    luigi_config("polygonize", "simplify_px", "0")
    a = prepare_image(pg, tmp_path, "imgA", georef, [(10, 10, 30, 30), (45, 35, 60, 70)])
    b = prepare_image(pg, tmp_path, "imgB", georef, [])
    task = _WriteRunOutputs(images=["imgA", "imgB"], indexes=[str(a), str(b)])
    assert luigi.build([task], local_scheduler=True)
    df = pd.read_csv(task.output()["csv"].path)
    assert df["ImageId"].tolist() == ["imgA", "imgA", "imgB"]  # an empty image still counts
    assert df["PolygonWKT_Pix"].iloc[2] == "POLYGON EMPTY"
    gj = gpd.read_file(task.output()["geojson"].path)
    assert gj.crs.to_epsg() == 4326 and len(gj) == 2 and set(gj["ImageId"]) == {"imgA"}
    # no labels for these images: the overlay draws the buildings in one colour
    png = np.asarray(Image.open(WriteOutputs(image="imgA").output()["png"].path).convert("RGB"))
    assert UNMATCHED_COLOR in {tuple(c) for c in png.reshape(-1, 3)}
    assert read_buildings(pg, run_key(), "imgB") == []
