"""LoadLabels: a GeoJSON label file into the PostGIS ``labels`` table with COPY.

CRS rules, in order: a legacy ``crs`` member in the file; else ``[data] label_crs``; else
RFC 7946's EPSG:4326 — and then coordinates outside lon/lat ranges are an error, never
silently treated as degrees. Geometries keep their source CRS exactly (``geom``); an
EPSG:4326 copy (``geom_4326``) carries the GiST index for lookups across CRSs.
Invalid polygons are repaired (GEOS MakeValid, the algorithm behind ST_MakeValid) and
counted; non-polygonal or empty features are rejected and listed in the report.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import queue
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import luigi
import numpy as np
import shapely

from tasks.config import data, workdir
from tasks.errors import InputError

log = logging.getLogger("luigi-interface")

_CRS_MEMBER = re.compile(rb'"crs"\s*:\s*\{')

# ---------------------------------------------------------------- pure functions


@dataclass
class LabelReport:
    path: str
    crs: str = ""
    read: int = 0
    loaded: int = 0
    repaired: int = 0
    rejected: list = field(default_factory=list)  # [{"feature": i, "reason": ...}]

    def as_dict(self) -> dict:
        return {"path": self.path, "crs": self.crs, "features_read": self.read, "loaded": self.loaded,
                "repaired": self.repaired, "rejected": len(self.rejected), "rejected_features": self.rejected}


def clean_geometries(geoms: np.ndarray, report: LabelReport) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep polygonal geometries as MultiPolygons; repair invalid ones.

    Returns (indices of kept features, MultiPolygon array, repaired flags)."""
    geoms = np.asarray(geoms, dtype=object)
    types = shapely.get_type_id(geoms)
    valid = shapely.is_valid(geoms)
    # the usual label, a valid Polygon with area, becomes a one-part MultiPolygon in one
    # vectorised call; everything else takes the loop below
    fast = (types == 3) & valid
    fast[fast] = ~shapely.is_empty(geoms[fast]) & (shapely.area(geoms[fast]) > 0)
    out = np.empty(len(geoms), dtype=object)
    if fast.any():
        out[fast] = shapely.multipolygons(geoms[fast][:, None])
    kept, fixed_flags = fast.copy(), np.zeros(len(geoms), dtype=bool)
    for i in np.flatnonzero(~fast).tolist():
        g, t, ok = geoms[i], types[i], valid[i]
        if g is None or shapely.is_empty(g):
            report.rejected.append({"feature": i, "reason": "empty or missing geometry"})
            continue
        if t not in (3, 6):  # Polygon, MultiPolygon
            report.rejected.append({"feature": i, "reason": f"{g.geom_type} is not a polygon"})
            continue
        fixed = False
        if not ok:
            g = shapely.make_valid(g)
            fixed = True
        polys = polygon_parts(g)
        if not polys:
            report.rejected.append({"feature": i, "reason": "invalid polygon with no area left after repair"})
            continue
        kept[i], fixed_flags[i] = True, fixed
        out[i] = shapely.MultiPolygon(polys)
    idx = np.flatnonzero(kept).astype(np.int64)
    report.repaired = int(fixed_flags[idx].sum())
    return idx, out[idx], fixed_flags[idx]


def polygon_parts(g) -> list:
    """Polygons with area from any geometry (drops lines/points left by MakeValid)."""
    if g is None or g.is_empty:
        return []
    if g.geom_type == "Polygon":
        return [g] if g.area > 0 else []
    if g.geom_type in ("MultiPolygon", "GeometryCollection"):
        return [p for part in g.geoms for p in polygon_parts(part)]
    return []


def check_lonlat(bounds, path, crs_note: str) -> None:
    """Coordinates claimed to be lon/lat must look like lon/lat."""
    minx, miny, maxx, maxy = bounds
    if minx < -180.0001 or maxx > 180.0001 or miny < -90.0001 or maxy > 90.0001:
        raise InputError(path, (
            f"coordinates span x {minx:.6g}..{maxx:.6g}, y {miny:.6g}..{maxy:.6g}, which are not "
            f"longitude/latitude, but {crs_note}. They look projected (metres): set [data] label_crs "
            f"(or --data-label-crs) to the file's CRS, e.g. EPSG:32616 or the raster's WKT"))


def resolve_crs(has_crs_member: bool, file_crs, override: str):
    """The label file's CRS: legacy member > configured override > RFC 7946 (EPSG:4326)."""
    from pyproj import CRS

    if has_crs_member and file_crs:
        return CRS.from_user_input(file_crs), "the file's crs member"
    if override:
        if os.path.isfile(override):  # allow pointing at a raster to borrow its CRS
            import rasterio

            with rasterio.open(override) as src:
                return CRS.from_wkt(src.crs.to_wkt()), f"the CRS of {override}"
        return CRS.from_user_input(override), "[data] label_crs"
    return CRS.from_epsg(4326), "the file has no crs member, so RFC 7946 says EPSG:4326"


def read_label_file(path, override: str = ""):
    """Read a GeoJSON label file. Returns (geoms, properties list, CRS, report)."""
    import pyogrio

    path = str(path)
    report = LabelReport(path=path)
    if not os.path.exists(path):
        raise InputError(path, "label file does not exist")
    if os.path.getsize(path) == 0:
        raise InputError(path, "label file is empty (0 bytes); expected a GeoJSON FeatureCollection")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        doc_type = json.loads(raw).get("type") if len(raw) < 4096 else None
    except ValueError as e:
        raise InputError(path, f"malformed GeoJSON: {e}") from None
    if doc_type is not None and doc_type not in ("FeatureCollection", "Feature"):
        raise InputError(path, f"GeoJSON type {doc_type!r} is not a FeatureCollection")
    has_member = bool(_CRS_MEMBER.search(raw[:65536])) or bool(_CRS_MEMBER.search(raw[-65536:]))
    try:  # one read: GDAL parses a GeoJSON file whole on every open (pyogrio.read_info included)
        meta, _fids, wkb, fields = pyogrio.raw.read(path, encoding="UTF-8")
        file_crs = meta.get("crs")
        if len(wkb) == 0:
            geoms, props = np.asarray([], dtype=object), []
        else:
            geoms = shapely.from_wkb(wkb)
            props = _properties(list(meta["fields"]), fields, len(geoms))
    except Exception as e:  # pyogrio raises DataSourceError/DataLayerError for broken JSON
        raise InputError(path, f"malformed GeoJSON: {str(e).splitlines()[0]}") from None
    crs, note = resolve_crs(has_member, file_crs, override)
    report.crs = crs.to_string() if crs.to_epsg() else crs.to_wkt()
    report.read = len(geoms)
    if len(geoms) and crs.to_epsg() == 4326:
        b = shapely.total_bounds(geoms[~shapely.is_missing(geoms)])
        check_lonlat(b, path, note)
    return geoms, props, crs, report


def _py(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:  # NaN: pyogrio's null in numeric columns; JSON has no NaN
        return None
    return v


def _properties(names: list, columns, n: int) -> list[dict]:
    """Per-feature property dicts from pyogrio's columns, values as ``_py`` makes them."""
    if not names:
        return [{}] * n
    lists = []
    for col in columns:
        col = np.asarray(col)
        if col.dtype == object:
            vals = [_py(v) for v in col]
        else:
            vals = col.tolist()  # Python scalars, as .item() gives
            if col.dtype.kind == "f":
                for i in np.flatnonzero(np.isnan(col)).tolist():
                    vals[i] = None
        lists.append(vals)
    return [dict(zip(names, row)) for row in zip(*lists)]


def to_4326(geoms: np.ndarray, crs) -> np.ndarray:
    from pyproj import CRS, Transformer

    if CRS.from_user_input(crs).to_epsg() == 4326:
        return geoms
    tr = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def copy_rows(source: str, srid: int, idx, geoms, geoms_4326, repaired, props) -> io.StringIO:
    """Tab-separated COPY text: source, feature_index, srid, repaired, properties, geom, geom_4326."""
    return io.StringIO("".join(copy_chunks(source, srid, idx, geoms, geoms_4326, repaired, props)))


def copy_chunks(source: str, srid: int, idx, geoms, geoms_4326, repaired, props, chunk: int = 5000):
    """``copy_rows``' text, ``chunk`` rows at a time (a generator of str)."""
    src = _copy_escape(source)
    encode = json.JSONEncoder(default=str, ensure_ascii=False).encode  # json.dumps(**kw) builds one per call
    same = geoms_4326 is geoms and srid == 4326  # a file in EPSG:4326: one EWKB serves both columns
    idx = np.asarray(idx)
    for s in range(0, len(idx), chunk):
        rows = idx[s:s + chunk].tolist()
        ewkb = _ewkb_hex(geoms[s:s + chunk], srid)
        ewkb4326 = ewkb if same else _ewkb_hex(geoms_4326[s:s + chunk], 4326)
        flags = ["t" if r else "f" for r in repaired[s:s + chunk]]
        pjs = [(_copy_escape(encode(props[i])) if props[i] else "\\N") for i in rows] if props else ["\\N"] * len(rows)
        yield "".join([f"{src}\t{i}\t{srid}\t{r}\t{pj}\t{g}\t{g4}\n"
                       for i, r, pj, g, g4 in zip(rows, flags, pjs, ewkb, ewkb4326)])


def _ewkb_hex(geoms, srid: int) -> list[str]:
    # binary WKB + bytes.hex() is several times faster than GEOS' own hex writer
    return [b.hex() for b in shapely.to_wkb(shapely.set_srid(geoms, srid), include_srid=True)]


class _ChunkReader:
    """A file-like object for ``copy_expert`` whose text is made by a background thread, so
    Python formats the next rows while the server parses and indexes the previous ones
    (psycopg2 sends with the GIL released)."""

    def __init__(self, chunks, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(chunks,), daemon=True, name="labels-copy")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, chunks) -> None:
        try:
            for c in chunks:
                if not self._put(c):
                    return
        except BaseException as e:  # re-raised by read() in the caller's thread
            self.error = e
        self._put(None)

    def read(self, size: int = -1) -> str:
        if self._done:
            return ""
        c = self._queue.get()
        if c is None:
            self._done = True
            self._thread.join()
            if self.error is not None:
                raise self.error
            return ""
        return c

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _copy_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def file_digest(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def source_name(path) -> str:
    return Path(path).stem


def load_labels(conn, path, override: str = "") -> LabelReport:
    """Replace the rows of one label file in ``labels`` (caller commits)."""
    from tasks.db import load_sql, srid_for_crs

    geoms, props, crs, report = read_label_file(path, override)
    idx, mp, repaired = clean_geometries(geoms, report)
    srid = srid_for_crs(conn, crs)
    mp4326 = to_4326(mp, crs) if len(mp) else mp
    source = source_name(path)
    with conn.cursor() as cur:
        cur.execute(load_sql("labels_delete"), {"source": source})
        if len(mp):
            reader = _ChunkReader(copy_chunks(source, srid, idx, mp, mp4326, repaired, props))
            try:
                cur.copy_expert(load_sql("labels_copy"), reader, size=1 << 20)
            except Exception:
                if reader.error is not None:  # psycopg2 reports it as a cancelled COPY
                    raise reader.error from None
                raise
            finally:
                reader.close()
    report.loaded = len(mp)
    return report


# ---------------------------------------------------------------- the task


class LoadLabels(luigi.Task):
    """Loads one GeoJSON label file into PostGIS; rows and marker commit together."""

    path = luigi.Parameter(description="GeoJSON label file")

    def requires(self):
        from tasks.sources import LabelFile, using_demo

        if using_demo():
            from tasks.demo import GenerateDemo

            return GenerateDemo()
        return LabelFile(path=self.path)

    def update_id(self) -> str:
        ov = data().label_crs
        key = hashlib.sha1(f"{os.path.abspath(self.path)}|{ov}".encode()).hexdigest()[:12]
        return f"labels:{source_name(self.path)}:{key}"

    def output(self):
        from tasks.db import PostgresMarker

        return PostgresMarker(self.update_id(), "labels")

    def report_path(self) -> Path:
        return workdir() / "labels" / f"{source_name(self.path)}.report.json"

    def run(self):
        from tasks import db

        self.set_status_message(f"loading {self.path}")
        with db.connection() as conn:
            db.ensure_schema(conn)
            with conn.cursor() as cur:  # one loader per source at a time
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"labels:{source_name(self.path)}",))
                cur.execute("DELETE FROM table_updates WHERE update_id LIKE %s",
                            (f"labels:{source_name(self.path)}:%",))
            report = load_labels(conn, self.path, data().label_crs)
            self.output().touch(conn)
        if report.repaired or report.rejected:
            log.warning("%s: %d invalid polygons repaired, %d features rejected (see %s)",
                        self.path, report.repaired, len(report.rejected), self.report_path())
        rp = self.report_path()
        rp.parent.mkdir(parents=True, exist_ok=True)
        tmp = rp.with_name(f".{rp.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(report.as_dict(), indent=1))
        os.replace(tmp, rp)
        self.set_status_message(f"{report.loaded} labels loaded, {report.repaired} repaired, {len(report.rejected)} rejected")
