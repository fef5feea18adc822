"""PostGIS access: connections from libpq environment variables, the SQL files, completion
markers (rows committed with the data they mark), SRIDs."""
from __future__ import annotations

import functools
import importlib.resources
import os
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import psycopg2.extras
from psycopg2 import sql as psql
from pyproj import CRS


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


def connect(**overrides):
    """A new psycopg2 connection (autocommit off). Errors name the server and database."""
    params = {**conn_params(), **overrides}
    try:
        conn = psycopg2.connect(connect_timeout=10, application_name="footprints", **params)
    except psycopg2.OperationalError as e:
        raise RuntimeError(
            f"cannot connect to PostGIS at {params['host']}:{params['port']} database {params['dbname']!r} "
            f"as {params['user']!r}: {str(e).strip()} -- run `make setup` or set PGHOST/PGDATABASE/PGUSER"
        ) from e
    return conn


@contextmanager
def connection(**overrides):
    """Context manager: commit on success, roll back on error, always close."""
    conn = connect(**overrides)
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


def ensure_schema(conn) -> None:
    """Create the tables if missing (idempotent, serialised with an advisory lock)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('footprints.schema'))")
        cur.execute(load_sql("schema"))
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
