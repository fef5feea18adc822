"""Killing a stage with SIGKILL mid-way and rerunning gives the same result as a clean run."""
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import luigi
import numpy as np
import psycopg2
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from footprints.db import conn_params

REPO = Path(__file__).resolve().parents[2]


def _scene(tmp_path):
    rng = np.random.default_rng(7)
    img = tmp_path / "data" / "scene.tif"
    img.parent.mkdir()
    arr = rng.integers(0, 255, (3, 1536, 1536), dtype=np.uint8)
    with rasterio.open(img, "w", driver="GTiff", width=1536, height=1536, count=3, dtype="uint8",
                       crs=CRS.from_epsg(32616), transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
        dst.write(arr)
    feats = []
    for i in range(60):
        x, y = 500000 + rng.uniform(10, 740), 4000000 - rng.uniform(10, 740)
        ring = [[x, y], [x + 8, y], [x + 8, y + 6], [x, y + 6], [x, y]]
        feats.append({"type": "Feature", "properties": {"i": i}, "geometry": {"type": "Polygon", "coordinates": [ring]}})
    lab = tmp_path / "data" / "scene.geojson"
    lab.write_text(json.dumps({"type": "FeatureCollection", "features": feats,
                               "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}}))
    return img, lab


def _digest(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            if p.suffix == ".tif":
                with rasterio.open(p) as r:
                    out[str(p.relative_to(root))] = hashlib.sha1(r.read().tobytes() + str(r.transform).encode()).hexdigest()
            elif p.name == "index.json":
                d = json.loads(p.read_text())
                d.pop("source", None)
                out[str(p.relative_to(root))] = json.dumps(d, sort_keys=True)
    return out


def _counts(pg):
    with pg.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM tiles), (SELECT count(*) FROM labels), (SELECT count(*) FROM images)")
        return cur.fetchone()


def test_kill_9_mid_stage_then_rerun_equals_clean_run(pg, tmp_path, monkeypatch, luigi_config):
    img, lab = _scene(tmp_path)
    env = dict(os.environ, FOOTPRINTS_WORKDIR=str(tmp_path / "killed"))
    args = [sys.executable, "-m", "luigi", "--module", "pipeline", "MakeMasks", "--image", "scene",
            "--local-scheduler", "--data-images", str(img), "--data-labels", str(lab),
            "--tiling-tile-size", "64", "--tiling-overlap", "16", "--tiling-workers", "1"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tiles_root = tmp_path / "killed" / "tiles" / "scene"
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and proc.poll() is None:
        partial = [p for p in tiles_root.glob(".ts64_ov16.tmp-*")] if tiles_root.exists() else []
        if partial and len(list(partial[0].glob("*.tif"))) > 50:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    assert killed, "the stage finished before it could be killed; make the scene bigger"
    assert not (tiles_root / "ts64_ov16" / "index.json").exists()

    luigi_config("data", "images", str(img))
    luigi_config("data", "labels", str(lab))
    luigi_config("tiling", "tile_size", 64)
    luigi_config("tiling", "overlap", 16)
    from tasks.masks import MakeMasks

    monkeypatch.setenv("FOOTPRINTS_WORKDIR", str(tmp_path / "killed"))
    assert luigi.build([MakeMasks(image="scene")], local_scheduler=True, log_level="WARNING")
    killed_files, killed_rows = _digest(tmp_path / "killed"), _counts(pg)
    assert not list((tmp_path / "killed").rglob(".*tmp-*")), "temporary directories are cleaned up"

    with pg.cursor() as cur:
        cur.execute("TRUNCATE images, tiles, labels, table_updates")
    pg.commit()
    monkeypatch.setenv("FOOTPRINTS_WORKDIR", str(tmp_path / "clean"))
    assert luigi.build([MakeMasks(image="scene")], local_scheduler=True, log_level="WARNING")
    clean_files, clean_rows = _digest(tmp_path / "clean"), _counts(pg)
    assert killed_files == clean_files
    assert killed_rows == clean_rows and clean_rows[0] == 32 * 32 and clean_rows[1] == 60


# ---------------------------------------------------------------- kill -9 in every stage of RunAll

# Runs RunAll and SIGKILLs itself at the <n>-th moment that matters in stage <family>: a tile or
# mask written, a file about to be renamed into place (os.replace/os.rename: everything written,
# nothing visible yet), or a completion marker inserted but not committed.
KILLER = """
import os, signal, sys
import luigi, luigi.cmdline
import footprints.db, footprints.tiling, tasks.masks

family, nth = sys.argv[1], int(sys.argv[2])
state = {"task": None, "n": 0}

@luigi.Task.event_handler(luigi.Event.START)
def _started(task):
    state["task"] = task.task_family

def _hit():
    if state["task"] == family:
        state["n"] += 1
        if state["n"] >= nth:
            sys.stderr.write(f"KILLING {family} at moment {state['n']}\\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

def wrap(mod, name, before):
    real = getattr(mod, name)
    def hooked(*a, **k):
        if before:
            _hit()
        out = real(*a, **k)
        if not before:
            _hit()
        return out
    setattr(mod, name, hooked)

wrap(os, "replace", True)
wrap(os, "rename", True)
wrap(footprints.db, "touch_marker", False)
wrap(footprints.tiling, "write_tiff", False)
wrap(tasks.masks, "write_tiff", False)
luigi.cmdline.luigi_run(sys.argv[3:])
"""

# (DAG, the kills of one case: each (stage, moment) kills a run, the next run resumes; a last run finishes)
# "oracle": RunAll with the oracle model on one scene, one stage per case.
# "trained": RunAll on an image series (one AOI, two dates) with a U-Net trained for real (2 epochs of
# 8 crops, 4 filters: deterministic, see models/training.py) and the threshold tuned, so TrainModel,
# TuneThreshold and the tracking stages run. Its kills come one after another in one case, each run
# resuming the last (a case of its own each would cost a training each): TrainModel at moment 7, the
# first file of epoch 2 (epoch 1's six: best and last weights, optimizer, history.csv, curve,
# state.json), so the rerun resumes after epoch 1; then TuneThreshold, TrackBuildings, WriteTracks.
STAGES = [("oracle", [(stage, moment)]) for stage, moment in (
    ("TileImage", 7), ("LoadLabels", 1), ("MakeMasks", 9), ("SplitDataset", 1), ("PredictImage", 1),
    ("Polygonize", 1), ("DeduplicateBorders", 1), ("WriteOutputs", 2), ("WriteRunOutputs", 1), ("Evaluate", 1))]
STAGES += [("trained", [("TrainModel", 7), ("TuneThreshold", 1), ("TrackBuildings", 1), ("WriteTracks", 1)])]


def _small_scene(root: Path):
    rng = np.random.default_rng(11)
    root.mkdir(parents=True, exist_ok=True)
    img, lab = root / "scene.tif", root / "scene.geojson"
    with rasterio.open(img, "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8",
                       crs=CRS.from_epsg(32616), transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
        dst.write(rng.integers(0, 255, (3, 512, 512), dtype=np.uint8))
    feats = []
    for i in range(48):
        x, y = 500000 + 4 + (i % 8) * 31 + rng.uniform(0, 8), 4000000 - 12 - (i // 8) * 41 - rng.uniform(0, 8)
        ring = [[x, y], [x + 9, y], [x + 9, y + 7], [x, y + 7], [x, y]]
        feats.append({"type": "Feature", "properties": {"i": i}, "geometry": {"type": "Polygon", "coordinates": [ring]}})
    lab.write_text(json.dumps({"type": "FeatureCollection", "features": feats,
                               "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}}))
    return img, lab


SERIES = ("global_monthly_2018_01_mosaic_k1", "global_monthly_2018_02_mosaic_k1")  # [data] series_pattern's


def _series_scene(root: Path):
    """One AOI on two dates (SpaceNet 7 names): 512x512 px, buildings with an Id, a few gone on the
    second date."""
    rng = np.random.default_rng(5)
    root.mkdir(parents=True, exist_ok=True)
    spots = [(4 + (i % 8) * 31 + rng.uniform(0, 8), 12 + (i // 8) * 41 + rng.uniform(0, 8)) for i in range(40)]
    for d, stem in enumerate(SERIES):
        with rasterio.open(root / f"{stem}.tif", "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8",
                           crs=CRS.from_epsg(32616), transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
            dst.write(rng.integers(0, 255, (3, 512, 512), dtype=np.uint8))
        feats = []
        for i, (dx, dy) in enumerate(spots):
            if d and i % 9 == 0:
                continue  # demolished
            x, y = 500000 + dx, 4000000 - dy
            ring = [[x, y], [x + 9, y], [x + 9, y + 7], [x, y + 7], [x, y]]
            feats.append({"type": "Feature", "properties": {"Id": i},
                          "geometry": {"type": "Polygon", "coordinates": [ring]}})
        (root / f"{stem}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats, "crs": {
            "type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}}}))
    return root, root


def _run_all_args(img, lab, dag: str = "oracle"):
    model = (["--model-name", "oracle"] if dag == "oracle" else
             ["--train-epochs", "2", "--train-samples-per-epoch", "8", "--train-base-filters", "4", "--train-depth",
              "2", "--train-crop-size", "64", "--train-batch-size", "4", "--train-workers", "1",
              "--predict-engine", "keras"])  # no ONNX export (seconds per run; the engine is not the point)
    return ["--module", "pipeline", "RunAll", "--local-scheduler", "--workers", "1", *model,
            "--data-images", str(img), "--data-labels", str(lab), "--tiling-tile-size", "64",
            "--tiling-overlap", "16", "--tiling-workers", "1", "--split-method", "block", "--split-buffer", "4"]


def _luigi(args, workdir, dbname, kill=None):
    env = dict(os.environ, FOOTPRINTS_WORKDIR=str(workdir), PGDATABASE=dbname)
    cmd = [sys.executable, "-c", KILLER, *kill, *args] if kill else [sys.executable, "-m", "luigi", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _model_digest(path: Path) -> str:
    """A .keras file's architecture and weights (not its save date)."""
    h = hashlib.sha1()

    def add(name, obj):
        if isinstance(obj, h5py.Dataset):
            h.update(name.encode() + obj[()].tobytes())

    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as w:
        h.update(z.read("config.json"))
        w.visititems(add)
    return h.hexdigest()


def _comparable(files: dict, work: Path) -> dict:
    """``snapshot.files`` of a run with a trained model, less what differs between two clean runs
    on this machine although the model is the same (bit for bit): the .keras archive's save date
    (its weights and config are compared instead), model.json's seconds_this_run and TensorBoard's
    event files (named and stamped by wall time)."""
    out = {}
    for rel, digest in files.items():
        parts = Path(rel).parts
        if parts[0] == "models" and "logs" in parts:
            continue
        if parts[0] == "models" and parts[-1] == "model.keras":
            out[rel] = _model_digest(work / rel)
        elif parts[0] == "models" and parts[-1] == "model.json":
            d = json.loads((work / rel).read_text())
            d.pop("seconds_this_run")
            out[rel] = json.dumps(d, sort_keys=True).replace(str(work), "<workdir>")
        else:
            out[rel] = digest
    return out


def _dag_files(snapshot, dag: str, work: Path) -> dict:
    files = snapshot.files(work)
    return files if dag == "oracle" else _comparable(files, work)


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory, snapshot):
    """``clean_runs(dag)``: one uninterrupted RunAll of that DAG (made once): its data, files and rows."""
    admin = psycopg2.connect(**{**conn_params(), "dbname": "postgres"})
    admin.autocommit = True
    made, names = {}, []

    def get(dag: str) -> dict:
        if dag not in made:
            root = tmp_path_factory.mktemp(f"clean_{dag}")
            img, lab = (_small_scene if dag == "oracle" else _series_scene)(root / "data")
            name = f"footprints_clean_{dag}_{os.getpid()}"
            names.append(name)
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE footprints_template')
            proc = _luigi(_run_all_args(img, lab, dag), root / "work", name)
            assert proc.returncode == 0, proc.stderr[-3000:]
            made[dag] = {"data": (img, lab), "files": _dag_files(snapshot, dag, root / "work"),
                         "rows": snapshot.rows(name, root / "work")}
        return made[dag]

    try:
        yield get
    finally:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def clean_run(clean_runs):
    """The oracle DAG's clean run."""
    return clean_runs("oracle")


def _check_killed(stage: str, work: Path) -> None:
    """What a kill must have left for the rerun to resume from."""
    if stage == "TrainModel":  # epoch 1 committed, epoch 2 not: the rerun resumes after epoch 1
        (state,) = (work / "models").glob("*/checkpoints/state.json")
        assert json.loads(state.read_text())["epoch"] == 1
        assert not list((work / "models").glob("*/model.keras"))


@pytest.mark.parametrize("dag,kills", STAGES, ids=["+".join(s for s, _ in kills) for _, kills in STAGES])
def test_kill_9_in_every_stage_then_rerun_equals_clean_run(clean_runs, fresh_db, snapshot, tmp_path, dag, kills):
    clean = clean_runs(dag)
    img, lab = clean["data"]
    dbname, work = fresh_db(), tmp_path / "work"
    for stage, moment in kills:
        killed = _luigi(_run_all_args(img, lab, dag), work, dbname, kill=[stage, str(moment)])
        assert killed.returncode == -signal.SIGKILL, f"{stage} was never killed:\n{killed.stderr[-3000:]}"
        assert f"KILLING {stage}" in killed.stderr
        _check_killed(stage, work)
    rerun = _luigi(_run_all_args(img, lab, dag), work, dbname)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got_rows = snapshot.rows(dbname, work)
    for table, values in got_rows.items():
        assert len(values) == len(set(values)), f"duplicate rows in {table}"
        assert values == clean["rows"][table], table
    got = _dag_files(snapshot, dag, work)
    assert not [f for f in got if ".tmp-" in f], "temporaries of the killed runs are cleaned up"
    assert got == clean["files"]


# ---------------------------------------------------------------- PostgreSQL restarted mid-run

# Runs RunAll and restarts the PostgreSQL server (the command lines in $FP_TEST_RESTART) when stage
# <family> has written its rows and marker but not committed them.
RESTARTER = """
import json, os, subprocess, sys
import luigi, luigi.cmdline
import footprints.db

family = sys.argv[1]
stop, start = json.loads(os.environ["FP_TEST_RESTART"])
state = {"task": None, "done": False}

@luigi.Task.event_handler(luigi.Event.START)
def _started(task):
    state["task"] = task.task_family

real = footprints.db.touch_marker
def touch_marker(*a, **k):
    real(*a, **k)
    if state["task"] == family and not state["done"]:
        state["done"] = True
        sys.stderr.write(f"RESTARTING PostgreSQL in {family}\\n")
        subprocess.run(stop, check=True)
        subprocess.run(start, check=True)
footprints.db.touch_marker = touch_marker
luigi.cmdline.luigi_run(sys.argv[2:])
"""


@pytest.mark.parametrize("stage", ["LoadLabels", "DeduplicateBorders"])
def test_postgresql_restarted_mid_stage_fails_cleanly_and_a_rerun_equals_a_clean_run(
        clean_run, private_cluster, snapshot, tmp_path, stage):
    img, lab = clean_run["data"]
    work = tmp_path / "work"
    env = dict(os.environ, FOOTPRINTS_WORKDIR=str(work), **private_cluster.env(),
               FP_TEST_RESTART=json.dumps([private_cluster._as_owner(private_cluster.bindir / "pg_ctl", "-D",
                                                                     private_cluster.data, "-m", "fast", "-w", "stop"),
                                           private_cluster._as_owner(private_cluster.bindir / "pg_ctl", "-D",
                                                                     private_cluster.data, "-l", private_cluster.log,
                                                                     "-o", f"-p {private_cluster.port} -k {private_cluster.root}",
                                                                     "-w", "start")]))
    try:
        first = subprocess.run([sys.executable, "-c", RESTARTER, stage, *_run_all_args(img, lab)], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=300)
    finally:  # the server is always up again for what follows
        if private_cluster.run(private_cluster.bindir / "pg_isready", "-h", private_cluster.host, "-p",
                               private_cluster.port, check=False).returncode:
            private_cluster.start()
    assert f"RESTARTING PostgreSQL in {stage}" in first.stderr, first.stderr[-3000:]
    # the stage whose connection died failed cleanly (nothing of it committed), the others went on
    assert first.returncode != 0 and f"{stage}" in first.stderr
    assert "server closed the connection" in first.stderr or "terminating connection" in first.stderr
    rerun = subprocess.run([sys.executable, "-m", "luigi", *_run_all_args(img, lab)], cwd=REPO,
                           env={k: v for k, v in env.items() if k != "FP_TEST_RESTART"},
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got_rows = snapshot.rows("footprints", work, host=private_cluster.host, port=private_cluster.port)
    for table, values in got_rows.items():
        assert len(values) == len(set(values)), f"duplicate rows in {table}"
        assert values == clean_run["rows"][table], table
    assert snapshot.files(work) == clean_run["files"]
