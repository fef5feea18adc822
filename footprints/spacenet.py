"""The SpaceNet building metric (F1 at IoU > 0.5), per image, per AOI and in total.

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

Building types (frames with a ``class`` column on both sides): ``by_class`` scores each class on
its own (a match needs the IoU rule above *and* the same class: truth and proposals of one class
are matched as above), and ``class_mean_f1`` is the unweighted mean of the per-class F1s over
the classes that occur in the truth or the proposals (the Tanzania challenge's figure).

Candidate pairs come from one shapely 2 ``STRtree`` query (never all pairs), so 100k truth and
100k proposals evaluate in seconds.

Pure functions only, frames in and dicts out, with no project imports (numpy, pandas and shapely
alone), so the metric can be lifted as it is. The file readers and report writers used by
``footprints evaluate`` and by the pipeline's Evaluate task are in :mod:`footprints.evalio`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import shapely

__all__ = [
    "DEFAULT_IOU", "SPACENET_MIN_AREA", "FRAME_COLUMNS", "Matching", "aoi_of_image_id", "prf", "make_frame",
    "repair", "candidate_pairs", "pair_iou", "iou_upper_bound", "match_frames", "score", "evaluate_frames",
    "iou_by_building", "per_image_frame", "class_scores",
]

DEFAULT_IOU = 0.5
SPACENET_MIN_AREA = 20.0
FRAME_COLUMNS = ["image_id", "geometry", "confidence", "area", "source", "line"]


def aoi_of_image_id(image_id: str) -> str:
    """The AOI of a SpaceNet ImageId: the id without its trailing ``_imgN`` (else the id itself).

    The metric's default grouping; the same rule as ``footprints.names.aoi_of_image_id``,
    written without it so that this module imports nothing of the project.

    >>> aoi_of_image_id("AOI_2_Vegas_img3457")
    'AOI_2_Vegas'
    """
    s = str(image_id)
    head, sep, tail = s.rpartition("_img")
    return head if sep and tail.isdecimal() else s


def prf(tp: int, fp: int, fn: int) -> dict:
    """Counts and precision/recall/F1 exactly as solaris computes them (0 when undefined)."""
    tp, fp, fn = int(tp), int(fp), int(fn)
    precision = tp / float(tp + fp) if tp + fp > 0 else 0.0
    recall = tp / float(tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision * recall > 0 else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def make_frame(image_ids: Iterable, geometries: Iterable, confidence: Iterable | None = None,
               source: str = "", lines: Iterable | None = None, classes: Iterable | None = None) -> pd.DataFrame:
    """The common tabular form: image_id, geometry (shapely), confidence, area, source, line
    (and ``class`` when ``classes`` is given: building types).

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
    df = pd.DataFrame({"image_id": pd.Series(ids, dtype=object), "geometry": pd.Series(geoms, dtype=object),
                       "confidence": conf, "area": area, "source": source, "line": line})
    if classes is not None:
        cls = [None if c is None else str(c) for c in classes]
        if len(cls) != n:
            raise ValueError(f"make_frame: {len(cls)} classes for {n} geometries")
        df["class"] = pd.Series(cls, dtype=object)
    return df


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
    out = score(truth_df, prop_df, m, aoi_of=aoi_of)
    if "class" in truth_df.columns and "class" in prop_df.columns:
        out.update(class_scores(truth_df, prop_df, iou=iou, min_area=min_area, repair_method=repair_method,
                                prune=prune))
    return out


def class_scores(truth_df: pd.DataFrame, prop_df: pd.DataFrame, iou: float = DEFAULT_IOU, min_area: float = 0.0,
                 classes=None, repair_method: str = "buffer0", prune: bool = True) -> dict:
    """``{"by_class": {class: {tp, fp, fn, precision, recall, f1}}, "class_mean_f1": x}`` of two
    frames with a ``class`` column: each class matched on its own (same rule as
    :func:`match_frames`, so a match needs the IoU *and* the same class), counts summed over
    the images. ``classes``: their order (default: sorted, those of either frame); the mean is
    over the classes that occur in the truth or the proposals."""
    t_cls = np.asarray(truth_df["class"], dtype=object)
    p_cls = np.asarray(prop_df["class"], dtype=object)
    seen = {c for c in np.concatenate([t_cls, p_cls]).tolist() if isinstance(c, str)}
    order = list(classes) if classes is not None else sorted(seen)
    by_class = {}
    for c in order:
        t = truth_df[t_cls == c]
        p = prop_df[p_cls == c]
        m = match_frames(t, p, iou=iou, min_area=min_area, repair_method=repair_method, prune=prune)
        fn = m.fn(_areas(t, _geometries(t)))
        by_class[str(c)] = prf(int(m.tp.sum()), int(m.fp.sum()), int(fn.sum()))
    f1s = [by_class[str(c)]["f1"] for c in order if c in seen]
    return {"by_class": by_class, "class_mean_f1": float(np.mean(f1s)) if f1s else 0.0}


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
