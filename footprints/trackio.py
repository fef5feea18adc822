"""Persistent building ids in PostGIS and in files: the I/O around :mod:`footprints.track`.

- :func:`read_date_buildings` reads one date's deduplicated buildings in the AOI's CRS;
- :func:`store_tracks` replaces an AOI's rows of ``building_ids`` (one per id: first and last
  date, first-seen footprint) and ``building_id_dates`` (which building of which date carries
  it) with two COPYs, in the caller's transaction (the caller adds its marker and commits);
- :func:`read_image_ids` gives WriteOutputs and Evaluate the id of each building of an image;
- :func:`tracks_table` / :func:`write_tracks_csv` make ``<aoi>_tracks.csv`` (each id's first and
  last date and its area on every date);
- :func:`read_truth_ids` reads an image's labels with their ``id``/``Id`` for the SCOT metric.
"""
from __future__ import annotations

import csv
import io

import numpy as np
import shapely

from footprints.db import load_sql
from footprints.scot import Footprints
from footprints.track import Tracks

__all__ = ["read_date_buildings", "id_rows", "date_rows", "store_tracks", "read_image_ids", "read_id_areas",
           "tracks_table", "write_tracks_csv", "read_truth_ids", "footprints_of"]


def read_date_buildings(conn, run: str, image: str, srid: int) -> tuple[list[int], list[float], list]:
    """``(building ids, areas in m², polygons in the CRS of ``srid``)`` of one image's buildings."""
    with conn.cursor() as cur:
        cur.execute(load_sql("track_buildings"), {"run": run, "image": image, "srid": int(srid)})
        rows = cur.fetchall()
    return ([int(r[0]) for r in rows], [float(r[1]) for r in rows], [shapely.from_wkb(bytes(r[2])) for r in rows])


def id_rows(run: str, tracking: str, aoi: str, tracks: Tracks, dates: list[str], srid: int) -> list[tuple]:
    """COPY rows of ``building_ids``: one per id, its first-seen footprint as EWKB hex."""
    out = []
    for bid in sorted(tracks.first):
        geom = shapely.set_srid(tracks.footprint[bid], int(srid))
        out.append((run, tracking, aoi, int(bid), dates[tracks.first[bid]], dates[tracks.last[bid]],
                    len(tracks.areas[bid]), int(srid), shapely.to_wkb(geom, hex=True, include_srid=True)))
    return out


def date_rows(run: str, tracking: str, aoi: str, tracks: Tracks, dates: list[str], images: list[str],
              building_ids: list[list[int]], areas_m2: list[list[float]]) -> list[tuple]:
    """COPY rows of ``building_id_dates``: one per building of each date, with its id."""
    out = []
    for d, ids in enumerate(tracks.ids):
        for bid, tid, area in zip(building_ids[d], ids, areas_m2[d]):
            out.append((run, tracking, aoi, int(tid), dates[d], images[d], int(bid), repr(float(area))))
    return out


def _copy(cur, sql_name: str, rows) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    buf.seek(0)
    cur.copy_expert(load_sql(sql_name), buf)


def store_tracks(conn, run: str, tracking: str, aoi: str, tracks: Tracks, dates: list[str], images: list[str],
                 building_ids: list[list[int]], areas_m2: list[list[float]], srid: int) -> None:
    """Replace the AOI's ids of (run, tracking) in ``building_ids`` and ``building_id_dates``
    (the caller's transaction)."""
    with conn.cursor() as cur:
        cur.execute(load_sql("building_ids_delete"), {"run": run, "tracking": tracking, "aoi": aoi})
        _copy(cur, "building_ids_copy", id_rows(run, tracking, aoi, tracks, dates, srid))
        _copy(cur, "building_id_dates_copy", date_rows(run, tracking, aoi, tracks, dates, images, building_ids,
                                                       areas_m2))


def read_image_ids(conn, run: str, tracking: str, image: str) -> dict[int, int]:
    """``{building_id: persistent id}`` of one image's buildings."""
    with conn.cursor() as cur:
        cur.execute(load_sql("building_id_dates_select"), {"run": run, "tracking": tracking, "image": image})
        return {int(b): int(i) for b, i in cur.fetchall()}


def read_id_areas(conn, run: str, tracking: str, aoi: str) -> dict[int, dict[str, float]]:
    """``{id: {date: area in m²}}`` of an AOI."""
    out: dict[int, dict[str, float]] = {}
    with conn.cursor() as cur:
        cur.execute(load_sql("building_id_areas"), {"run": run, "tracking": tracking, "aoi": aoi})
        for bid, date, area in cur.fetchall():
            out.setdefault(int(bid), {})[date] = float(area)
    return out


def tracks_table(areas: dict, dates: list[str]) -> tuple[list[str], list[list]]:
    """``<aoi>_tracks.csv``: header and one row per id (id order): ``id, first_date, last_date,
    n_dates`` and ``area_<date>`` on each date (m², empty where the id is not seen).
    ``areas``: ``{id: {date: area}}``."""
    header = ["id", "first_date", "last_date", "n_dates"] + [f"area_{d}" for d in dates]
    rows = []
    for bid in sorted(areas):
        a = areas[bid]
        seen = [d for d in dates if d in a]
        rows.append([bid, seen[0], seen[-1], len(seen)] + [f"{a[d]:.2f}" if d in a else "" for d in dates])
    return header, rows


def write_tracks_csv(f, areas: dict, dates: list[str]) -> None:
    header, rows = tracks_table(areas, dates)
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


def _label_id(lower, upper):
    """A label's id as the SCOT reader takes it: ``id``, else ``Id``; integral floats as ints."""
    v = lower if lower is not None else upper
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def read_truth_ids(conn, sources: list[str], extent_native, srid: int, extent_4326) -> tuple[list, list]:
    """``(ids, polygons)`` of the labels of ``sources`` that touch the image, in the image CRS,
    clipped to it; ``ids`` holds None for a label without an ``id``/``Id`` property."""
    if not sources:
        return [], []
    with conn.cursor() as cur:
        cur.execute(load_sql("labels_ids"), {
            "sources": list(sources), "srid": int(srid), "extent": shapely.to_wkb(extent_native),
            "extent_4326": shapely.to_wkb(extent_4326)})
        rows = cur.fetchall()
    return [_label_id(a, b) for a, b, _ in rows], [shapely.from_wkb(bytes(r[2])) for r in rows]


def footprints_of(ids, geoms, min_area: float = 0.0, strict: bool = False) -> Footprints:
    """:class:`~footprints.scot.Footprints` of the buildings whose area is >= ``min_area``
    (> with ``strict``: SpaceNet's rule for proposals)."""
    geoms = np.asarray(list(geoms), dtype=object).reshape(-1)
    area = shapely.area(geoms) if len(geoms) else np.zeros(0)
    keep = area > min_area if strict else area >= min_area
    return Footprints(tuple(i for i, k in zip(ids, keep) if k), geoms[keep])
