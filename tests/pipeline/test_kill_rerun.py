"""Killing a stage with SIGKILL mid-way and rerunning gives the same result as a clean run."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import luigi
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

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
