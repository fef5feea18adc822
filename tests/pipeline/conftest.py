"""Fixtures of the end-to-end tests: throw-away databases cloned from ``footprints_template``,
and ``snapshot``: what a run leaves behind, in a form two runs can be compared by (the files of
a workdir: pixels of rasters, features of GeoPackages, text with the workdir's path taken out;
the rows of every table, volatile columns taken out)."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psycopg2
import pyogrio
import pytest
import rasterio
from PIL import Image

from footprints.db import conn_params


@pytest.fixture
def fresh_db():
    """``fresh_db()`` -> the name of a new, empty database (dropped after the test)."""
    admin = psycopg2.connect(**{**conn_params(), "dbname": "postgres"})
    admin.autocommit = True
    names = []

    def make() -> str:
        name = f"footprints_e2e_{uuid.uuid4().hex[:8]}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE footprints_template')
        names.append(name)
        return name

    yield make
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


TABLES = ("images", "tiles", "labels", "predictions", "buildings", "table_updates")
VOLATILE = ("id", "inserted", "batch")  # serial ids, timestamps, load batches


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def files(root: Path) -> dict[str, str]:
    """{relative path: digest} of every file under ``root`` (hidden ones too: a leftover
    temporary counts as a difference)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(root))
        if p.suffix == ".tif":
            with rasterio.open(p) as r:
                out[rel] = _sha(r.read().tobytes() + str(r.transform).encode() + str(r.crs).encode())
        elif p.suffix == ".png":
            out[rel] = _sha(np.asarray(Image.open(p)).tobytes())
        elif p.suffix == ".gpkg":
            df = pyogrio.read_dataframe(p)
            out[rel] = _sha(df.drop(columns="geometry").to_csv().encode() + b"".join(df.geometry.to_wkb()))
        elif p.suffix in (".json", ".geojson", ".csv", ".txt"):
            out[rel] = _sha(p.read_text().replace(str(root), "<workdir>").encode())
        else:
            out[rel] = _sha(p.read_bytes())
    return out


def rows(dbname: str, workdir: Path, **conn_overrides) -> dict[str, list[str]]:
    """{table: sorted rows as JSON text}, volatile columns out, the workdir's path taken out."""
    conn = psycopg2.connect(**{**conn_params(), "dbname": dbname, **conn_overrides})
    out = {}
    try:
        with conn.cursor() as cur:
            for t in TABLES:
                minus = " - ".join(f"'{c}'" for c in VOLATILE)
                cur.execute(f"SELECT (to_jsonb(x) - {minus})::text FROM {t} x")  # noqa: S608 - fixed names
                out[t] = sorted(r[0].replace(str(workdir), "<workdir>") for r in cur.fetchall())
    finally:
        conn.close()
    return out


@pytest.fixture(scope="session")
def snapshot():
    """``snapshot.files(workdir)``, ``snapshot.rows(dbname, workdir)``."""
    return SimpleNamespace(files=files, rows=rows)


# ---------------------------------------------------------------- a private PostgreSQL server


def _pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    assert found, "PostgreSQL server binaries not found under /usr/lib/postgresql (run `make setup`)"
    return found[-1].parent


class PrivateCluster:
    """A throw-away PostgreSQL + PostGIS server of its own (a data directory under /tmp, run as
    ``postgres`` when the tests run as root), so a test can stop, restart or re-address it without
    touching the server that other tests and users share. ``netns``: start it inside that network
    namespace; ``listen``: the addresses it listens on; ``hba``: extra trusted CIDRs."""

    def __init__(self, port: int, listen=("127.0.0.1",), hba=(), netns: str | None = None):
        self.port, self.listen, self.hba, self.netns = port, list(listen), list(hba), netns
        self.bindir = _pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="fp_pgcluster_"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.host = self.listen[0]

    def _as_owner(self, *cmd) -> list[str]:
        cmd = [str(c) for c in cmd]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + cmd

    def run(self, *cmd, check=True):
        return subprocess.run(self._as_owner(*cmd), check=check, capture_output=True, text=True, timeout=120)

    def init(self):
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.run(self.bindir / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(self.data / "pg_hba.conf", "a") as f:
            for cidr in self.hba:
                f.write(f"host all all {cidr} trust\n")
        self.start()
        for sql in ("CREATE ROLE footprints LOGIN CREATEDB", "CREATE DATABASE footprints OWNER footprints"):
            self.psql("postgres", sql)
        self.psql("footprints", "CREATE EXTENSION postgis")
        return self

    def psql(self, db: str, sql: str) -> str:
        return self.run("psql", "-X", "-q", "-At", "-h", self.host, "-p", self.port, "-U", "postgres", "-d", db,
                        "-c", sql).stdout

    def start(self):
        opts = f"-p {self.port} -k {self.root} -c listen_addresses={','.join(self.listen)} -c fsync=off"
        self.run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60", "start")

    def stop(self):
        self.run(self.bindir / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict:
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGDATABASE": "footprints", "PGUSER": "footprints"}

    def connect(self):
        return psycopg2.connect(host=self.host, port=self.port, dbname="footprints", user="footprints")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_cluster():
    """A started :class:`PrivateCluster` on a free port of 127.0.0.1 (stopped and removed after)."""
    cluster = PrivateCluster(free_port()).init()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def private_cluster_class():
    """:class:`PrivateCluster` itself, for tests that start one their own way (in a namespace)."""
    return PrivateCluster
