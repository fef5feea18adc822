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

import psycopg2
import pytest

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
