"""Shared fixtures. PostGIS tests use a throw-away database cloned from the
`footprints_template` database that `make setup` prepares; they FAIL (never skip)
when the server is missing."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import luigi
import psycopg2
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "spacenet"


def pytest_collection_modifyitems(config, items):
    """Markers by what a test needs: ``postgis`` (uses the database fixtures) and ``slow``
    (end-to-end DAG runs under tests/pipeline). ``pytest -m "not postgis and not slow"`` is the
    pure suite."""
    for item in items:
        if {"pg", "pg_database"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgis)
        if "tests/pipeline/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.slow)


def _admin_conn():
    from footprints.db import conn_params

    p = conn_params()
    p["dbname"] = "postgres"
    conn = psycopg2.connect(connect_timeout=10, **p)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_database():
    """A fresh PostGIS database for this test session; PGDATABASE points at it."""
    name = f"footprints_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        admin = _admin_conn()
    except psycopg2.OperationalError as e:
        pytest.fail(f"PostGIS is required for these tests and is not reachable: {e}. Run `make setup`.")
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE footprints_template')
    old = os.environ.get("PGDATABASE")
    os.environ["PGDATABASE"] = name
    try:
        yield name
    finally:
        if old is None:
            os.environ.pop("PGDATABASE", None)
        else:
            os.environ["PGDATABASE"] = old
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg(pg_database):
    """A connection to the session's database, with every table emptied first."""
    from footprints import db

    conn = db.connect()
    db.ensure_schema(conn)
    with conn.cursor() as cur:
        cur.execute("TRUNCATE images, tiles, labels, predictions, buildings, table_updates RESTART IDENTITY")
    conn.commit()
    yield conn
    conn.rollback()
    conn.close()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    wd = tmp_path / "work"
    wd.mkdir()
    monkeypatch.setenv("FOOTPRINTS_WORKDIR", str(wd))
    return wd


@pytest.fixture
def luigi_config():
    """Set luigi.cfg values for one test: ``luigi_config(section, option, value)``; restored after."""
    cfg = luigi.configuration.get_config()
    saved = []

    def set_(section, option, value):
        had = cfg.has_option(section, option)
        saved.append((section, option, cfg.get(section, option) if had else None, had))
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg.set(section, option, str(value))

    yield set_
    for section, option, value, had in reversed(saved):
        if had:
            cfg.set(section, option, value)
        else:
            cfg.remove_option(section, option)


@pytest.fixture(scope="session")
def fixtures_dir():
    assert FIXTURES.is_dir(), f"shared fixtures missing at {FIXTURES}"
    return FIXTURES
