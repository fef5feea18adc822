"""PostGIS access: connections from libpq environment variables, the SQL files, completion
markers (rows committed with the data they mark), SRIDs."""
from __future__ import annotations

import functools
import importlib.resources
import os
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extras
import tenacity
from psycopg2 import sql as psql
from pyproj import CRS

from footprints.errors import DatabaseSetupError


def sql_dir() -> Path:
    """The SQL files: the ``footprints.sql`` package data (top-level ``sql/`` in the source tree,
    mapped into the package by setup.py so wheels carry it)."""
    try:
        return Path(str(importlib.resources.files("footprints.sql")))
    except ModuleNotFoundError:  # a source tree on sys.path without `pip install`
        return Path(__file__).resolve().parent.parent / "sql"

MARKER_TABLE = "table_updates"

DEFAULTS = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGDATABASE": "footprints", "PGUSER": "footprints"}


def conn_params() -> dict:
    """libpq settings from PGHOST/PGPORT/PGDATABASE/PGUSER/PGPASSWORD with local defaults."""
    env = {k: os.environ.get(k) or v for k, v in DEFAULTS.items()}
    params = {"host": env["PGHOST"], "port": int(env["PGPORT"]), "dbname": env["PGDATABASE"], "user": env["PGUSER"]}
    if os.environ.get("PGPASSWORD"):
        params["password"] = os.environ["PGPASSWORD"]
    return params


# databases whose schema this process has brought up to date (host, port, dbname)
_SCHEMA_READY: set = set()


# a server that is down, starting or stopping (a restart, a failover): worth waiting for
_TRANSIENT = ("connection refused", "the database system is starting up", "the database system is shutting down",
              "the database system is in recovery mode", "no such file or directory")
CONNECT_WAIT_ENV = "FOOTPRINTS_PG_CONNECT_WAIT"
CONNECT_WAIT_DEFAULT = 30.0


def connect_wait() -> float:
    """Seconds ``connect`` keeps retrying a server that is down, starting up or shutting down:
    ``FOOTPRINTS_PG_CONNECT_WAIT`` (0: no retry), default 30."""
    raw = os.environ.get(CONNECT_WAIT_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else CONNECT_WAIT_DEFAULT
    except ValueError:
        raise ValueError(f"{CONNECT_WAIT_ENV}={raw!r} is not a number of seconds") from None


def transient(error: BaseException) -> bool:
    """A connection error that a wait may cure: refused, or the server starting or stopping."""
    return isinstance(error, psycopg2.OperationalError) and any(t in str(error).lower() for t in _TRANSIENT)


def _connect_retrying(params: dict):
    """``psycopg2.connect``, retried with exponential backoff (0.25 s doubling, at most 5 s
    apart) for ``connect_wait()`` seconds while the error is ``transient``. Returns the
    connection and the attempts made."""
    wait = connect_wait()
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient),
        stop=tenacity.stop_after_delay(wait) if wait > 0 else tenacity.stop_after_attempt(1),
        wait=tenacity.wait_exponential(multiplier=0.25, max=5.0),
        reraise=True)
    attempts = 0
    for attempt in retrying:
        with attempt:
            attempts = attempt.retry_state.attempt_number
            return psycopg2.connect(connect_timeout=10, application_name="footprints", **params), attempts
    raise AssertionError("unreachable: tenacity returns or re-raises")  # pragma: no cover


def connect(ensure: bool = True, **overrides):
    """A new psycopg2 connection (autocommit off). Errors name the server and database.

    A server that refuses connections, or is starting up or shutting down (a restart), is
    waited for: retried with backoff for ``FOOTPRINTS_PG_CONNECT_WAIT`` seconds (default 30),
    then the error says how long it was tried.

    The first connection of a process to a database checks it (PostGIS, rights) and brings the
    schema up to date (:func:`ensure_schema`), so a database made by an older release gains new
    tables and columns before any task reads them; ``ensure=False`` skips that."""
    params = {**conn_params(), **overrides}
    t0 = time.monotonic()
    try:
        conn, _ = _connect_retrying(params)
    except psycopg2.OperationalError as e:
        waited = ""
        if transient(e):
            waited = (f" (retried for {time.monotonic() - t0:.0f} s; {CONNECT_WAIT_ENV} sets how long to wait "
                      f"for a server that is down or restarting)")
        raise RuntimeError(
            f"cannot connect to PostGIS at {params['host']}:{params['port']} database {params['dbname']!r} "
            f"as {params['user']!r}: {' '.join(str(e).split())}{waited} -- run `make setup` or set "
            f"PGHOST/PGDATABASE/PGUSER"
        ) from e
    key = (params["host"], params["port"], params["dbname"])
    if ensure and key not in _SCHEMA_READY:
        try:
            ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        _SCHEMA_READY.add(key)
    return conn


@contextmanager
def connection(ensure: bool = True, **overrides):
    """Context manager: commit on success, roll back on error, always close."""
    conn = connect(ensure, **overrides)
    try:
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


@functools.lru_cache(maxsize=None)
def load_sql(name: str) -> str:
    """Text of ``sql/<name>.sql``."""
    return (sql_dir() / f"{name}.sql").read_text()


def check_database(conn) -> None:
    """Raise :class:`DatabaseSetupError`, saying what to run, when the database lacks the
    ``postgis`` extension or the role cannot create tables where they go (the first schema of
    the search path, normally ``public``: PostgreSQL 15 no longer lets every role create there,
    so a database made by another role refuses with a bare ``permission denied for schema
    public``)."""
    with conn.cursor() as cur:
        cur.execute(load_sql("database_check"))
        role, dbname, schema, can_create, has_postgis = cur.fetchone()
    where = f"database {dbname!r} as role {role!r}"
    problems = []
    if not has_postgis:
        problems.append(f"the postgis extension is not installed: a superuser must run "
                        f"`psql -d {dbname} -c 'CREATE EXTENSION postgis'` (or run `make setup`)")
    if schema is None:
        problems.append(f"no schema of the search path exists: as the database owner run "
                        f"`CREATE SCHEMA public; GRANT CREATE ON SCHEMA public TO {role}` (or run `make setup`)")
    elif not can_create:
        problems.append(f"the role cannot create tables in schema {schema!r} (PostgreSQL 15+ revokes CREATE "
                        f"on public from ordinary roles): as the database owner or a superuser run "
                        f"`GRANT CREATE ON SCHEMA {schema} TO {role}`, or run `make setup` to make a "
                        f"database owned by {role}")
    if problems:
        conn.rollback()
        raise DatabaseSetupError(f"{where}: " + "; and ".join(problems))


def ensure_schema(conn) -> None:
    """Check the database (:func:`check_database`), then create the tables if missing
    (idempotent, serialised with an advisory lock)."""
    check_database(conn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('footprints.schema'))")
            cur.execute(load_sql("schema"))
    except psycopg2.errors.InsufficientPrivilege as e:  # e.g. tables owned by another role
        conn.rollback()
        p = conn.get_dsn_parameters()
        raise DatabaseSetupError(
            f"database {p.get('dbname')!r} as role {p.get('user')!r}: {str(e).strip().splitlines()[0]} -- "
            f"the footprints tables belong to another role: have their owner run "
            f"`ALTER TABLE ... OWNER TO {p.get('user')}`, or use a database made by `make setup`") from e
    conn.commit()


def marker_exists(conn, update_id: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (MARKER_TABLE,))
        if cur.fetchone()[0] is None:
            return False
        cur.execute(load_sql("marker_exists"), {"update_id": update_id})
        return cur.fetchone() is not None


def touch_marker(conn, update_id: str, target_table: str) -> None:
    """Record completion inside the caller's transaction (committed together with the rows)."""
    with conn.cursor() as cur:
        cur.execute(load_sql("marker_touch"), {"update_id": update_id, "target_table": target_table})


def delete_marker(conn, update_id: str) -> None:
    with conn.cursor() as cur:
        cur.execute("DELETE FROM table_updates WHERE update_id = %s", (update_id,))


def srid_for_crs(conn, crs) -> int:
    """SRID for a rasterio/pyproj CRS: its EPSG code, or a custom SRID registered in
    ``spatial_ref_sys`` (900000+) for CRSs without one, reused when the same WKT comes again."""
    pcrs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    epsg = pcrs.to_epsg(min_confidence=100)
    if epsg is not None:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM spatial_ref_sys WHERE srid = %s", (epsg,))
            if cur.fetchone():
                return epsg
    wkt = pcrs.to_wkt()
    proj4 = pcrs.to_proj4()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('footprints.srid'))")
        cur.execute(load_sql("srid_lookup"), {"srtext": wkt})
        row = cur.fetchone()
        if row:
            return row[0]
        cur.execute(load_sql("srid_register"), {"srtext": wkt, "proj4text": proj4})
        return cur.fetchone()[0]


def ident(name: str):
    return psql.Identifier(name)


def next_partition(conn, sql_name: str, names: tuple[str, str]) -> tuple[str, list[str]]:
    """Of two alternating partition table names, the one not in use now (so the new partition
    can be filled beside the old one and swapped in one transaction), and those in use."""
    with conn.cursor() as cur:
        cur.execute(load_sql(sql_name), {"names": list(names)})
        old = [r[0] for r in cur.fetchall()]
    return (names[1] if names[0] in old else names[0]), old
