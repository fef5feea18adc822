"""The fast binary COPY encoder of label rows: what makes a load about 2x ogr2ogr (bench/labels.py).

Fenced in this one module, with shapely's own EWKB writer as its reference
(tests/footprints/labels/test_copy.py): the rows of features that are kept as read (the usual
case) get their EWKB written by numpy straight from the coordinates and offsets (no geometry
objects, no hex); repaired and odd ones go through ``shapely.to_wkb``. The rows go into
``COPY ... FROM STDIN (FORMAT binary)``, and a background thread (``ChunkReader``) makes the
next chunk while the server stores the last.
"""
from __future__ import annotations

import queue
import struct
import threading

import numpy as np
import shapely

from footprints.geo import is_4326, to_4326, transformer_to_4326
from footprints.labels.classes import ClassRule
from footprints.labels.clean import clean_geometries
from footprints.labels.parse import Ragged, check_geometries_lonlat, feature_geometries_ragged, offsets
from footprints.labels.report import LabelReport

CHUNK = 10_000  # features per COPY chunk

# binary COPY (PostgreSQL's documented format): a signature, then per row the field count and
# each field as a 4-byte length (-1: NULL) and the type's binary form; geometry's is (E)WKB
# and jsonb's a version byte 1 and the JSON text
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
COPY_COLUMNS = ("source", "feature_index", "srid", "repaired", "properties", "geom", "geom_4326")
CLASS_COLUMN = "class"  # with building types, after COPY_COLUMNS


def ewkb_fields(geoms, srid: int) -> list:
    """Binary COPY fields of shapely geometries: each a 4-byte big-endian length and the EWKB."""
    wkb = shapely.to_wkb(shapely.set_srid(geoms, srid), include_srid=True, byte_order=1).tolist()
    return [struct.pack(">i", len(w)) + w for w in wkb]


def ragged_ewkb_fields(rag: Ragged, srid: int) -> list:
    """``ewkb_fields`` of the MultiPolygons of ``rag``, byte for byte, written straight from
    its coordinates and offsets by numpy (no geometry objects, no per-row Python work but the
    final slicing): little-endian EWKB with the SRID flag on the MultiPolygon."""
    ng = rag.count
    if ng == 0:
        return []
    nparts, nrings, npts = np.diff(rag.geom_off), np.diff(rag.poly_off), np.diff(rag.ring_off)
    if len(nrings) == ng and len(npts) == ng:  # the usual label: one polygon, one ring
        return _single_ring_fields(rag, srid, npts)
    nq, nr = len(nrings), len(npts)
    GH, PH, RH = 4 + 13, 9, 4  # field length + MultiPolygon header; Polygon header; ring header
    ring_bytes = offsets(RH + 16 * npts)  # bytes of the rings before ring k (and in all)
    poly_geom = np.repeat(np.arange(ng), nparts)
    ring_poly = np.repeat(np.arange(nq), nrings)
    # where each piece starts: the rings, polygon headers and geometry headers before it
    geom_pos = ring_bytes[rag.poly_off[rag.geom_off]] + PH * rag.geom_off + GH * np.arange(ng + 1)
    poly_pos = ring_bytes[rag.poly_off[:-1]] + PH * np.arange(nq) + GH * (poly_geom + 1)
    ring_pos = ring_bytes[:-1] + PH * (ring_poly + 1) + GH * (poly_geom[ring_poly] + 1)
    buf = np.empty(int(geom_pos[-1]), dtype=np.uint8)
    gh = np.zeros(ng, dtype=[("len", ">i4"), ("order", "u1"), ("type", "<u4"), ("srid", "<u4"), ("n", "<u4")])
    gh["len"] = np.diff(geom_pos) - 4
    gh["order"] = 1
    gh["type"] = 6 | 0x20000000  # MultiPolygon, with an SRID
    gh["srid"] = srid
    gh["n"] = nparts
    buf[geom_pos[:-1, None] + np.arange(GH)] = gh.view(np.uint8).reshape(ng, GH)
    if nq:
        ph = np.zeros(nq, dtype=[("order", "u1"), ("type", "<u4"), ("n", "<u4")])
        ph["order"] = 1
        ph["type"] = 3  # Polygon
        ph["n"] = nrings
        buf[poly_pos[:, None] + np.arange(PH)] = ph.view(np.uint8).reshape(nq, PH)
    if nr:
        buf[ring_pos[:, None] + np.arange(RH)] = npts.astype("<u4").view(np.uint8).reshape(nr, RH)
        coords = np.ascontiguousarray(rag.xy, dtype="<f8").view(np.uint8).reshape(-1)
        it = np.int32 if len(buf) < 2**31 else np.int64  # half the index traffic
        shift = (ring_pos + RH - 16 * rag.ring_off[:-1]).astype(it)
        buf[np.repeat(shift, 16 * npts) + np.arange(len(coords), dtype=it)] = coords
    data, pos = buf.tobytes(), geom_pos.tolist()
    return [data[a:b] for a, b in zip(pos[:-1], pos[1:])]


def _single_ring_fields(rag: Ragged, srid: int, npts: np.ndarray) -> list:
    """``ragged_ewkb_fields`` when every MultiPolygon has one polygon with one ring: a header
    that depends on the ring's size only, then the ring's coordinates as they lie in ``xy``."""
    heads = {}
    for m in np.unique(npts).tolist():
        size = 13 + 9 + 4 + 16 * m  # MultiPolygon header, Polygon header, ring header, points
        heads[m] = struct.pack(">i", size) + struct.pack("<BIII", 1, 6 | 0x20000000, srid, 1) + \
            struct.pack("<BIII", 1, 3, 1, m)
    coords = np.ascontiguousarray(rag.xy, dtype="<f8").tobytes()
    ends = (16 * rag.ring_off).tolist()
    return [heads[m] + coords[a:b] for m, a, b in zip(npts.tolist(), ends[:-1], ends[1:])]


def copy_binary_rows(source: str, srid: int, idx, geom_fields: list, geom_4326_fields: list, repaired,
                     props: list, classes: list | None = None) -> bytes:
    """Rows of ``COPY ... (COPY_COLUMNS) FROM STDIN (FORMAT binary)``, without the header or
    trailer. ``geom_fields``, ``geom_4326_fields``: per row, as ``ewkb_fields`` makes them;
    ``props[i]``: the JSON text (bytes-like) of row i's properties, or None. ``classes``
    (building types): row i's class as UTF-8 bytes, a last column (``CLASS_COLUMN``)."""
    n = len(idx)
    if n == 0:
        return b""
    src = source.encode("utf-8")
    pj = list(props)
    nulls = [i for i, p in enumerate(pj) if p is None]
    for i in nulls:
        pj[i] = b""
    plen = np.fromiter(map(len, pj), np.int64, n)
    fixed = np.zeros(n, dtype=[("nfields", ">i2"), ("l_source", ">i4"), ("source", f"V{len(src)}"),
                               ("l_index", ">i4"), ("index", ">i4"), ("l_srid", ">i4"), ("srid", ">i4"),
                               ("l_repaired", ">i4"), ("repaired", "u1"), ("l_props", ">i4"), ("version", "u1")])
    fixed["nfields"] = len(COPY_COLUMNS) + (classes is not None)
    fixed["l_source"] = len(src)
    fixed["source"] = np.void(src)
    fixed["l_index"] = fixed["l_srid"] = 4
    fixed["index"] = idx
    fixed["srid"] = srid
    fixed["l_repaired"] = 1
    fixed["repaired"] = np.asarray(repaired, dtype=bool)
    fixed["l_props"] = plen + 1  # + the jsonb version byte
    fixed["l_props"][nulls] = -1
    fixed["version"] = 1
    buf, w = fixed.tobytes(), fixed.itemsize
    heads = [buf[i:i + w] for i in range(0, n * w, w)]
    for i in nulls:  # NULL: no version byte, no text
        heads[i] = heads[i][:-1]
    if classes is not None:
        cls = [struct.pack(">i", len(c)) + c for c in classes]
        return b"".join([x for row in zip(heads, pj, geom_fields, geom_4326_fields, cls) for x in row])
    return b"".join([x for row in zip(heads, pj, geom_fields, geom_4326_fields) for x in row])


def label_chunks(features, source: str, srid: int, crs, report: LabelReport, *, path: str = "",
                 note: str = "", chunk: int | None = None, classes: ClassRule | None = None):
    """The binary COPY stream of a label file's features (header, rows, trailer), ``chunk``
    (default ``CHUNK``) features at a time, with ``report`` filled in as it goes (repaired,
    rejected, loaded; and read, for a stream). ``features``: the records of the whole file (a
    list), or a :class:`footprints.geojson_stream.FeatureStream`, whose chunks are read as they
    come (bounded memory; its chunk size is then the one that counts).
    Raises InputError when coordinates said to be lon/lat are not.
    ``classes`` (building types): each row gets its class (``CLASS_COLUMN``); features with a
    value not listed are rejected (:class:`footprints.labels.classes.ClassRule`).

    The rows of features that are kept as read (the usual case) get their EWKB straight from
    the coordinates (``ragged_ewkb_fields``); repaired and odd ones through shapely."""
    to4326 = None if is_4326(crs) else transformer_to_4326(crs)

    def reproject(rag: Ragged) -> Ragged:
        x, y = to4326.transform(rag.xy[:, 0], rag.xy[:, 1])
        return rag._replace(xy=np.column_stack([x, y]))

    chunk = chunk or CHUNK
    whole = isinstance(features, list)
    yield COPY_HEADER
    for s, part in _feature_chunks(features, chunk):
        if not whole:
            report.read += len(part)
        geoms, props, reasons, built = feature_geometries_ragged(part, 0, None, path)
        polygonal = None
        if built is not None:
            polygonal = np.zeros(len(geoms), dtype=bool)
            polygonal[built[0]] = True  # non-empty MultiPolygons: polygon_coordinates allows no empty array
        values = None
        if classes is not None:  # a value not listed rejects the feature: no geometry, the reason
            values, bad = classes.resolve(props, s, report)
            for k, why in bad.items():
                geoms[k] = None
                reasons[k] = why
                if polygonal is not None:
                    polygonal[k] = False
        if to4326 is None:  # lon/lat must look like lon/lat
            many = len(features) > chunk if whole else s > 0 or len(part) >= chunk
            where = f" (features {s}..{s + len(geoms) - 1})" if many else ""
            check_geometries_lonlat(geoms, path, note, where, built)
        idx, mp, repaired = clean_geometries(geoms, report, offset=s, reasons=reasons, polygonal=polygonal)
        as_read = np.zeros(len(geoms), dtype=bool)  # kept unchanged, and vectorised
        if built is not None:
            as_read[built[0]] = True
            as_read[idx[repaired]] = False
            kept = np.zeros(len(geoms), dtype=bool)
            kept[idx] = True
            as_read &= kept
        if as_read.any():
            sel = as_read[built[0]]
            rows, rag = built[0][sel], built[1].take(sel)
            g = ragged_ewkb_fields(rag, srid)
            g4 = g if to4326 is None else ragged_ewkb_fields(reproject(rag), 4326)
            yield copy_binary_rows(source, srid, rows + s, g, g4, np.zeros(len(rows), dtype=bool),
                                   [props[i] for i in rows.tolist()], _take(values, rows))
        other = ~as_read[idx]
        if other.any():
            rows, mp, fixed = idx[other], mp[other], repaired[other]
            g = ewkb_fields(mp, srid)
            g4 = g if to4326 is None else ewkb_fields(to_4326(mp, crs), 4326)
            yield copy_binary_rows(source, srid, rows + s, g, g4, fixed, [props[i] for i in rows.tolist()],
                                   _take(values, rows))
        report.loaded += len(idx)
        if classes is not None:
            classes.count(report, [values[i] for i in idx.tolist()])
    if classes is not None:
        classes.check_seen(report, path)
    yield COPY_TRAILER


def _feature_chunks(features, chunk: int):
    """``(start, records)`` per chunk: slices of a list, or a ``FeatureStream``'s chunks."""
    if isinstance(features, list):
        for s in range(0, len(features), chunk):
            yield s, features[s:s + chunk]
    else:
        yield from features.chunks()


def _take(values, rows):
    return None if values is None else [values[i] for i in rows.tolist()]


class ChunkReader:
    """A file-like object for ``copy_expert`` whose data is made by a background thread, so
    Python builds the next rows while the server stores the previous ones (psycopg2 sends
    with the GIL released, and shapely's vectorised calls release it too)."""

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
        except BaseException as e:  # noqa: BLE001 - re-raised by read() in the caller's thread
            self.error = e
        self._put(None)

    def read(self, size: int = -1):
        if self._done:
            return b""
        c = self._queue.get()
        if c is None:
            self._done = True
            self._thread.join()
            if self.error is not None:
                raise self.error
            return b""
        return c

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
