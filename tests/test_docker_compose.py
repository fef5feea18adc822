"""The compose file is small but must stay right: no Docker engine runs here, so parse it."""
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_ports_volumes():
    c = _compose()
    s = c["services"]
    assert {"postgis", "scheduler", "worker", "worker-gpu"} <= set(s)
    assert s["postgis"]["image"].startswith("postgis/postgis")
    assert any(v.startswith("pgdata:") for v in s["postgis"]["volumes"]) and "pgdata" in c["volumes"]
    # luigid on 8082, reachable only from the host's loopback
    assert s["scheduler"]["ports"] == ["127.0.0.1:8082:8082"]
    assert "luigid" in s["scheduler"]["command"]
    cmd = s["worker"]["command"]
    assert cmd[:4] == ["luigi", "--module", "pipeline", "RunAll"]
    assert cmd[cmd.index("--scheduler-host") + 1] == "scheduler"
    assert "ports" not in s["worker"], "workers must be scalable with --scale worker=N (no fixed host ports)"
    assert "container_name" not in s["worker"]
    gpu = s["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_credentials_come_from_env_file_not_the_repo():
    text = (REPO / "docker-compose.yml").read_text()
    c = _compose()
    pg_env = c["services"]["postgis"]["environment"]
    assert pg_env["POSTGRES_PASSWORD"].startswith("${PGPASSWORD")
    worker_env = c["services"]["worker"]["environment"]
    for var in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "FOOTPRINTS_WORKDIR"):
        assert var in worker_env
    assert worker_env["PGHOST"] == "postgis"
    # every ${VAR} the file reads is documented in .env.example
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    example = {line.split("=")[0] for line in (REPO / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example, used - example
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert (REPO / "Dockerfile").exists()
