"""Evaluate: the SpaceNet building metric (F1 at IoU > 0.5), per image, per AOI and in total.

It reproduces solaris' ``spacenet_buildings_2`` / ``Evaluator.eval_iou_spacenet_csv``
(see ``fixtures/spacenet/EXPECTED.json`` ``_procedure``):

* per image, proposals are taken one at a time in descending confidence (stable sort); each
  takes the ground-truth (GT) polygon with the highest IoU among the *remaining* GT polygons
  of the same image that it intersects (ties: the first in file order); the pair is a true
  positive if that IoU > ``iou`` (strict) and the GT is then removed, otherwise the proposal
  is a false positive;
* invalid proposals are repaired with ``buffer(0)``; an invalid GT polygon scores IoU 0;
* minimum area (``min_area``): GT kept if ``area >= min_area``, proposals kept if
  ``area > min_area``; dropped proposals are neither TP nor FP. 20 px² by default on SpaceNet
  CSV truth, no filter (0) on GeoJSON;
* FN = kept GT polygons with area > 0 left unmatched; the images are the union of the
  ImageIds of truth and proposals (a ``POLYGON EMPTY`` row makes an image count with no FN);
* TP/FP/FN are summed per AOI (the ImageId without its trailing ``_imgN``) and in total, and
  precision, recall and F1 are recomputed from the sums.

Candidate pairs come from one shapely 2 ``STRtree`` query (never all pairs), so 100k truth and
100k proposals evaluate in seconds.

Pure functions first (frames in, dicts out), then the file readers and report writers used by
``footprints evaluate`` (``tasks/cli.py``) and by the pipeline's Evaluate task.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import shape as _shape_from_geojson

DEFAULT_IOU = 0.5
SPACENET_MIN_AREA = 20.0
FRAME_COLUMNS = ["image_id", "geometry", "confidence", "area", "source", "line"]
_IMG_SUFFIX = re.compile(r"_img\d+$")


class EvaluationInputError(ValueError):
    """An input file that cannot be evaluated at all (missing, unreadable, wrong columns)."""


@dataclass(frozen=True)
class Problem:
    """One row-level problem in an input file: where it is and what was done about it."""

    path: str
    where: str  # "line 12", "feature 3", "" for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.path} ({self.where}): {self.message}" if self.where else f"{self.path}: {self.message}"


# --------------------------------------------------------------------------------------------
# pure functions: frames in, matches and counts out
# --------------------------------------------------------------------------------------------

def aoi_of_image_id(image_id: str) -> str:
    """The AOI of a SpaceNet ImageId: the id without its trailing ``_imgN`` (else the id itself).

    >>> aoi_of_image_id("AOI_2_Vegas_img3457")
    'AOI_2_Vegas'
    """
    s = str(image_id)
    return _IMG_SUFFIX.sub("", s)


def prf(tp: int, fp: int, fn: int) -> dict:
    """Counts and precision/recall/F1 exactly as solaris computes them (0 when undefined)."""
    tp, fp, fn = int(tp), int(fp), int(fn)
    precision = tp / float(tp + fp) if tp + fp > 0 else 0.0
    recall = tp / float(tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision * recall > 0 else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def make_frame(image_ids: Iterable, geometries: Iterable, confidence: Iterable | None = None,
               source: str = "", lines: Iterable | None = None) -> pd.DataFrame:
    """The common tabular form: image_id, geometry (shapely), confidence, area, source, line.

    ``area`` is the area of the geometry as given (before any repair), as solaris filters on it.
    """
    geoms = np.empty(0, dtype=object)
    items = list(geometries)
    if items:
        geoms = np.empty(len(items), dtype=object)
        geoms[:] = items
    ids = np.asarray([str(i) for i in image_ids], dtype=object)
    n = len(geoms)
    if len(ids) != n:
        raise ValueError(f"make_frame: {len(ids)} image ids for {n} geometries")
    conf = np.ones(n) if confidence is None else np.asarray(list(confidence), dtype=float)
    area = shapely.area(geoms) if n else np.zeros(0)
    area = np.where(np.isnan(area), 0.0, area)
    line = np.arange(n) if lines is None else np.asarray(list(lines), dtype=np.int64)
    return pd.DataFrame({"image_id": pd.Series(ids, dtype=object), "geometry": pd.Series(geoms, dtype=object),
                         "confidence": conf, "area": area, "source": source, "line": line})


def _column(df: pd.DataFrame, name: str, default=None) -> np.ndarray:
    if name in df.columns:
        return np.asarray(df[name])
    if default is None:
        raise KeyError(f"frame has no {name!r} column (columns: {list(df.columns)})")
    return np.full(len(df), default)


def _geometries(df: pd.DataFrame) -> np.ndarray:
    """The geometry column as an object array of shapely geometries (None -> empty polygon)."""
    g = df["geometry"]
    arr = np.empty(len(g), dtype=object)
    arr[:] = list(g.values if hasattr(g, "values") else g)
    missing = shapely.is_missing(arr) if len(arr) else np.zeros(0, bool)
    if missing.any():
        arr[missing] = shapely.Polygon()
    return arr


def _areas(df: pd.DataFrame, geoms: np.ndarray) -> np.ndarray:
    if "area" in df.columns:
        return np.asarray(df["area"], dtype=float)
    a = shapely.area(geoms) if len(geoms) else np.zeros(0)
    return np.where(np.isnan(a), 0.0, a)


def repair(geoms: np.ndarray, method: str = "buffer0") -> np.ndarray:
    """Valid copies of invalid polygons: ``buffer(0)`` (solaris) or ``make_valid`` (polygonal part)."""
    geoms = np.asarray(geoms, dtype=object).copy()
    if not len(geoms):
        return geoms
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        if method == "buffer0":
            geoms[bad] = shapely.buffer(geoms[bad], 0.0)
        elif method == "make_valid":
            fixed = shapely.make_valid(geoms[bad])
            # keep the polygonal part only (make_valid may add lines/points)
            geoms[bad] = [g if g.geom_type in ("Polygon", "MultiPolygon") else
                          shapely.union_all([p for p in getattr(g, "geoms", [g]) if p.geom_type in ("Polygon", "MultiPolygon")])
                          for g in fixed]
        else:
            raise ValueError(f"repair method must be 'buffer0' or 'make_valid', not {method!r}")
    return geoms


def candidate_pairs(p_geoms: np.ndarray, p_codes: np.ndarray, t_geoms: np.ndarray, t_codes: np.ndarray,
                    prefilter: Callable | None = None):
    """(proposal index, truth index) of every pair in the same image whose geometries intersect.

    One STRtree over the truth bounding boxes, one vectorised query. Images usually share
    coordinates (every 650x650 chip spans 0..650), so each image's boxes are moved along x to a
    lane of its own first (a gap of at least one full extent between lanes; the boxes are grown
    by a few ulps so that the shift can only add candidates, never lose one). The exact
    ``intersects`` test then runs on the original geometries, pair by pair, vectorised.
    ``prefilter(pi, ti, p_bounds, t_bounds) -> bool mask`` may drop box pairs before that test.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if not len(p_geoms) or not len(t_geoms):
        return empty
    pb = shapely.bounds(p_geoms)
    tb = shapely.bounds(t_geoms)
    xs = np.concatenate([pb[:, [0, 2]].ravel(), tb[:, [0, 2]].ravel()])
    xmin, xmax = float(np.min(xs)), float(np.max(xs))
    span = xmax - xmin
    stride = 2.0 * span + 1.0

    def lanes(b, codes):
        off = codes.astype(float) * stride
        x0 = (b[:, 0] - xmin) + off
        x1 = (b[:, 2] - xmin) + off
        return x0, x1

    px0, px1 = lanes(pb, p_codes)
    tx0, tx1 = lanes(tb, t_codes)
    top = max(float(np.max(np.abs(px1))), float(np.max(np.abs(tx1))), abs(xmin), abs(xmax), 1.0)
    tol = 16.0 * float(np.spacing(top))
    ytop = max(float(np.max(np.abs(pb[:, [1, 3]]))), float(np.max(np.abs(tb[:, [1, 3]]))), 1.0)
    ytol = 4.0 * float(np.spacing(ytop))
    pbox = shapely.box(px0 - tol, pb[:, 1] - ytol, px1 + tol, pb[:, 3] + ytol)
    tbox = shapely.box(tx0 - tol, tb[:, 1] - ytol, tx1 + tol, tb[:, 3] + ytol)
    tree = shapely.STRtree(tbox)
    pi, ti = tree.query(pbox)
    same = p_codes[pi] == t_codes[ti]
    pi, ti = pi[same], ti[same]
    if not len(pi):
        return empty
    if prefilter is not None:
        keep = prefilter(pi, ti, pb, tb)
        pi, ti = pi[keep], ti[keep]
    hit = _safe_binary(shapely.intersects, p_geoms[pi], t_geoms[ti], default=False).astype(bool)
    return pi[hit].astype(np.int64), ti[hit].astype(np.int64)


def _safe_binary(fn, a: np.ndarray, b: np.ndarray, default):
    """``fn(a, b)`` vectorised; pairs on which GEOS raises get ``default`` instead of failing the run."""
    try:
        return fn(a, b)
    except shapely.errors.GEOSException:
        out = []
        for x, y in zip(a, b):
            try:
                out.append(fn(x, y))
            except shapely.errors.GEOSException:
                out.append(default)
        return np.asarray(out, dtype=object)


def pair_iou(a: np.ndarray, b: np.ndarray, area_a: np.ndarray | None = None,
             area_b: np.ndarray | None = None) -> np.ndarray:
    """area(a ∩ b) / area(a ∪ b) pair by pair, the union's area being area(a) + area(b) - area(a ∩ b)."""
    if not len(a):
        return np.zeros(0)
    inter = _safe_binary(shapely.intersection, a, b, default=None)
    if inter.dtype == object and any(g is None for g in inter):
        inter = np.array([shapely.Polygon() if g is None else g for g in inter], dtype=object)
    ia = shapely.area(inter)
    aa = shapely.area(a) if area_a is None else area_a
    ab = shapely.area(b) if area_b is None else area_b
    ua = aa + ab - ia
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ua > 0, ia / ua, 0.0)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)


def iou_upper_bound(a_bounds: np.ndarray, b_bounds: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """An upper bound of IoU from areas and bounding boxes alone: the intersection is at most
    min(area a, area b, area of the boxes' overlap), and IoU = I / (A + B - I) grows with I."""
    w = np.minimum(a_bounds[:, 2], b_bounds[:, 2]) - np.maximum(a_bounds[:, 0], b_bounds[:, 0])
    h = np.minimum(a_bounds[:, 3], b_bounds[:, 3]) - np.maximum(a_bounds[:, 1], b_bounds[:, 1])
    ib = np.minimum(np.minimum(area_a, area_b), np.clip(w, 0, None) * np.clip(h, 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        ub = np.where(area_a + area_b - ib > 0, ib / (area_a + area_b - ib), 0.0)
    return ub


@dataclass
class Matching:
    """Result of :func:`match_frames`; every array is indexed by row position in its frame."""

    truth_kept: np.ndarray      # bool: passed the min-area filter
    prop_kept: np.ndarray       # bool: passed the min-area filter (area > min_area and > 0)
    prop_match: np.ndarray      # int: row of the matched truth polygon, -1 if none (FP or dropped)
    prop_iou: np.ndarray        # float: IoU with the matched truth polygon (0 if none)
    truth_match: np.ndarray     # int: row of the proposal that matched it, -1 if none
    truth_best_iou: np.ndarray  # float: solaris' per-building ``iou_score``
    iou: float = DEFAULT_IOU
    min_area: float = 0.0
    n_pairs: int = 0

    @property
    def tp(self) -> np.ndarray:
        """Proposals that are true positives."""
        return self.prop_match >= 0

    @property
    def fp(self) -> np.ndarray:
        """Proposals that are false positives."""
        return self.prop_kept & (self.prop_match < 0)

    def fn(self, truth_area: np.ndarray) -> np.ndarray:
        """Ground-truth polygons that are false negatives (kept, area > 0, unmatched)."""
        return self.truth_kept & (np.asarray(truth_area) > 0) & (self.truth_match < 0)


def match_frames(truth_df: pd.DataFrame, prop_df: pd.DataFrame, iou: float = DEFAULT_IOU,
                 min_area: float = 0.0, repair_method: str = "buffer0", prune: bool = True) -> Matching:
    """Greedy one-to-one matching per image, in descending confidence (see the module doc).

    Frames need ``image_id`` and ``geometry``; ``confidence`` (default 1.0) and ``area``
    (default: area of the geometry as given) are optional. Geometries may be in any common
    coordinate system (pixels, metres); IoU is computed in it.

    ``prune``: skip the exact overlay for pairs whose IoU cannot exceed ``iou`` (bound from the
    areas and bounding boxes). Such a pair can never match nor displace a pair that can, so TP,
    FP, FN and every match are unchanged; only ``truth_best_iou`` values <= ``iou`` may then
    differ from solaris' per-building ``iou_score``. Use ``prune=False`` to reproduce those too.
    """
    t_geoms = _geometries(truth_df)
    p_geoms = _geometries(prop_df)
    nt, np_ = len(t_geoms), len(p_geoms)
    t_area = _areas(truth_df, t_geoms)
    p_area = _areas(prop_df, p_geoms)
    conf = np.asarray(_column(prop_df, "confidence", 1.0), dtype=float)
    conf = np.where(np.isnan(conf), -np.inf, conf)

    ids = np.concatenate([np.asarray(truth_df["image_id"], dtype=object),
                          np.asarray(prop_df["image_id"], dtype=object)]) if nt + np_ else np.zeros(0, object)
    codes, _ = pd.factorize(pd.Series(ids, dtype=object).astype(str)) if len(ids) else (np.zeros(0, np.int64), None)
    t_codes, p_codes = codes[:nt], codes[nt:]

    truth_kept = t_area >= min_area
    prop_kept = (p_area > min_area) & (p_area > 0)

    # candidates: kept, non-empty, valid GT (an invalid GT has IoU 0 with everything and so can
    # never be matched nor raise anyone's best IoU) and kept proposals, repaired
    t_valid = np.zeros(nt, bool)
    if nt:
        t_valid = truth_kept & ~shapely.is_empty(t_geoms) & shapely.is_valid(t_geoms)
    p_fixed = p_geoms.copy()
    if np_ and prop_kept.any():
        p_fixed[prop_kept] = repair(p_geoms[prop_kept], repair_method)
    p_ok = prop_kept.copy()
    if np_:
        p_ok &= ~shapely.is_empty(p_fixed) & shapely.is_valid(p_fixed)

    t_idx = np.flatnonzero(t_valid)
    p_idx = np.flatnonzero(p_ok)
    p_fixed_area = np.zeros(np_)
    if len(p_idx):
        p_fixed_area[p_idx] = shapely.area(p_fixed[p_idx])
    t_true_area = np.zeros(nt)
    if len(t_idx):
        t_true_area[t_idx] = shapely.area(t_geoms[t_idx])
    prefilter = None
    if prune:
        pa, ta = p_fixed_area[p_idx], t_true_area[t_idx]

        def prefilter(a, b, pb, tb):
            # a little slack: the bound and the exact IoU are rounded differently
            return iou_upper_bound(pb[a], tb[b], pa[a], ta[b]) > float(iou) - 1e-9

    pi, ti = candidate_pairs(p_fixed[p_idx], p_codes[p_idx], t_geoms[t_idx], t_codes[t_idx], prefilter)
    pi, ti = p_idx[pi], t_idx[ti]
    ious = pair_iou(p_fixed[pi], t_geoms[ti], p_fixed_area[pi], t_true_area[ti])

    # processing order: descending confidence, stable (ties keep file order)
    order = np.argsort(-conf, kind="stable")
    rank = np.empty(np_, np.int64)
    rank[order] = np.arange(np_)
    s = np.lexsort((ti, rank[pi]))
    pr_l, ti_l, iou_l = rank[pi][s].tolist(), ti[s].tolist(), ious[s].tolist()

    taken = bytearray(nt)
    best = [0.0] * nt
    prop_match = np.full(np_, -1, np.int64)
    prop_iou = np.zeros(np_)
    truth_match = np.full(nt, -1, np.int64)
    thr = float(iou)
    n, k = len(pr_l), 0
    while k < n:
        r = pr_l[k]
        bi, bv = -1, -1.0
        while k < n and pr_l[k] == r:
            t = ti_l[k]
            if not taken[t]:
                v = iou_l[k]
                if v > bv:
                    bi, bv = t, v
            k += 1
        if bi < 0:
            continue
        if bv > best[bi]:
            best[bi] = bv
        if bv > thr:
            taken[bi] = 1
            p = int(order[r])
            prop_match[p] = bi
            prop_iou[p] = bv
            truth_match[bi] = p
    return Matching(truth_kept=truth_kept, prop_kept=prop_kept, prop_match=prop_match, prop_iou=prop_iou,
                    truth_match=truth_match, truth_best_iou=np.asarray(best, dtype=float),
                    iou=thr, min_area=float(min_area), n_pairs=int(len(pi)))


def score(truth_df: pd.DataFrame, prop_df: pd.DataFrame, matching: Matching,
          aoi_of: Callable[[str], str] = aoi_of_image_id) -> dict:
    """``{"total": {...}, "by_aoi": {AOI: {...}}, "by_image": {ImageId: {...}}}`` from a matching.

    Each ``{...}`` is ``{"tp", "fp", "fn", "precision", "recall", "f1"}``; AOI and total
    figures are sums of the per-image counts with P/R/F1 recomputed from the sums.
    """
    t_ids = np.asarray(truth_df["image_id"], dtype=object).astype(str)
    p_ids = np.asarray(prop_df["image_id"], dtype=object).astype(str)
    images = sorted(set(t_ids.tolist()) | set(p_ids.tolist()))
    index = {img: i for i, img in enumerate(images)}
    t_codes = np.array([index[x] for x in t_ids], dtype=np.int64)
    p_codes = np.array([index[x] for x in p_ids], dtype=np.int64)
    m = len(images)
    t_area = _areas(truth_df, _geometries(truth_df))
    tp = np.bincount(p_codes[matching.tp], minlength=m)
    fp = np.bincount(p_codes[matching.fp], minlength=m)
    fn = np.bincount(t_codes[matching.fn(t_area)], minlength=m)

    by_image = {img: prf(tp[i], fp[i], fn[i]) for i, img in enumerate(images)}
    sums: dict[str, list[int]] = {}
    for i, img in enumerate(images):
        acc = sums.setdefault(aoi_of(img), [0, 0, 0])
        acc[0] += int(tp[i])
        acc[1] += int(fp[i])
        acc[2] += int(fn[i])
    by_aoi = {a: prf(*sums[a]) for a in sorted(sums)}
    total = prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    return {"total": total, "by_aoi": by_aoi, "by_image": by_image}


def evaluate_frames(truth_df: pd.DataFrame, prop_df: pd.DataFrame, iou: float = DEFAULT_IOU,
                    min_area: float = 0.0, aoi_of: Callable[[str], str] = aoi_of_image_id,
                    repair_method: str = "buffer0", prune: bool = True) -> dict:
    """The SpaceNet metric on two frames already in memory (see :func:`make_frame`).

    No file access: the pipeline calls it with the polygons it has (e.g. in the image CRS,
    metres; then ``min_area`` is in m²).
    """
    m = match_frames(truth_df, prop_df, iou=iou, min_area=min_area, repair_method=repair_method, prune=prune)
    return score(truth_df, prop_df, m, aoi_of=aoi_of)


def iou_by_building(truth_df: pd.DataFrame, matching: Matching) -> pd.DataFrame:
    """The truth frame with solaris' per-building ``iou_score`` and the matched proposal row."""
    out = truth_df.copy()
    out["iou_score"] = matching.truth_best_iou
    out["matched_proposal"] = matching.truth_match
    return out


def per_image_frame(result: dict, aoi_of: Callable[[str], str] = aoi_of_image_id) -> pd.DataFrame:
    """One row per image: ImageId, AOI, tp, fp, fn, precision, recall, f1."""
    rows = [{"ImageId": img, "AOI": aoi_of(img), **vals} for img, vals in result["by_image"].items()]
    return pd.DataFrame(rows, columns=["ImageId", "AOI", "tp", "fp", "fn", "precision", "recall", "f1"])


# --------------------------------------------------------------------------------------------
# readers: SpaceNet CSV, GeoJSON file, directory of GeoJSON files
# --------------------------------------------------------------------------------------------

def _empty_frame(source: str = "") -> pd.DataFrame:
    return make_frame([], np.zeros(0, dtype=object), [], source=source, lines=[])


def _check_geometries(geoms: np.ndarray, wheres: list[str], path: str, role: str) -> list[Problem]:
    """Row-level notes: non-polygonal geometries, invalid polygons (and what the metric does)."""
    problems: list[Problem] = []
    if not len(geoms):
        return problems
    types = shapely.get_type_id(geoms)
    empty = shapely.is_empty(geoms)
    polygonal = (types == 3) | (types == 6)
    for i in np.flatnonzero(~polygonal & ~empty):
        problems.append(Problem(path, wheres[i], f"{geoms[i].geom_type} is not a polygon: it has no area and is ignored"))
    invalid = polygonal & ~empty & ~shapely.is_valid(geoms)
    for i in np.flatnonzero(invalid):
        reason = shapely.is_valid_reason(geoms[i])
        action = ("repaired with buffer(0)" if role == "proposals"
                  else "ground truth kept but scores IoU 0 with every proposal (solaris rule)")
        problems.append(Problem(path, wheres[i], f"invalid polygon ({reason}): {action}"))
    return problems


def _to_2d(geoms: np.ndarray) -> np.ndarray:
    if len(geoms) and shapely.has_z(geoms).any():
        return shapely.force_2d(geoms)
    return geoms


def read_spacenet_csv(path, role: str = "proposals", wkt_column: str = "PolygonWKT_Pix"):
    """A SpaceNet CSV (``ImageId,BuildingId,PolygonWKT_Pix[,PolygonWKT_Geo][,Confidence]``).

    Returns ``(frame, problems)``. Rows whose WKT cannot be parsed, whose ImageId is empty or
    whose Confidence is not a number are reported (file, line, problem) and skipped; invalid
    polygons are kept and reported. A missing file or missing columns raise
    :class:`EvaluationInputError` naming the file.
    """
    path = Path(path)
    p = str(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise EvaluationInputError(f"{p}: cannot open {role} CSV: {e.strerror or e}") from e
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise EvaluationInputError(f"{p}: empty file, expected a SpaceNet CSV header "
                                       f"(ImageId,BuildingId,{wkt_column},...)") from None
        except csv.Error as e:
            raise EvaluationInputError(f"{p}: not a CSV file ({e})") from None
        cols = [h.strip() for h in header]
        lower = {c.lower(): i for i, c in enumerate(cols)}
        if "imageid" not in lower or wkt_column.lower() not in lower:
            raise EvaluationInputError(
                f"{p}: not a SpaceNet CSV: need columns ImageId and {wkt_column}, found {cols}")
        i_id, i_wkt = lower["imageid"], lower[wkt_column.lower()]
        i_conf = next((lower[c] for c in ("confidence", "conf") if c in lower), None)
        need = max(i_id, i_wkt, i_conf if i_conf is not None else 0) + 1
        ids, wkts, confs, lines = [], [], [], []
        problems: list[Problem] = []
        try:
            for row in reader:
                ln = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) < need:
                    problems.append(Problem(p, f"line {ln}", f"{len(row)} fields, expected {len(cols)}: row skipped"))
                    continue
                img = row[i_id].strip()
                if not img:
                    problems.append(Problem(p, f"line {ln}", "empty ImageId: row skipped"))
                    continue
                c = 1.0
                if i_conf is not None:
                    try:
                        c = float(row[i_conf])
                        if math.isnan(c):
                            raise ValueError
                    except ValueError:
                        problems.append(Problem(p, f"line {ln}", f"Confidence {row[i_conf]!r} is not a number: row skipped"))
                        continue
                ids.append(img)
                wkts.append(row[i_wkt])
                confs.append(c)
                lines.append(ln)
        except csv.Error as e:
            raise EvaluationInputError(f"{p} (line {reader.line_num}): malformed CSV ({e})") from None

    geoms = shapely.from_wkt(np.asarray(wkts, dtype=object), on_invalid="ignore") if wkts else np.zeros(0, object)
    bad = [i for i, g in enumerate(geoms) if g is None]
    for i in bad:
        try:
            shapely.from_wkt(wkts[i], on_invalid="raise")
            msg = "empty WKT"
        except Exception as e:  # noqa: BLE001 - the GEOS parser message is what we report
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        shown = wkts[i] if len(wkts[i]) <= 60 else wkts[i][:57] + "..."
        problems.append(Problem(p, f"line {lines[i]}", f"unparseable WKT {shown!r} ({msg}): row skipped"))
    if bad:
        keep = np.ones(len(geoms), bool)
        keep[bad] = False
        geoms = geoms[keep]
        ids = [x for x, k in zip(ids, keep) if k]
        confs = [x for x, k in zip(confs, keep) if k]
        lines = [x for x, k in zip(lines, keep) if k]
    geoms = _to_2d(np.asarray(geoms, dtype=object))
    problems += _check_geometries(geoms, [f"line {ln}" for ln in lines], p, role)
    return make_frame(ids, geoms, confs, source=p, lines=lines), problems


def _load_json(path: Path, role: str):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise EvaluationInputError(f"{path}: cannot open {role} GeoJSON: {e.strerror or e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise EvaluationInputError(f"{path} (line {e.lineno}): not valid JSON ({e.msg})") from None


def read_geojson(path, role: str = "proposals", image_id: str | None = None):
    """A GeoJSON FeatureCollection (or single Feature) of polygons. Returns ``(frame, problems)``.

    ImageId: ``image_id`` if given, else the feature's ``ImageId``/``image`` property, else the
    file stem. Confidence: the ``confidence``/``Confidence`` property, default 1.0. Coordinates
    are used as they are (truth and proposals must share a CRS). Features whose geometry cannot
    be read are reported and skipped.
    """
    path = Path(path)
    p = str(path)
    doc = _load_json(path, role)
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise EvaluationInputError(f"{p}: FeatureCollection without a 'features' list")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    else:
        kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise EvaluationInputError(f"{p}: expected a GeoJSON FeatureCollection, found {kind!r}")
    stem = path.stem
    ids, geoms, confs, lines, problems = [], [], [], [], []
    for n, f in enumerate(feats):
        where = f"feature {n}"
        if not isinstance(f, dict):
            problems.append(Problem(p, where, "not a GeoJSON Feature object: skipped"))
            continue
        props = f.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        g = f.get("geometry")
        if g is None:
            problems.append(Problem(p, where, "null geometry: skipped"))
            continue
        try:
            geom = _shape_from_geojson(g)
        except Exception as e:  # noqa: BLE001 - malformed coordinates come in many exception types
            problems.append(Problem(p, where, f"unreadable geometry ({type(e).__name__}: {e}): skipped"))
            continue
        c = props.get("confidence", props.get("Confidence", 1.0))
        try:
            c = float(1.0 if c is None else c)
            if math.isnan(c):
                raise ValueError
        except (TypeError, ValueError):
            problems.append(Problem(p, where, f"confidence {c!r} is not a number: skipped"))
            continue
        img = image_id if image_id is not None else props.get("ImageId", props.get("image"))
        ids.append(str(img) if img not in (None, "") else stem)
        geoms.append(geom)
        confs.append(c)
        lines.append(n)
    garr = _to_2d(np.asarray(geoms, dtype=object)) if geoms else np.zeros(0, object)
    problems += _check_geometries(garr, [f"feature {n}" for n in lines], p, role)
    return make_frame(ids, garr, confs, source=p, lines=lines), problems


GEOJSON_SUFFIXES = (".geojson", ".json")


def geojson_files(directory) -> dict[str, Path]:
    """``{file stem: path}`` for the GeoJSON files of a directory (not recursive)."""
    d = Path(directory)
    return {f.stem: f for f in sorted(d.iterdir()) if f.is_file() and f.suffix.lower() in GEOJSON_SUFFIXES}


def read_geojson_dir(directory, role: str = "proposals"):
    """Every GeoJSON file of a directory; the ImageId of each feature is its file's stem, so
    truth and proposal directories are matched by file name. Returns ``(frame, problems)``."""
    d = Path(directory)
    files = geojson_files(d)
    if not files and role == "truth":
        raise EvaluationInputError(f"{d}: directory has no GeoJSON files (*.geojson, *.json)")
    frames, problems = [], []
    if not files:
        problems.append(Problem(str(d), "", "no GeoJSON files: no proposals"))
    for stem, f in files.items():
        fr, pr = read_geojson(f, role=role, image_id=stem)
        if not len(fr):
            # an image with no buildings still counts, as a SpaceNet CSV's POLYGON EMPTY row does
            fr = make_frame([stem], [shapely.Polygon()], [1.0], source=str(f), lines=[-1])
        frames.append(fr)
        problems += pr
    frame = pd.concat(frames, ignore_index=True) if frames else _empty_frame(str(d))
    return frame, problems


def input_format(path) -> str:
    """'csv', 'geojson' or 'dir' for a truth/proposals path (by suffix, else by first byte)."""
    p = Path(path)
    if p.is_dir():
        return "dir"
    if not p.exists():
        raise EvaluationInputError(f"{p}: no such file or directory")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in GEOJSON_SUFFIXES:
        return "geojson"
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as e:
        raise EvaluationInputError(f"{p}: cannot read: {e.strerror or e}") from e
    return "geojson" if head[:1] in (b"{", b"[") else "csv"


def read_footprints(path, role: str = "proposals"):
    """Any supported input: ``(frame, problems, format)`` with format 'csv', 'geojson' or 'dir'."""
    fmt = input_format(path)
    if fmt == "csv":
        frame, problems = read_spacenet_csv(path, role=role)
    elif fmt == "geojson":
        frame, problems = read_geojson(path, role=role)
    else:
        frame, problems = read_geojson_dir(path, role=role)
    return frame, problems, fmt


def default_min_area(truth_format: str) -> float:
    """20 px² on SpaceNet CSV truth (the SpaceNet 2 / off-nadir setting), no filter otherwise."""
    return SPACENET_MIN_AREA if truth_format == "csv" else 0.0


def evaluate_files(truth, proposals, iou: float = DEFAULT_IOU, min_area: float | None = None,
                   problems: list | None = None) -> dict:
    """The SpaceNet metric on two inputs (SpaceNet CSV, GeoJSON file or directory of GeoJSON).

    ``min_area`` None means :func:`default_min_area` of the truth's format. Row-level problems
    of either file are appended to ``problems`` (if given) and listed under the result's
    ``"problems"`` key (present only when there are any). Raises :class:`EvaluationInputError`
    for inputs that cannot be evaluated at all.
    """
    if not 0.0 <= float(iou) < 1.0:
        raise EvaluationInputError(f"IoU threshold must be in [0, 1), got {iou}")
    t_df, t_prob, t_fmt = read_footprints(truth, role="truth")
    p_df, p_prob, _ = read_footprints(proposals, role="proposals")
    if min_area is None:
        min_area = default_min_area(t_fmt)
    result = evaluate_frames(t_df, p_df, iou=iou, min_area=float(min_area))
    found = t_prob + p_prob
    if problems is not None:
        problems.extend(found)
    if found:
        result["problems"] = [str(x) for x in found]
    return result


# --------------------------------------------------------------------------------------------
# report files (atomic)
# --------------------------------------------------------------------------------------------

def _atomic_write_text(path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def result_json(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=False) + "\n"


def write_report(result: dict, metrics_json_path, per_image_csv_path=None) -> None:
    """Write ``metrics.json`` (the result dict) and the per-image CSV, each atomically (temp file
    in the same directory, then ``os.replace``). Either path may be None to skip that file."""
    if metrics_json_path is not None:
        _atomic_write_text(metrics_json_path, result_json(result))
    if per_image_csv_path is not None:
        _atomic_write_text(per_image_csv_path, per_image_frame(result).to_csv(index=False))


__all__ = [
    "DEFAULT_IOU", "SPACENET_MIN_AREA", "EvaluationInputError", "Problem", "Matching",
    "aoi_of_image_id", "prf", "make_frame", "repair", "candidate_pairs", "pair_iou", "iou_upper_bound",
    "match_frames",
    "score", "evaluate_frames", "iou_by_building", "per_image_frame", "read_spacenet_csv",
    "read_geojson", "read_geojson_dir", "geojson_files", "input_format", "read_footprints",
    "default_min_area", "evaluate_files", "result_json", "write_report", "split_block", "Evaluate",
]


# ---------------------------------------------------------------- the Luigi task

import luigi  # noqa: E402  (the pure functions above need no Luigi)


def split_block(result: dict, images) -> dict:
    """TP/FP/FN summed over a subset of images, with P/R/F1 recomputed from the sums."""
    images = set(images)
    tp = sum(v["tp"] for k, v in result["by_image"].items() if k in images)
    fp = sum(v["fp"] for k, v in result["by_image"].items() if k in images)
    fn = sum(v["fn"] for k, v in result["by_image"].items() if k in images)
    return {"images": sorted(images & set(result["by_image"])), **prf(tp, fp, fn)}


class Evaluate(luigi.Task):
    """The SpaceNet metric of the run's deduplicated buildings against the labels.

    Per image, per AOI and in total, plus per split (train/val/test) so the headline is the
    test split's F1. Writes ``<workdir>/outputs/<run>/metrics.json`` and ``per_image.csv``.
    Polygons are compared in each image's CRS; IoU is unit-free, so no area filter applies
    (the GeoJSON rule) unless ``min_area`` (m²) is set.
    """

    images = luigi.ListParameter(description="image ids to evaluate")
    iou = luigi.FloatParameter(default=DEFAULT_IOU)
    min_area = luigi.FloatParameter(default=0.0, description="m²")

    def requires(self):
        from tasks.labels import LoadLabels
        from tasks.outputs import WriteRunOutputs
        from tasks.sources import label_path

        return {"outputs": WriteRunOutputs(images=list(self.images)),
                "labels": [LoadLabels(path=str(label_path(i))) for i in self.images if label_path(i)]}

    def output(self):
        from tasks.outputs import outputs_dir

        tag = "" if (self.iou, self.min_area) == (DEFAULT_IOU, 0.0) else f"_iou{self.iou:g}_min{self.min_area:g}"
        d = outputs_dir()
        return {"metrics": luigi.LocalTarget(str(d / f"metrics{tag}.json")),
                "per_image": luigi.LocalTarget(str(d / f"per_image{tag}.csv"))}

    def run(self):
        from affine import Affine

        from tasks import db
        from tasks.labels import source_name
        from tasks.outputs import read_buildings, read_truth
        from tasks.polygonize import run_key
        from tasks.sources import label_path
        from tasks.tiling import footprint_4326, read_tile_index, window_polygon, TileImage

        run = run_key()
        t_ids, t_geoms, p_ids, p_geoms, p_conf = [], [], [], [], []
        with db.connection() as conn:
            for n, image in enumerate(self.images):
                index = read_tile_index(TileImage(image=image).output().path)
                extent = window_polygon(Affine(*index["transform"][:6]), 0, 0, index["width"], index["height"])
                srid = db.srid_for_crs(conn, index["crs_wkt"])
                lp = label_path(image)
                truth = read_truth(conn, [source_name(lp)], extent, srid, footprint_4326(extent, index["crs_wkt"])) if lp else []
                if not truth:  # the image still counts (its proposals are all FP)
                    truth = [shapely.Polygon()]
                t_ids += [image] * len(truth)
                t_geoms += truth
                for b in read_buildings(conn, run, image):
                    p_ids.append(image)
                    p_geoms.append(b["geom"])
                    p_conf.append(b["score"])
                self.set_progress_percentage(int(80 * (n + 1) / len(self.images)))
        result = evaluate_frames(make_frame(t_ids, t_geoms), make_frame(p_ids, p_geoms, p_conf),
                                 iou=self.iou, min_area=self.min_area, aoi_of=lambda i: i)
        try:
            from tasks.split import split_images

            splits = split_images(list(self.images))
        except Exception:  # no labelled split configuration: report everything as one split
            splits = {}
        result["splits"] = {name: split_block(result, imgs) for name, imgs in splits.items() if imgs}
        result["splits"]["all"] = split_block(result, self.images)
        result["run"] = run
        result["iou_threshold"] = self.iou
        out = self.output()
        write_report(result, out["metrics"].path, out["per_image"].path)
        t = result["splits"].get("test", result["splits"]["all"])
        self.set_status_message(f"F1 {t['f1']:.3f} (P {t['precision']:.3f}, R {t['recall']:.3f})")
