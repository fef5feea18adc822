"""Building types end to end: the typed demo (buildings with a condition: Complete, Incomplete,
Foundation) through the oracle must come out with every building of the right class,
class_mean_f1 = 1.0, and the class columns in the outputs. Small scenes keep it near half a minute."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_typed_demo_oracle_gives_class_mean_f1_one(tmp_path, fresh_db):
    env = dict(os.environ, FOOTPRINTS_WORKDIR=str(tmp_path / "work"), PGDATABASE=fresh_db())
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "RunAll", "--local-scheduler",
           "--model-name", "oracle", "--data-demo-typed", "true", "--data-demo-scenes", "2",
           "--data-demo-size", "512", "--tiling-tile-size", "256", "--tiling-overlap", "32"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = (tmp_path / "work" / "outputs").rglob("metrics.json")
    m = json.loads(metrics.read_text())
    assert m["splits"]["all"]["f1"] == 1.0
    assert m["class_mean_f1"] == 1.0, m["by_class"]
    assert list(m["by_class"]) == ["Complete", "Incomplete", "Foundation"]
    assert all(v["tp"] > 0 and v["fp"] == v["fn"] == 0 for v in m["by_class"].values()), m["by_class"]
    # labels without a condition took the default class, and the report says how many
    reports = [json.loads(p.read_text()) for p in (tmp_path / "work" / "labels").glob("*.report.json")]
    assert {r["class_field"] for r in reports} == {"condition"} and sum(r["defaulted"] for r in reports) > 0
    with open(metrics.parent / "images" / "demo_00.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:5] == ["ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo", "Confidence"]
    assert header[5:] == ["class", "conf_complete", "conf_incomplete", "conf_foundation"]
    props = json.loads((metrics.parent / "images" / "demo_00.geojson").read_text())["features"][0]["properties"]
    assert props["class"] in ("Complete", "Incomplete", "Foundation") and props[f"conf_{props['class'].lower()}"] == 1.0
