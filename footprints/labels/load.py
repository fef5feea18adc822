"""Loading a GeoJSON label file into the PostGIS ``labels`` table with COPY.

Geometries keep their source CRS exactly (``geom``); an EPSG:4326 copy (``geom_4326``)
carries the GiST index for lookups across CRSs. How a load runs (speed: bench/labels.py,
about 2x ogr2ogr):

1. ``footprints.geojson_stream`` reads the file chunk by chunk (bounded memory: a file of
   millions of features loads in the memory of one of thousands) and decodes each chunk into
   small typed records, keeping each geometry's ``coordinates`` and each feature's
   ``properties`` as raw JSON text (``msgspec.Raw``): no Python object per coordinate. The
   properties' text goes to the ``jsonb`` column as is.
2. Chunk by chunk, the coordinate texts of the Polygon and MultiPolygon features are read
   with numpy (``footprints.labels.parse.polygon_coordinates``) and become shapely
   MultiPolygons in one vectorised call; other features go one by one through
   ``shapely.geometry.shape``. Invalid ones are repaired (``footprints.labels.clean``).
3. ``labels`` is LIST-partitioned by ``source`` (the file stem). The rows go with one binary
   COPY (``footprints.labels.copy``: EWKB written by numpy straight from the coordinates, no
   hex) into a fresh table of their own; a background thread makes the next chunk while the
   server stores the last.
4. Its primary key and GiST indexes are built in bulk (sorted builds) once it is filled, the
   source's previous partition, if any, is dropped, and the table is attached as the
   source's partition: all in the caller's transaction, which also writes the marker.
"""
from __future__ import annotations

import hashlib
from contextlib import closing
from pathlib import Path

from psycopg2 import sql as psql

from footprints.db import load_sql, next_partition, srid_for_crs
from footprints.labels import copy as label_copy
from footprints.labels.classes import ClassRule
from footprints.labels.copy import CLASS_COLUMN, ChunkReader, label_chunks
from footprints.labels.parse import open_label_stream
from footprints.labels.report import LabelReport, gc_paused


def file_digest(path) -> str:
    """The first 12 hex digits of the SHA-1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def source_name(path) -> str:
    """The ``source`` of a label file's rows (and its ``labels`` partition): the file stem."""
    return Path(path).stem


def partition_names(source: str) -> tuple[str, str]:
    """The two table names the ``labels`` partition of ``source`` alternates between (a rerun
    builds the new partition beside the old one, then drops the old): ``labels_<hash>_0`` and
    ``_1``, the hash (96 bits of SHA-256 of the UTF-8 name) making any file stem a short, safe
    identifier. sql/schema.sql's migration of an unpartitioned table names them the same way."""
    h = hashlib.sha256(source.encode("utf-8")).hexdigest()[:24]
    return f"labels_{h}_0", f"labels_{h}_1"


def load_labels(conn, path, override: str = "", progress=None, classes: ClassRule | None = None) -> LabelReport:
    """Replace the rows of one label file in ``labels`` (caller commits; nothing locks
    ``labels`` until the final swap of the partitions). ``progress(message)``: optional.
    ``classes`` (building types): each label's class goes into the ``class`` column; features
    whose value is not listed are rejected (see :mod:`footprints.labels.classes`)."""
    path = str(path)
    with gc_paused():
        features, crs, note, report = open_label_stream(path, override, label_copy.CHUNK)
        with closing(features):  # its file
            if classes is not None:
                report.class_field = classes.field
            srid = srid_for_crs(conn, crs)
            source = source_name(path)
            child, old = next_partition(conn, "labels_partitions", partition_names(source))
            with conn.cursor() as cur:
                ident = {"child": psql.Identifier(child), "bound": psql.Identifier(f"{child}_source"),
                         "pkey": psql.Identifier(f"{child}_pkey"),
                         "geom_gix": psql.Identifier(f"{child}_geom_gix"),
                         "geom_4326_gix": psql.Identifier(f"{child}_geom_4326_gix"),
                         "class_column": psql.SQL(f", {CLASS_COLUMN}" if classes is not None else "")}
                params = {"source": source}

                def run(name):
                    cur.execute(psql.SQL(load_sql(name)).format(**ident), params)

                run("labels_partition")
                if progress:
                    progress(f"copying the features of {path} ({features.size / 2**20:,.1f} MiB)")
                reader = ChunkReader(label_chunks(features, source, srid, crs, report, path=path, note=note,
                                                  classes=classes))
                try:
                    cur.copy_expert(psql.SQL(load_sql("labels_copy")).format(**ident), reader, size=1 << 20)
                except Exception:
                    if reader.error is not None:  # psycopg2 reports it as a cancelled COPY
                        raise reader.error from None
                    raise
                finally:
                    reader.close()
                if progress:
                    progress(f"indexing {report.loaded:,} labels of {path}")
                cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # the sorts of the index builds
                run("labels_index")
                run("labels_lock")
                for name in old:
                    cur.execute(psql.SQL("DROP TABLE {}").format(psql.Identifier(name)))
                run("labels_attach")
    return report
