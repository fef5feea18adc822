"""The temporal demo end to end: with the oracle model (the rasterized labels) every building of
every date comes out whole, so tracking must give each the id its label has, and SCOT = 1.0.
One small scene on 4 dates (a cloud on one of them, buildings added and demolished) in a fresh
workdir and an empty PostGIS database, as a user would run it."""
import csv
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
import shapely.geometry as sg

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_db():
    from footprints.db import conn_params

    p = {**conn_params(), "dbname": "postgres"}
    admin = psycopg2.connect(**p)
    admin.autocommit = True
    name = f"footprints_series_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE footprints_template')
    yield name
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def _run(tmp_path, db, *extra):
    env = dict(os.environ, FOOTPRINTS_WORKDIR=str(tmp_path / "work"), PGDATABASE=db)
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "RunAll", "--local-scheduler", "--workers", "2",
           "--model-name", "oracle", "--data-demo-dates", "4", "--data-demo-scenes", "1", "--data-demo-size", "512",
           "--tiling-tile-size", "256", "--tiling-overlap", "32", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "This progress looks :)" in proc.stderr + proc.stdout
    return proc


def test_oracle_series_scot_is_one(tmp_path, empty_db):
    _run(tmp_path, empty_db)
    work = tmp_path / "work"
    manifest = json.loads(next((work / "demo").glob("*_d4/manifest.json")).read_text())
    scenes = manifest["scenes"]
    assert [s["date"] for s in scenes] == ["2018_01", "2018_02", "2018_03", "2018_04"]
    assert sum(s["new"] for s in scenes) > 0 and sum(s["hidden_by_cloud"] for s in scenes) > 0
    assert any(s["demolished"] for s in scenes)

    (metrics,) = (work / "outputs").rglob("metrics.json")
    assert metrics.parent.name.endswith("_greedy_iou0.25")  # each tracking has its own outputs
    m = json.loads(metrics.read_text())
    assert m["splits"]["all"]["f1"] == 1.0, m["splits"]["all"]
    scot = m["scot"]
    assert scot["total"]["scot"] == 1.0, scot
    aoi = scot["by_aoi"]["demo_00"]
    assert aoi["tracking"] == 1.0 and aoi["change"] == 1.0 and aoi["mismatches"] == 0
    assert aoi["change_tp"] == sum(s["new"] for s in scenes)

    # every per-date output carries the persistent id: the label's Id, through a bijection
    images = metrics.parent / "images"
    mapping = {}
    for s in scenes:
        feats = json.loads((images / f"{s['name']}.geojson").read_text())["features"]
        assert len(feats) == s["n_buildings"]
        with open(images / f"{s['name']}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and "id" in rows[0] and {int(r["id"]) for r in rows} == {f["properties"]["id"] for f in feats}
        labels = json.loads((work / "demo" / manifest["key"] / s["labels"]).read_text())["features"]
        truth = [(lab["properties"]["Id"], sg.shape(lab["geometry"])) for lab in labels]
        for f in feats:
            g = sg.shape(f["geometry"])
            (tid,) = [i for i, t in truth if t.intersection(g).area > 0.5 * t.area]
            assert mapping.setdefault(f["properties"]["id"], tid) == tid
    assert len(set(mapping.values())) == len(mapping)

    with open(metrics.parent / "demo_00_tracks.csv", newline="") as f:
        tracks = list(csv.DictReader(f))
    assert len(tracks) == len(mapping)
    assert {"id", "first_date", "last_date", "n_dates", "area_2018_01", "area_2018_04"} <= set(tracks[0])

    # the other tracking over the same buildings: its own outputs (the buildings are reused)
    _run(tmp_path, empty_db, "--track-method", "hungarian")
    (other,) = (work / "outputs").glob("*_hungarian_iou0.25/metrics.json")
    assert json.loads(other.read_text())["scot"]["total"]["scot"] == 1.0
