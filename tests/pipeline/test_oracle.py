"""With the oracle model (rasterized labels instead of a network), the geometry stages must
reproduce the ground truth exactly, F1 = 1.0, whatever the tiling: this proves that tiling,
masks, polygonization and the tile-border dedup lose nothing, buildings straddling tile
borders and touching buildings included. Each run uses a fresh workdir and an empty
PostGIS database, exactly as a user would run it."""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import luigi
import numpy as np
import psycopg2
import pytest
import rasterio
import shapely.geometry
from affine import Affine

from footprints.spacenet import prf
from footprints.split import block_assignment, centroid_in, split_regions
from pipeline import RunAll

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_db():
    from footprints.db import conn_params

    p = {**conn_params(), "dbname": "postgres"}
    admin = psycopg2.connect(**p)
    admin.autocommit = True
    name = f"footprints_oracle_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE footprints_template')
    yield name
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.mark.parametrize("tile_size,overlap", [(256, 0), (384, 96)])
def test_oracle_f1_is_one_for_any_tiling(tmp_path, empty_db, tile_size, overlap):
    env = dict(os.environ, FOOTPRINTS_WORKDIR=str(tmp_path / "work"), PGDATABASE=empty_db)
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "RunAll", "--local-scheduler",
           "--model-name", "oracle", "--tiling-tile-size", str(tile_size), "--tiling-overlap", str(overlap),
           "--data-demo-scenes", "2", "--data-demo-size", "768"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "This progress looks :)" in proc.stderr + proc.stdout
    (metrics,) = (tmp_path / "work" / "outputs").rglob("metrics.json")
    m = json.loads(metrics.read_text())
    total = m["splits"]["all"]
    assert total["tp"] >= 150, total
    assert total["fp"] == 0 and total["fn"] == 0 and total["f1"] == 1.0, total
    # the demo's buildings really do straddle tile borders at this tiling
    labels = json.loads(next((tmp_path / "work" / "demo").rglob("demo_00.geojson")).read_text())
    assert len(labels["features"]) >= 50
    # outputs a user opens
    out = metrics.parent / "images"
    for suffix in (".csv", ".geojson", ".gpkg", "_overlay.png"):
        assert (out / f"demo_00{suffix}").stat().st_size > 0


def test_oracle_f1_is_one_on_the_spacenet_chip(pg, workdir, luigi_config, fixtures_dir):
    """Real labels (touching buildings, thin necks, slivers) on the shared SpaceNet chip: the
    oracle run reproduces every building, none split in two at a thin neck."""
    luigi_config("data", "images", str(fixtures_dir / "imagery" / "sample_geotiff.tif"))
    luigi_config("data", "labels", str(fixtures_dir / "imagery" / "geotiff_labels.geojson"))
    luigi_config("model", "name", "oracle")
    assert luigi.build([RunAll()], local_scheduler=True, log_level="WARNING")
    (metrics,) = (workdir / "outputs").rglob("metrics.json")
    total = json.loads(metrics.read_text())["splits"]["all"]
    assert total["tp"] >= 40 and total["fp"] == 0 and total["fn"] == 0 and total["f1"] == 1.0, total


def _two_block_scene(root: Path):
    """A 180 x 60 m scene (0.5 m) lying in two 100 m blocks of EPSG:32616 (x = 500000..500200),
    with a 6 x 5 m building every 15 m."""
    root.mkdir(parents=True)
    img, lab = root / "twoblock.tif", root / "twoblock.geojson"
    x0, y0 = 500010.0, 3999980.0
    arr = np.random.default_rng(3).integers(0, 255, (3, 120, 360), dtype=np.uint8)
    with rasterio.open(img, "w", driver="GTiff", width=360, height=120, count=3, dtype="uint8",
                       crs="EPSG:32616", transform=Affine(0.5, 0, x0, 0, -0.5, y0)) as dst:
        dst.write(arr)
    feats = []
    for x in np.arange(x0 + 3, x0 + 175, 15.0):
        for y in np.arange(y0 - 57, y0 - 5, 15.0):
            ring = [[x, y], [x + 6, y], [x + 6, y + 5], [x, y + 5], [x, y]]
            feats.append({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}})
    lab.write_text(json.dumps({"type": "FeatureCollection", "features": feats,
                               "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}}))
    return img, lab, [shapely.geometry.shape(f["geometry"]) for f in feats]


def test_block_split_scores_each_split_on_its_own_blocks(pg, workdir, luigi_config, tmp_path):
    img, lab, truth = _two_block_scene(tmp_path / "data")
    # a seed that draws one block to train and the other to test
    seed = next(s for s in range(100) if [block_assignment(b, 39999, s, 0.0, 0.5) for b in (5000, 5001)]
                in (["train", "test"], ["test", "train"]))
    for section, option, value in [("data", "images", img), ("data", "labels", lab), ("model", "name", "oracle"),
                                   ("tiling", "tile_size", 64), ("tiling", "overlap", 16), ("split", "method", "block"),
                                   ("split", "block_size", 100), ("split", "buffer", 10), ("split", "seed", seed),
                                   ("split", "val_fraction", 0), ("split", "test_fraction", 0.5)]:
        luigi_config(section, option, value)
    assert luigi.build([RunAll()], local_scheduler=True, log_level="WARNING")
    (metrics,) = (workdir / "outputs").rglob("metrics.json")
    m = json.loads(metrics.read_text())
    (split_json,) = (workdir / "splits").rglob("split.json")
    regions = split_regions(json.loads(split_json.read_text())["splits"])
    assert "centroid" in m["split_scoring"]
    assert m["splits"]["all"] == {"images": ["twoblock"], **prf(len(truth), 0, 0), "scored_on": "images"}
    kept = 0
    for s in ("train", "test"):
        n = int(centroid_in(truth, regions[s]["twoblock"]).sum())
        assert 5 <= n < len(truth)
        assert m["splits"][s] == {"images": ["twoblock"], **prf(n, 0, 0), "scored_on": "blocks"}, s
        kept += n
    assert kept < len(truth)  # the buildings in the buffer between the blocks count for neither
