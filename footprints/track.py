"""Persistent building ids through an image series (one AOI on several dates).

The dates are processed in order. The first date's buildings get new ids; on every later date
each building is compared with the ids seen so far, each id through its **first-seen
footprint** (the polygon it had on the date it was created), and takes an id whose IoU with it
is at least ``min_iou``; each id is taken at most once per date, and a building that takes none
gets a new id. An id missed on some dates (a cloud, a miss of the model) stays available, so a
building seen again later takes its old id back.

Two ways to choose the pairs of one date:

``greedy`` (the default; SpaceNet 7's baseline, CosmiQ's ``sn7_baseline`` post-processing)
    buildings largest first (ties: input order); each takes, among the ids not yet taken on
    this date, the one of highest IoU (ties: the lowest id), if that IoU is >= ``min_iou``;
    otherwise it gets a new id. A large building can thus take an id a smaller one needed.
``hungarian``
    one-to-one optimal assignment (``scipy.optimize.linear_sum_assignment``) over the pairs of
    IoU >= ``min_iou``: as many matches as possible, then the largest total IoU. Solved per
    connected group of candidate pairs, so a date of thousands of buildings stays fast.

New ids are numbered from ``first_id`` up, in the order of the date's buildings largest first.
Pure numpy/shapely/scipy; the IoU is :func:`footprints.scot.iou_matrix` (the SCOT metric's).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from footprints.scot import Footprints, iou_matrix

__all__ = ["METHODS", "DEFAULT_MIN_IOU", "Tracks", "track", "match_greedy", "match_hungarian"]

METHODS = ("greedy", "hungarian")
DEFAULT_MIN_IOU = 0.25


@dataclass
class Tracks:
    """The ids of a series. ``ids[d][i]`` is the id of building ``i`` (input order) on date ``d``;
    per id: its first-seen footprint, first and last date index, and its area on each date."""

    ids: list[np.ndarray]
    footprint: dict = field(default_factory=dict)  # id -> first-seen polygon
    first: dict = field(default_factory=dict)  # id -> date index
    last: dict = field(default_factory=dict)
    areas: dict = field(default_factory=dict)  # id -> {date index: area}


def _order(areas: np.ndarray) -> list[int]:
    """Indexes largest first, ties in input order."""
    return sorted(range(len(areas)), key=lambda i: (-float(areas[i]), i))


def match_greedy(ious: np.ndarray, areas: np.ndarray, min_iou: float) -> dict[int, int]:
    """SpaceNet 7's rule for one date: ``{building row: id column}``. ``ious`` is buildings x
    known ids (columns in id order)."""
    taken = np.zeros(ious.shape[1], bool)
    out: dict[int, int] = {}
    for i in _order(areas):
        if not ious.shape[1]:
            break
        row = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(row))  # the first maximum: the lowest id
        if row[j] > 0 and row[j] >= min_iou:
            out[i] = j
            taken[j] = True
    return out


def match_hungarian(ious: np.ndarray, min_iou: float) -> dict[int, int]:
    """One-to-one optimal matching of one date: most pairs with IoU >= ``min_iou``, then the
    largest total IoU; ``{building row: id column}``."""
    ok = (ious > 0) & (ious >= min_iou)
    rows, cols = np.nonzero(ok)
    if not len(rows):
        return {}
    n, m = ious.shape
    graph = coo_matrix((np.ones(len(rows)), (rows, n + cols)), shape=(n + m, n + m))
    _, label = connected_components(graph, directed=False)
    out: dict[int, int] = {}
    for comp in np.unique(label[rows]):
        r = np.unique(rows[label[rows] == comp])
        c = np.unique(cols[label[rows] == comp])
        sub = ious[np.ix_(r, c)]
        allowed = ok[np.ix_(r, c)]
        # a match is worth more than any total of IoUs (each <= 1): the count comes first
        reward = np.where(allowed, min(len(r), len(c)) + 1.0 + sub, 0.0)
        rr, cc = linear_sum_assignment(reward, maximize=True)
        for a, b in zip(rr, cc):
            if allowed[a, b]:
                out[int(r[a])] = int(c[b])
    return out


def track(dates, method: str = "greedy", min_iou: float = DEFAULT_MIN_IOU, first_id: int = 1) -> Tracks:
    """Persistent ids for ``dates``: a sequence (time order) of sequences of polygons, all in
    one CRS. Returns :class:`Tracks`."""
    if method not in METHODS:
        raise ValueError(f"tracking method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < float(min_iou) <= 1:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    known_ids: list[int] = []  # columns of the IoU matrix, in id order
    known_geoms: list = []
    result = Tracks(ids=[])
    next_id = int(first_id)
    for d, geoms in enumerate(dates):
        geoms = np.asarray(list(geoms), dtype=object).reshape(-1)
        areas = shapely.area(geoms) if len(geoms) else np.zeros(0)
        ious = iou_matrix(Footprints(tuple(range(len(geoms))), geoms),
                          Footprints(tuple(range(len(known_ids))), np.asarray(known_geoms, dtype=object)))
        pairs = match_greedy(ious, areas, min_iou) if method == "greedy" else match_hungarian(ious, min_iou)
        ids = np.zeros(len(geoms), dtype=np.int64)
        for i in _order(areas):
            if i in pairs:
                ids[i] = known_ids[pairs[i]]
            else:
                ids[i] = next_id
                known_ids.append(next_id)
                known_geoms.append(geoms[i])
                result.footprint[next_id] = geoms[i]
                result.first[next_id] = d
                next_id += 1
        for i, bid in enumerate(ids):
            result.last[int(bid)] = d
            result.areas.setdefault(int(bid), {})[d] = float(areas[i])
        result.ids.append(ids)
    return result

