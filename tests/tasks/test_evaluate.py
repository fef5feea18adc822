"""The Evaluate task: its output paths, and a run against labels and buildings in PostGIS.
The metric itself is tested in tests/footprints/test_spacenet.py, its files in test_evalio.py."""
import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely

from footprints import db
from footprints.dedup import deduplicate
from footprints.geo import pixel_to_geo
from footprints.polygonize import polygonize_probabilities, prediction_rows
from footprints.spacenet import prf
from footprints.tiling import tile_grid
from tasks.evaluate import Evaluate
from tasks.keys import outputs_dir, run_key
from tasks.tiling import TileImage

SRID = 32616
SAMPLE = Path(__file__).parents[2] / ".." / "shared" / "fixtures" / "spacenet" / "imagery" / "sample_geotiff.tif"


@pytest.fixture(autouse=True)
def _explicit_polygon_settings(luigi_config):
    """These tests run the task with its inputs faked: explicit values, not ``auto`` (which needs
    TuneThreshold; tests/tasks/test_tune.py)."""
    luigi_config("polygonize", "threshold", "0.5")
    luigi_config("polygonize", "min_area_m2", "5")


def test_output_paths_keep_their_names(workdir):
    out = Evaluate(images=["a"]).output()
    assert out["metrics"].path == str(outputs_dir() / "metrics.json")
    assert out["per_image"].path == str(outputs_dir() / "per_image.csv")
    other = Evaluate(images=["a"], iou=0.3, min_area=2.5).output()
    assert other["metrics"].path == str(outputs_dir() / "metrics_iou0.3_min2.5.json")
    assert other["per_image"].path == str(outputs_dir() / "per_image_iou0.3_min2.5.csv")


def _image(conn, imgdir: Path, name: str, rects, w=100, h=80):
    """A GeoTIFF with the SpaceNet chip's georeferencing, its tile index where TileImage puts it,
    and the buildings of ``rects`` (pixel boxes) deduplicated into PostGIS."""
    with rasterio.open(SAMPLE) as src:
        t, crs = src.transform, src.crs
    with rasterio.open(imgdir / f"{name}.tif", "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                       crs=crs, transform=t) as dst:
        dst.write(np.zeros((1, h, w), np.uint8))
    m = np.zeros((1, h, w), np.uint8)
    for x0, y0, x1, y1 in rects:
        m[0, y0:y1, x0:x1] = 255
    tiles = [asdict(s) for s in tile_grid(w, h, 40, 8)]
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
    index = Path(TileImage(image=name).output().path)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({"image": name, "width": w, "height": h, "transform": list(t)[:6],
                                 "crs_wkt": crs.to_wkt(), "tiles": tiles}))
    return t


def test_evaluate_task_scores_each_image_in_its_crs(pg, tmp_path, workdir, luigi_config):
    imgdir = tmp_path / "images"
    imgdir.mkdir()
    labels = tmp_path / "truth.geojson"
    labels.write_text('{"type": "FeatureCollection", "features": []}')
    luigi_config("data", "images", str(imgdir))
    luigi_config("data", "labels", str(labels))  # one label file for every image: source "truth"
    luigi_config("polygonize", "simplify_px", "0")
    t = _image(pg, imgdir, "imgA", [(10, 10, 30, 30), (45, 35, 60, 70)])
    _image(pg, imgdir, "imgB", [])  # the same place, nothing found: both labels are misses there
    with pg.cursor() as cur:  # a label for the first building, and one that nothing found
        for i, b in enumerate([(10, 10, 30, 31), (70, 5, 90, 20)]):
            wkt = pixel_to_geo(shapely.box(*b), t).wkt
            cur.execute("INSERT INTO labels (source, feature_index, srid, geom, geom_4326) VALUES "
                        "(%s, %s, %s, ST_Multi(ST_GeomFromText(%s, %s)), "
                        "ST_Transform(ST_Multi(ST_GeomFromText(%s, %s)), 4326))",
                        ("truth", i, SRID, wkt, SRID, wkt, SRID))
    pg.commit()

    task = Evaluate(images=["imgA", "imgB"])
    task.run()
    result = json.loads(Path(task.output()["metrics"].path).read_text())
    assert result["by_image"] == {"imgA": prf(1, 1, 1), "imgB": prf(0, 0, 2)}
    assert result["by_aoi"] == result["by_image"]  # pipeline images are their own AOI
    assert result["total"] == prf(1, 1, 3)
    assert result["splits"]["all"] == {"images": ["imgA", "imgB"], **prf(1, 1, 3), "scored_on": "images"}
    assert result["run"] == run_key() and result["iou_threshold"] == pytest.approx(0.5)
    per_image = pd.read_csv(task.output()["per_image"].path)
    assert per_image["ImageId"].tolist() == ["imgA", "imgB"] and per_image["tp"].tolist() == [1, 0]


def test_evaluate_filters_truth_by_the_runs_min_area(pg, tmp_path, workdir, luigi_config):
    """issue 11: Polygonize drops buildings under [polygonize] min_area_m2, so Evaluate applies the
    same minimum to the truth (SpaceNet's rule: both sides) and records it in metrics.json."""
    imgdir = tmp_path / "images"
    imgdir.mkdir()
    labels = tmp_path / "truth.geojson"
    labels.write_text('{"type": "FeatureCollection", "features": []}')
    luigi_config("data", "images", str(imgdir))
    luigi_config("data", "labels", str(labels))
    luigi_config("polygonize", "simplify_px", "0")
    luigi_config("polygonize", "min_area_m2", "5")  # (part of the run key: set before the buildings)
    t = _image(pg, imgdir, "imgA", [(10, 10, 30, 30)])
    with pg.cursor() as cur:  # the building, and a 3 x 3 px (2.25 m²) shed nothing could find
        for i, b in enumerate([(10, 10, 30, 30), (70, 5, 73, 8)]):
            wkt = pixel_to_geo(shapely.box(*b), t).wkt
            cur.execute("INSERT INTO labels (source, feature_index, srid, geom, geom_4326) VALUES "
                        "(%s, %s, %s, ST_Multi(ST_GeomFromText(%s, %s)), "
                        "ST_Transform(ST_Multi(ST_GeomFromText(%s, %s)), 4326))",
                        ("truth", i, SRID, wkt, SRID, wkt, SRID))
    pg.commit()
    task = Evaluate(images=["imgA"])
    task.run()
    result = json.loads(Path(task.output()["metrics"].path).read_text())
    assert result["total"] == prf(1, 0, 0), "truth under min_area_m2 is not a miss"
    assert result["min_area_m2"] == 5.0
    task = Evaluate(images=["imgA"], min_area=0.0)  # an explicit value wins, and names its files
    task.run()
    assert task.output()["metrics"].path.endswith("metrics_iou0.5_min0.json")
    result = json.loads(Path(task.output()["metrics"].path).read_text())
    assert result["total"] == prf(1, 0, 1) and result["min_area_m2"] == 0.0
