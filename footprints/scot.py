"""The SCOT metric (SpaceNet Change and Object Tracking) of building footprints over image series.

It follows ``solaris/eval/scot.py`` (CosmiQ Works, solaris 0.5, Apache License 2.0): this module
is an independent port of its definition, rule for rule, so that its numbers are the same. It
uses numpy, shapely and scipy only (no geopandas, no project imports); the directory reader is
:mod:`footprints.scotio`.

An AOI is a mapping ``{date: Footprints}`` per side (truth, proposals); dates sort in time order.

Matching (per date, :func:`match_date`)
    Truth and proposals are matched one-to-one by optimal assignment
    (``scipy.optimize.linear_sum_assignment``, maximised) on the reward ``100 + IoU`` for a pair
    with IoU > threshold (strict) and 0 otherwise: as many matches as possible, then the largest
    total IoU. Rows are the truth ids in sorted order and columns the proposal ids in sorted
    order, as in solaris, so ties break the same way. IoU is computed as geopandas' ``overlay``
    does for solaris: invalid inputs are repaired with ``make_valid`` (polygonal parts kept), and
    only the polygonal part of an intersection counts; the areas in the IoU denominator are those
    of the geometries as given.

Tracking term (:func:`scot_aoi`)
    Each matched pair is a tracking TP unless it contradicts the last earlier date on which its
    truth id, or its proposal id, was matched (paired with another id then): that *mismatch*
    counts as one FP and one FN instead. Unmatched truth are FN, unmatched proposals FP. The
    score is ``tp / (tp + (fp + fn) / 2)`` over all dates of the AOI.

Change term
    The first date is skipped. An id is *new* on a date if it was not present on any earlier date
    of its own side. A matched pair of new ids is a change TP; a new truth id that is unmatched,
    or matched to an old proposal id, is a FN; a new proposal id that is unmatched, or matched to
    an old truth id, is a FP. The score is the F1 of these.

SCOT = ``(1 + beta²)·C·T / (beta²·C + T)``, 0 when both terms are 0: an F-beta in which beta > 1
leans towards tracking (beta = 2 by default). The total is the mean over AOIs.

The reference's quirks, kept because the numbers depend on them:

- An AOI's dates are the dates on which the *truth* has buildings (solaris reads one table of
  footprints, so a date without truth rows does not exist); proposals on other dates are ignored.
  Likewise the AOIs are those with truth buildings.
- An AOI with no new buildings after its first date has change score 0, hence SCOT 0, even when
  its tracking is perfect.
- Ground truth scored against itself gives SCOT 1.0 when at least one building is new.
- The reward ``100 + IoU`` maximises the number of matches first only while a date has fewer
  than about 100 matches' worth of IoU to trade; past that, solaris' objective is what is kept.

Ids must be unique within a date on each side (solaris' sparse IoU matrix would silently add up
the IoUs of duplicated ids; here they are refused by the reader).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy.optimize import linear_sum_assignment

__all__ = ["DEFAULT_IOU", "DEFAULT_BETA", "BASE_REWARD", "Footprints", "DateMatch", "match_date", "iou_matrix",
           "scot_aoi", "scot_aois", "combine"]

DEFAULT_IOU = 0.25
DEFAULT_BETA = 2.0
BASE_REWARD = 100.0

_POLYGONAL = ("Polygon", "MultiPolygon")
_POLYGONAL_IDS = (3, 6)  # shapely.get_type_id of Polygon, MultiPolygon


@dataclass(frozen=True)
class Footprints:
    """The buildings of one side (truth or proposals) on one date: ids (unique) and polygons."""

    ids: tuple
    geoms: np.ndarray = field(repr=False)

    def __post_init__(self):
        ids = tuple(self.ids)
        geoms = np.asarray(self.geoms, dtype=object).reshape(-1)
        if len(ids) != len(geoms):
            raise ValueError(f"{len(ids)} ids for {len(geoms)} geometries")
        if len(set(ids)) != len(ids):
            seen: set = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise ValueError(f"id {dup!r} appears more than once on one date")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "geoms", geoms)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> Footprints:
        return cls((), np.zeros(0, dtype=object))

    def sorted_by_id(self) -> Footprints:
        """The same buildings in ascending id order (solaris' row and column order)."""
        order = sorted(range(len(self.ids)), key=lambda i: self.ids[i])
        return Footprints(tuple(self.ids[i] for i in order), self.geoms[order] if order else self.geoms)


@dataclass(frozen=True)
class DateMatch:
    """The matching of one date: matched ``(truth id, proposal id)`` pairs and the id sets."""

    pairs: tuple
    truth_ids: frozenset
    proposal_ids: frozenset

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return len(self.proposal_ids) - len(self.pairs)

    @property
    def fn(self) -> int:
        return len(self.truth_ids) - len(self.pairs)


# ---------------------------------------------------------------------------------------- IoU


def _polygonal_part(g):
    """The polygonal part of a geometry as geopandas' ``overlay`` keeps it: a (multi)polygon as
    it is, the union of a collection's polygons, None for anything else."""
    if g is None:
        return None
    kind = g.geom_type
    if kind in _POLYGONAL:
        return g
    if kind == "GeometryCollection":
        parts = [p for p in shapely.get_parts(g) if p.geom_type in _POLYGONAL]
        return shapely.union_all(parts) if parts else None
    return None


def _overlay_ready(geoms: np.ndarray) -> np.ndarray:
    """Invalid polygons repaired as ``overlay(make_valid=True)`` does; None where nothing
    polygonal is left (that building then intersects nothing)."""
    out = geoms.copy()
    if not len(out):
        return out
    invalid = ~shapely.is_valid(out)
    for i in np.flatnonzero(invalid):
        out[i] = _polygonal_part(shapely.make_valid(out[i]))
    return out


def iou_matrix(truth: Footprints, proposals: Footprints) -> np.ndarray:
    """IoU of every (truth, proposal) pair, rows and columns in the given order; 0 where the
    footprints do not share area."""
    ious = np.zeros((len(truth), len(proposals)), dtype=float)
    if not len(truth) or not len(proposals):
        return ious
    t_areas = shapely.area(truth.geoms)
    p_areas = shapely.area(proposals.geoms)
    t_ready, p_ready = _overlay_ready(truth.geoms), _overlay_ready(proposals.geoms)
    t_ok = np.array([g is not None for g in t_ready])
    p_ok = np.array([g is not None for g in p_ready])
    if not t_ok.any() or not p_ok.any():
        return ious
    p_index = np.flatnonzero(p_ok)
    tree = shapely.STRtree(p_ready[p_index])
    t_index = np.flatnonzero(t_ok)
    ti, pj = tree.query(t_ready[t_index], predicate="intersects")
    if not len(ti):
        return ious
    ti, pj = t_index[ti], p_index[pj]
    inter = shapely.intersection(t_ready[ti], p_ready[pj])
    polygonal = np.isin(shapely.get_type_id(inter), _POLYGONAL_IDS)
    inter[polygonal] = shapely.make_valid(inter[polygonal])  # as overlay does, on every polygonal result
    for k in np.flatnonzero(~np.isin(shapely.get_type_id(inter), _POLYGONAL_IDS)):
        inter[k] = _polygonal_part(inter[k])  # a collection's polygons; lines and points share no area
    keep = np.array([g is not None for g in inter])
    ti, pj, inter = ti[keep], pj[keep], inter[keep]
    inter_area = shapely.area(inter)
    ious[ti, pj] = inter_area / (t_areas[ti] + p_areas[pj] - inter_area)
    return ious


# ---------------------------------------------------------------------------------- matching


def match_date(truth: Footprints, proposals: Footprints, threshold: float = DEFAULT_IOU,
               base_reward: float = BASE_REWARD) -> DateMatch:
    """One-to-one optimal matching of one date's truth and proposals (see the module doc)."""
    t, p = truth.sorted_by_id(), proposals.sorted_by_id()
    ious = iou_matrix(t, p)
    pairs: tuple = ()
    above = ious > threshold
    if above.any():
        reward = np.where(above, base_reward + ious, 0.0)
        rows, cols = linear_sum_assignment(reward, maximize=True)
        kept = ious[rows, cols] > threshold
        pairs = tuple((t.ids[r], p.ids[c]) for r, c in zip(rows[kept], cols[kept]))
    return DateMatch(pairs, frozenset(t.ids), frozenset(p.ids))


# ------------------------------------------------------------------------------------ scoring


def _f1(tp: int, fp: int, fn: int) -> float:
    # solaris' expression, operation for operation
    if tp + (fp + fn) / 2.0 > 0:
        return tp / (tp + (fp + fn) / 2.0)
    return 0.0


def combine(change: float, tracking: float, beta: float = DEFAULT_BETA) -> float:
    """SCOT from the change and tracking scores: their weighted harmonic mean (F-beta)."""
    if beta * beta * change + tracking > 0:
        return (1 + beta * beta) * (change * tracking) / (beta * beta * change + tracking)
    return 0.0


def scot_aoi(truth: dict, proposals: dict, threshold: float = DEFAULT_IOU, beta: float = DEFAULT_BETA,
             base_reward: float = BASE_REWARD) -> dict:
    """SCOT of one AOI. ``truth`` and ``proposals`` map each date to its :class:`Footprints`.

    The dates scored are those on which the truth has at least one building (solaris' rule);
    a proposals date missing from ``proposals`` has no proposals. Returns the scores and counts.
    """
    dates = sorted(d for d, fp in truth.items() if len(fp))
    tp = fp = fn = 0
    change_tp = change_fp = change_fn = 0
    mismatches = 0
    last_prop_of_truth: dict = {}  # truth id -> the proposal id it was last matched with
    last_truth_of_prop: dict = {}
    seen_truth: set = set()  # ids present on an earlier date, per side
    seen_prop: set = set()
    for i, date in enumerate(dates):
        m = match_date(truth[date], proposals.get(date, Footprints.empty()), threshold, base_reward)
        tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
        for g, p in m.pairs:
            # ids are unique within a date, so this date's own pairs never contradict each other
            if (g in last_prop_of_truth and last_prop_of_truth[g] != p) or \
                    (p in last_truth_of_prop and last_truth_of_prop[p] != g):
                mismatches += 1
        for g, p in m.pairs:
            last_prop_of_truth[g] = p
            last_truth_of_prop[p] = g
        if i > 0:
            for g, p in m.pairs:
                new_g, new_p = g not in seen_truth, p not in seen_prop
                change_tp += new_g and new_p
                change_fp += new_p and not new_g
                change_fn += new_g and not new_p
            matched_g = {g for g, _ in m.pairs}
            matched_p = {p for _, p in m.pairs}
            change_fp += len(m.proposal_ids - matched_p - seen_prop)
            change_fn += len(m.truth_ids - matched_g - seen_truth)
        seen_truth |= m.truth_ids
        seen_prop |= m.proposal_ids
    track_tp, track_fp, track_fn = tp - mismatches, fp + mismatches, fn + mismatches
    tracking = _f1(track_tp, track_fp, track_fn)
    change = _f1(change_tp, change_fp, change_fn)
    return {
        "scot": combine(change, tracking, beta),
        "tracking": tracking,
        "change": change,
        "tracking_tp": track_tp,
        "tracking_fp": track_fp,
        "tracking_fn": track_fn,
        "change_tp": int(change_tp),
        "change_fp": int(change_fp),
        "change_fn": int(change_fn),
        "mismatches": mismatches,
    }


def scot_aois(truth: dict, proposals: dict, threshold: float = DEFAULT_IOU, beta: float = DEFAULT_BETA,
              base_reward: float = BASE_REWARD) -> dict:
    """SCOT of several AOIs: ``{aoi: {date: Footprints}}`` per side.

    Returns ``{"total": {"scot": mean over AOIs}, "by_aoi": {aoi: scot_aoi(...)}}``. The AOIs
    scored are those whose truth has buildings (solaris' rule); the others are listed under
    ``"skipped"`` (present only when there are any). An AOI missing from ``proposals`` has no
    proposals. Raises ValueError when no AOI has truth buildings (solaris divides by zero).
    """
    aois = sorted(a for a, dates in truth.items() if any(len(fp) for fp in dates.values()))
    if not aois:
        raise ValueError("the ground truth has no buildings: SCOT is undefined")
    by_aoi = {}
    total = 0.0
    for aoi in aois:
        by_aoi[aoi] = scot_aoi(truth[aoi], proposals.get(aoi, {}), threshold, beta, base_reward)
        total += by_aoi[aoi]["scot"]
    result = {"total": {"scot": total / len(aois)}, "by_aoi": by_aoi}
    skipped = sorted(set(truth) - set(aois))
    if skipped:
        result["skipped"] = {a: "no ground-truth buildings on any date (solaris scores only AOIs with truth)"
                             for a in skipped}
    return result
