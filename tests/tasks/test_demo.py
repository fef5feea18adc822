"""tasks/demo.py: GenerateDemo writes the configured demo dataset atomically (the scenes
themselves are tested in tests/footprints/demo/)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import luigi
import pytest
import rasterio

from tasks import demo
from tasks.demo import GenerateDemo
from tasks.keys import demo_dir
from tasks.sources import demo_image_path, demo_label_path

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- the Luigi task


DEMO_CFG = {"demo_scenes": "2", "demo_size": "96", "demo_seed": "7"}


@pytest.fixture
def demo_config(monkeypatch, tmp_path):
    monkeypatch.setenv("FOOTPRINTS_WORKDIR", str(tmp_path / "work"))
    cfg = luigi.configuration.get_config()
    if not cfg.has_section("data"):
        cfg.add_section("data")
    saved = {k: cfg.get("data", k, None) for k in DEMO_CFG}
    for k, v in DEMO_CFG.items():
        cfg.set("data", k, v)
    yield tmp_path / "work"
    for k, v in saved.items():
        if v is None:
            cfg.remove_option("data", k)
        else:
            cfg.set("data", k, v)


def test_generate_demo_task(demo_config):
    assert demo_dir() == demo_config / "demo" / "n2_s96_seed7"
    assert luigi.build([GenerateDemo()], local_scheduler=True, log_level="WARNING")
    manifest = json.loads((demo_dir() / "manifest.json").read_text())
    assert GenerateDemo().complete()
    assert [s["name"] for s in manifest["scenes"]] == ["demo_00", "demo_01"]
    for s in manifest["scenes"]:
        assert demo_image_path(s["name"]) == demo_dir() / s["image"]
        assert demo_label_path(s["name"]) == demo_dir() / s["labels"]
        with rasterio.open(demo_image_path(s["name"])) as src:
            assert (src.width, src.height, src.count) == (96, 96, 3)
            assert tuple(src.transform)[:6] == tuple(s["transform"])
        fc = json.loads(demo_label_path(s["name"]).read_text())
        assert len(fc["features"]) == s["n_buildings"] >= 1
    assert manifest["scenes"][0]["origin"] != manifest["scenes"][1]["origin"]
    assert sorted(p.name for p in (demo_config / "demo").iterdir()) == ["n2_s96_seed7"]
    # a rerun changes nothing
    before = {p: p.stat().st_mtime_ns for p in demo_dir().rglob("*")}
    assert luigi.build([GenerateDemo()], local_scheduler=True, log_level="WARNING")
    assert {p: p.stat().st_mtime_ns for p in demo_dir().rglob("*")} == before


def test_generate_demo_failure_leaves_nothing(demo_config, monkeypatch):
    calls = []
    real = demo.generate_scene

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(demo, "generate_scene", flaky)
    stale = demo_config / "demo" / ".n2_s96_seed7.tmp-999999999-abc"
    stale.mkdir(parents=True)
    assert not luigi.build([GenerateDemo()], local_scheduler=True, log_level="CRITICAL")
    assert len(calls) == 2
    assert not demo_dir().exists()
    assert list((demo_config / "demo").iterdir()) == []  # stale temp dir of a dead process removed too


def _luigi_cmd(workdir: Path, scenes: int, size: int):
    code = ("import luigi, sys; from tasks.demo import GenerateDemo; "
            "sys.exit(0 if luigi.build([GenerateDemo()], local_scheduler=True, log_level='WARNING') else 1)")
    env = {**os.environ, "FOOTPRINTS_WORKDIR": str(workdir), "PYTHONPATH": str(REPO)}
    env["LUIGI_CONFIG_PATH"] = str(workdir.parent / f"{workdir.name}.cfg")
    workdir.parent.mkdir(parents=True, exist_ok=True)
    Path(env["LUIGI_CONFIG_PATH"]).write_text(
        f"[data]\ndemo_scenes = {scenes}\ndemo_size = {size}\ndemo_seed = 3\n")
    return [sys.executable, "-c", code], env


def test_kill_9_then_rerun_equals_clean_run(tmp_path):
    scenes, size = 6, 256
    cmd, env = _luigi_cmd(tmp_path / "killed", scenes, size)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True)
    parent = tmp_path / "killed" / "demo"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if list(parent.glob(".n6_s256_seed3.tmp-*/images/demo_00.tif")):
                break
            assert proc.poll() is None, "generation finished before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    final = parent / "n6_s256_seed3"
    assert not final.exists()  # nothing half-written in place
    assert subprocess.run(cmd, env=env, cwd=REPO).returncode == 0
    clean_cmd, clean_env = _luigi_cmd(tmp_path / "clean", scenes, size)
    assert subprocess.run(clean_cmd, env=clean_env, cwd=REPO).returncode == 0
    clean = tmp_path / "clean" / "demo" / "n6_s256_seed3"
    files = sorted(p.relative_to(clean) for p in clean.rglob("*") if p.is_file())
    assert sorted(p.relative_to(final) for p in final.rglob("*") if p.is_file()) == files
    assert len(files) == 2 * scenes + 1
    for rel in files:
        assert (final / rel).read_bytes() == (clean / rel).read_bytes(), rel
    assert [p.name for p in parent.iterdir()] == ["n6_s256_seed3"]  # the killed run's temp dir is gone
