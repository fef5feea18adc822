"""Luigi's own scale-out, as users run it: one luigid and workers on two hosts sharing PostGIS
and a filesystem. The hosts are two network namespaces joined by a veth pair; luigid (recording
task history in PostgreSQL, luigid.cfg) and a private PostGIS server listen on host A's veth
address; a worker ``RunAll --workers 2`` runs in each namespace on the same workdir. Every task
must run exactly once, and the outputs must equal a single-worker run's."""
from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = ["--model-name", "oracle", "--data-demo-scenes", "2", "--data-demo-size", "512",
        "--tiling-tile-size", "256", "--tiling-overlap", "32", "--tiling-workers", "1"]
RUNNING = re.compile(r"Worker\(.*\) running\s+(\S.*)$")


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: {"a": (ns, address), "b": ..., "subnet": cidr}."""
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run `make test` as root (CI does)")
    tag = uuid.uuid4().hex[:6]
    net = f"10.{random.randint(100, 250)}.{random.randint(1, 250)}"
    hosts = {"a": (f"fpa{tag}", f"{net}.1"), "b": (f"fpb{tag}", f"{net}.2"), "subnet": f"{net}.0/24"}
    made = []
    try:
        for key in ("a", "b"):
            _ip("netns", "add", hosts[key][0])
            made.append(hosts[key][0])
        _ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        for key, dev in (("a", f"va{tag}"), ("b", f"vb{tag}")):
            ns, addr = hosts[key]
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield hosts
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _wait_port(ns: str, addr: str, port: int, timeout: float = 60):
    probe = f"import socket; socket.create_connection(({addr!r}, {port}), 1)"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe], capture_output=True).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"nothing listens on {addr}:{port} in {ns}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_hosts_one_luigid_every_task_once_and_outputs_equal_one_worker(two_hosts, fresh_db, snapshot,
                                                                           private_cluster_class, tmp_path):
    (ns_a, addr_a), (ns_b, _) = two_hosts["a"], two_hosts["b"]
    cluster = private_cluster_class(_free_port(), listen=(addr_a,), hba=(two_hosts["subnet"],), netns=ns_a)
    luigid = None
    try:
        cluster.init()
        pg_env = {**cluster.env(), "PGHOST": addr_a}
        base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        sched_port = _free_port()
        (tmp_path / "luigid").mkdir()
        luigid = subprocess.Popen(
            ["ip", "netns", "exec", ns_a, str(Path(sys.executable).with_name("luigid")), "--address", addr_a,
             "--port", str(sched_port), "--logdir", str(tmp_path / "luigid"), "--state-path",
             str(tmp_path / "luigid" / "state.pickle")],
            cwd=REPO, env={**base, **pg_env, "LUIGI_CONFIG_PATH": str(REPO / "luigid.cfg")},
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "luigid.log", "w"))
        _wait_port(ns_a, addr_a, sched_port)

        work = tmp_path / "shared"
        env = {**base, **pg_env, "FOOTPRINTS_WORKDIR": str(work)}
        cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "RunAll", "--workers", "2",
               "--scheduler-host", addr_a, "--scheduler-port", str(sched_port), "--worker-keep-alive", *DEMO]
        logs = {ns: tmp_path / f"worker-{ns}.log" for ns in (ns_a, ns_b)}
        # each host has its own /tmp: luigi's "already running" lock is per host
        workers = [subprocess.Popen(["ip", "netns", "exec", ns, *cmd, "--lock-pid-dir", str(tmp_path / f"lock-{ns}")],
                                    cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(logs[ns], "w"))
                   for ns in (ns_a, ns_b)]
        for w, ns in zip(workers, (ns_a, ns_b)):
            # luigi.cfg [retcode]: 10 / 25 say that another worker ran (or was running) some of the tasks
            assert w.wait(timeout=300) in (0, 10, 25), logs[ns].read_text()[-3000:]
        assert "ERROR" not in logs[ns_a].read_text() + logs[ns_b].read_text()
        assert list((work / "outputs").rglob("metrics.json")), "RunAll completed"

        # every task ran exactly once: the workers' logs ...
        ran = {ns: [m.group(1) for line in logs[ns].read_text().splitlines() if (m := RUNNING.search(line))]
               for ns in logs}
        counts = Counter(t for v in ran.values() for t in v)
        assert counts and max(counts.values()) == 1, [t for t, n in counts.items() if n > 1]
        # which host ran what depends on timing (a host that starts late under load may find every
        # task taken); exactly-once is what the shared luigid guarantees, and its history shows it
        assert any(ran.values()), {ns: len(v) for ns, v in ran.items()}
        print(f"\n[multihost] tasks run per host: { {ns: len(v) for ns, v in ran.items()} }")
        # ... and luigid's task history in PostgreSQL
        history = cluster.psql("footprints", "SELECT t.name, t.task_id, count(*) FROM task_events e "
                                             "JOIN tasks t ON t.id = e.task_id WHERE e.event_name = 'RUNNING' "
                                             "GROUP BY 1, 2").splitlines()
        runs = {line.split("|")[1]: int(line.split("|")[2]) for line in history}
        assert len(runs) == len(counts) and set(runs.values()) == {1}, history
        done = set(cluster.psql("footprints", "SELECT DISTINCT t.task_id FROM task_events e JOIN tasks t "
                                              "ON t.id = e.task_id WHERE e.event_name = 'DONE'").split())
        assert set(runs) <= done

        # the outputs equal a single worker's (local scheduler, another database and workdir)
        one = fresh_db()
        solo = tmp_path / "solo"
        proc = subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", "RunAll", "--local-scheduler",
                               "--workers", "1", *DEMO], cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "FOOTPRINTS_WORKDIR": str(solo), "PGDATABASE": one})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert snapshot.files(work) == snapshot.files(solo)
        assert _same_paths(_rows_in(cluster, work)) == _same_paths(snapshot.rows(one, solo))
    finally:
        if luigid is not None:
            luigid.terminate()
            luigid.wait(timeout=30)
        cluster.destroy()


def _same_paths(rows: dict) -> dict:
    """LoadLabels' marker keys the label file's absolute path (here in each run's own workdir)."""
    return {t: sorted(re.sub(r'"labels:([^:"]+):[0-9a-f]{12}"', r'"labels:\1:<path>"', r) for r in v) for t, v in rows.items()}


def _rows_in(cluster, work: Path) -> dict:
    """The rows of the private server, read from inside host A's namespace (it listens there only)."""
    code = ("import json, sys, pathlib; sys.path.insert(0, sys.argv[1]); from conftest import rows; "
            "print(json.dumps(rows('footprints', pathlib.Path(sys.argv[2]), host=sys.argv[3], port=int(sys.argv[4]))))")
    out = subprocess.run(["ip", "netns", "exec", cluster.netns, sys.executable, "-c", code, str(Path(__file__).parent),
                          str(work), cluster.host, str(cluster.port)], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout)
