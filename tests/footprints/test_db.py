"""footprints/db.py: a database the pipeline cannot use is caught at the first connection, with
what to run. Real databases: one without PostGIS (made by the pipeline's own role), one owned by
another role (made by the PostgreSQL superuser, as a DBA would; PostgreSQL 15+ then leaves the
pipeline's role without CREATE on schema public). Everything made here is dropped again."""
from __future__ import annotations

import os
import socket
import time
import uuid

import psycopg2
import pytest

from footprints import db
from footprints.errors import DatabaseSetupError

pytestmark = pytest.mark.postgis


def _connect_admin(**params):
    try:
        conn = psycopg2.connect(connect_timeout=10, **params)
    except psycopg2.OperationalError as e:
        pytest.fail(f"PostgreSQL is required for these tests and is not reachable as {params.get('user')!r}: "
                    f"{e}. Run `make setup`.")
    conn.autocommit = True
    return conn


@pytest.fixture
def role_admin():
    """The pipeline's own role (CREATEDB) on the ``postgres`` database."""
    conn = _connect_admin(**{**db.conn_params(), "dbname": "postgres"})
    yield conn
    conn.close()


@pytest.fixture
def superuser():
    """The PostgreSQL superuser (``PGSUPERUSER``, default postgres; trust auth on 127.0.0.1, as
    scripts/setup.sh uses it)."""
    p = db.conn_params()
    params = {"host": p["host"], "port": p["port"], "dbname": "postgres",
              "user": os.environ.get("PGSUPERUSER", "postgres")}
    conn = _connect_admin(**params)
    yield conn
    conn.close()


def test_database_without_postgis_says_create_extension(role_admin):
    name = f"footprints_nopostgis_{uuid.uuid4().hex[:8]}"
    with role_admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        with pytest.raises(DatabaseSetupError) as e:  # caught at the first connection
            db.connect(dbname=name)
        conn = db.connect(ensure=False, dbname=name)
        try:
            with pytest.raises(DatabaseSetupError):
                db.ensure_schema(conn)
        finally:
            conn.close()
        msg = str(e.value)
        assert f"database {name!r}" in msg and "postgis extension is not installed" in msg
        assert "CREATE EXTENSION postgis" in msg and "superuser" in msg and "\n" not in msg
    finally:
        with role_admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_database_of_another_role_says_grant_create(superuser):
    other = f"footprints_owner_{uuid.uuid4().hex[:8]}"
    name = f"footprints_foreign_{uuid.uuid4().hex[:8]}"
    me = db.conn_params()["user"]
    with superuser.cursor() as cur:
        cur.execute(f'CREATE ROLE "{other}" NOLOGIN')
        cur.execute(f'CREATE DATABASE "{name}" OWNER "{other}" TEMPLATE footprints_template')  # has PostGIS
    try:
        with pytest.raises(DatabaseSetupError) as e:  # caught at the first connection
            db.connect(dbname=name)
        conn = db.connect(ensure=False, dbname=name)
        try:
            msg = str(e.value)
            assert "cannot create tables in schema 'public'" in msg and "\n" not in msg
            assert f"GRANT CREATE ON SCHEMA public TO {me}" in msg and "make setup" in msg
            # the advice works
            su = _connect_admin(host=superuser.info.host, port=superuser.info.port, user=superuser.info.user,
                                dbname=name)
            with su.cursor() as cur:
                cur.execute(f'GRANT CREATE ON SCHEMA public TO "{me}"')
            su.close()
            db.ensure_schema(conn)
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('labels') IS NOT NULL")
                assert cur.fetchone()[0]
        finally:
            conn.close()
    finally:
        with superuser.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{other}"')


def test_usable_database_passes_the_check(pg):
    db.check_database(pg)  # the test database: PostGIS, owned by the pipeline's role


def test_first_connection_upgrades_an_older_schema(pg_database):
    """A database made by an older release (labels without the ``class`` column) is brought up
    to date by the first connection of a process, before any task reads from it."""
    conn = db.connect()
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE labels DROP COLUMN IF EXISTS class CASCADE")
    conn.commit()
    conn.close()
    db._SCHEMA_READY.clear()  # a new process
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_attribute WHERE attrelid = 'labels'::regclass AND attname = 'class'")
            assert cur.fetchone() is not None
    finally:
        conn.close()


# ---------------------------------------------------------------- a server that is down (issue 11)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _counting_connect(monkeypatch, fail_first: int = 0):
    """psycopg2.connect, counted; the first ``fail_first`` calls refused as by a stopped server."""
    calls, real = [], psycopg2.connect

    def connect(*args, **kwargs):
        calls.append(time.monotonic())
        if len(calls) <= fail_first:
            raise psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: '
                                            "Connection refused\n\tIs the server running on that host?\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(db.psycopg2, "connect", connect)
    return calls


def test_a_server_that_is_down_is_retried_with_backoff_then_named(monkeypatch):
    """Nothing listens on the port: connect retries for FOOTPRINTS_PG_CONNECT_WAIT seconds, the
    waits growing, then raises one line naming the server, the wait and the setting."""
    monkeypatch.setenv(db.CONNECT_WAIT_ENV, "1.5")
    port = _unused_port()
    calls = _counting_connect(monkeypatch)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        db.connect(ensure=False, port=port)
    took = time.monotonic() - t0
    msg = str(e.value)
    assert 1.4 <= took < 8, took
    assert len(calls) >= 3, calls
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[-1] > gaps[0], gaps  # exponential backoff
    assert msg.startswith(f"cannot connect to PostGIS at 127.0.0.1:{port} ") and "Connection refused" in msg
    assert "retried for " in msg and db.CONNECT_WAIT_ENV in msg and "make setup" in msg and "\n" not in msg


def test_a_server_back_during_the_wait_is_connected(monkeypatch, pg_database):
    """Refused twice (a restart), then the server answers: the connection is made."""
    monkeypatch.setenv(db.CONNECT_WAIT_ENV, "30")
    calls = _counting_connect(monkeypatch, fail_first=2)
    conn = db.connect(ensure=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    assert len(calls) == 3


def test_other_connection_errors_and_a_zero_wait_are_not_retried(monkeypatch):
    calls = _counting_connect(monkeypatch)
    monkeypatch.setenv(db.CONNECT_WAIT_ENV, "30")
    with pytest.raises(RuntimeError, match="does not exist") as e:  # no such database: waiting will not help
        db.connect(ensure=False, dbname=f"footprints_missing_{uuid.uuid4().hex[:8]}")
    assert len(calls) == 1 and "retried" not in str(e.value)
    monkeypatch.setenv(db.CONNECT_WAIT_ENV, "0")
    with pytest.raises(RuntimeError, match="Connection refused"):
        db.connect(ensure=False, port=_unused_port())
    assert len(calls) == 2
