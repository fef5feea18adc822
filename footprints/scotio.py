"""Reader of image-series footprints for the SCOT metric (:mod:`footprints.scot`).

Layout: a directory holds one folder per AOI, and each AOI folder one GeoJSON file per date; the
file stem is the date, and stems sort in time order (``2018_01.geojson``, ``2018_02.geojson``...).
Each feature is a building whose persistent id is its ``id`` property (or ``Id``, as in SpaceNet
7's labels). Files are read through :mod:`footprints.geojson`; coordinates are used as they are,
so truth and proposals must share a CRS.

Anything that makes the series unusable is an :class:`~footprints.errors.InputError` naming the
file: a feature without an id or without a polygon, an id repeated on one date, ids that mix
numbers and strings, two files for one date, an AOI folder or a date file missing from the
proposals. Proposals for AOIs or dates the truth does not have are ignored (solaris' rule).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from footprints import geojson
from footprints.errors import InputError
from footprints.scot import DEFAULT_BETA, DEFAULT_IOU, Footprints, scot_aois

__all__ = ["ID_PROPERTIES", "date_files", "read_date", "read_series_dir", "scot_dirs"]

ID_PROPERTIES = ("id", "Id")


def _building_id(value, path: Path, n: int):
    """A feature's id as the metric compares it: an int (integral floats too) or a string."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise InputError(path, f"feature {n}: building id {value!r} is not a number or a string")
    if isinstance(value, float):
        if not value.is_integer():
            raise InputError(path, f"feature {n}: building id {value!r} is not an integer or a string")
        return int(value)
    return value


def read_date(path, role: str = "proposals") -> Footprints:
    """The buildings of one date's GeoJSON file: ids and polygons."""
    path = Path(path)
    feats, _ = geojson.read(path, what=f"{role} GeoJSON")
    ids, geoms = [], []
    for n, f in enumerate(feats):
        props = geojson.properties(f)
        key = next((k for k in ID_PROPERTIES if k in props), None)
        if key is None:
            raise InputError(path, f"feature {n} has no building id: expected an 'id' or 'Id' property "
                                   f"(found {sorted(props) or 'no properties'})")
        bid = _building_id(props[key], path, n)
        try:
            g = geojson.geometry(f)
        except Exception as e:  # noqa: BLE001 - malformed coordinates come in many exception types
            raise InputError(path, f"feature {n} (id {bid!r}): unreadable geometry ({type(e).__name__}: {e})") from None
        if g is None or g.geom_type not in ("Polygon", "MultiPolygon"):
            kind = "no geometry" if g is None else f"a {g.geom_type}"
            raise InputError(path, f"feature {n} (id {bid!r}) has {kind}; SCOT needs a polygon per building")
        ids.append(bid)
        geoms.append(g)
    seen: set = set()
    for bid in ids:
        if bid in seen:
            raise InputError(path, f"building id {bid!r} appears more than once; ids must be unique on each date")
        seen.add(bid)
    return Footprints(tuple(ids), np.asarray(geoms, dtype=object) if geoms else np.zeros(0, dtype=object))


def date_files(aoi_dir) -> dict[str, Path]:
    """``{date: path}`` of an AOI folder's GeoJSON files, in date (stem) order."""
    aoi_dir = Path(aoi_dir)
    out: dict[str, Path] = {}
    for f in sorted(aoi_dir.iterdir()):
        if not f.is_file() or f.name.startswith(".") or f.suffix.lower() not in geojson.SUFFIXES:
            continue
        if f.stem in out:
            raise InputError(aoi_dir, f"two files for date {f.stem!r}: {out[f.stem].name} and {f.name}")
        out[f.stem] = f
    return dict(sorted(out.items()))


def _aoi_dirs(directory: Path, role: str) -> dict[str, Path]:
    if not directory.exists():
        raise InputError(directory, f"{role} directory does not exist")
    if not directory.is_dir():
        raise InputError(directory, f"{role} is not a directory; SCOT reads one folder per AOI, "
                                    "each with one GeoJSON file per date")
    dirs = {d.name: d for d in sorted(directory.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if not dirs and role == "truth":
        loose = [f.name for f in directory.iterdir() if f.is_file() and f.suffix.lower() in geojson.SUFFIXES]
        hint = (f" (it holds GeoJSON files such as {sorted(loose)[0]}: pass its parent, the folder of AOI folders)"
                if loose else "")
        raise InputError(directory, f"no AOI folders: expected one folder per AOI, each with one GeoJSON file "
                                    f"per date{hint}")
    return dirs


def _check_ids(aoi_dir: Path, dates: dict) -> None:
    kinds = {type(i) for fp in dates.values() for i in fp.ids}
    if len(kinds) > 1:
        raise InputError(aoi_dir, "building ids mix numbers and strings; use one kind in an AOI")


def read_series_dir(directory, role: str = "proposals", aois=None, dates=None) -> dict:
    """``{aoi: {date: Footprints}}`` of a directory of AOI folders.

    ``aois`` (names) and ``dates`` (``{aoi: date names}``), when given, are what must be read:
    a missing AOI folder or date file is an :class:`InputError`, and other folders and files
    are left unread (the proposals are read for the truth's AOIs and dates).
    """
    directory = Path(directory)
    dirs = _aoi_dirs(directory, role)
    wanted = sorted(dirs) if aois is None else list(aois)
    out: dict = {}
    for aoi in wanted:
        if aoi not in dirs:
            raise InputError(directory / aoi, f"{role} AOI folder missing (the ground truth has AOI {aoi!r})")
        files = date_files(dirs[aoi])
        if dates is None:
            if not files:
                raise InputError(dirs[aoi], f"{role} AOI folder has no GeoJSON files (one per date expected)")
            names = list(files)
        else:
            names = list(dates[aoi])
            missing = [d for d in names if d not in files]
            if missing:
                raise InputError(dirs[aoi], f"{role} file missing for date {missing[0]!r} "
                                            f"(expected {missing[0]}.geojson; the ground truth has that date)")
        out[aoi] = {d: read_date(files[d], role=role) for d in names}
        _check_ids(dirs[aoi], out[aoi])
    return out


def scot_dirs(truth, proposals, iou: float = DEFAULT_IOU, beta: float = DEFAULT_BETA) -> dict:
    """SCOT of a proposals directory against a truth directory (see :func:`footprints.scot.scot_aois`)."""
    if not 0.0 <= float(iou) < 1.0:
        raise InputError(f"IoU threshold must be in [0, 1), got {iou}")
    if not np.isfinite(beta) or beta < 0:
        raise InputError(f"beta must be a finite number >= 0, got {beta}")
    t = read_series_dir(truth, role="truth")
    if not any(len(fp) for dates in t.values() for fp in dates.values()):
        raise InputError(truth, "the ground truth has no buildings on any date: SCOT is undefined")
    p = read_series_dir(proposals, role="proposals", aois=list(t), dates={a: list(d) for a, d in t.items()})
    return scot_aois(t, p, threshold=float(iou), beta=float(beta))
