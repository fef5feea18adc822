"""Benchmark: `footprints evaluate` on 100,000 truth and 100,000 proposal polygons.

Data: 650x650 px chips (as SpaceNet 2), 100 buildings per chip on a jittered 10x10 grid,
rotated rectangles of 12-50 px. Proposals: 90% are jittered copies of a building (shift,
scale, rotation), 10% are false positives anywhere in the chip; confidences uniform. All
seeded, so every run evaluates the same data.

Measured in the same run:
* the full evaluation: ``evaluate_files`` on the two SpaceNet CSVs (parsing included), and the
  matching alone (``evaluate_frames``) on the frames in memory;
* the peer: an all-pairs loop, each proposal (in confidence order) tested with shapely against
  every truth polygon (vectorised over the truth array, so a stronger peer than a pure Python
  double loop), then IoU with the intersecting ones of its image and greedy matching. It runs
  on a subset of 5,000 truth + their ~5,000 proposals and is extrapolated by
  (n_truth * n_prop) / (n_truth_subset * n_prop_subset), its cost being quadratic. The subset
  counts must equal evaluate's counts on the same subset (checked).

Usage: ``.venv/bin/python bench/evaluate.py [--n 100000] [--subset 5000]``
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from footprints import evalio  # noqa: E402
from footprints import spacenet as sn  # noqa: E402

CHIP = 650.0
GRID = 10
PER_IMAGE = GRID * GRID


def rectangles(cx, cy, w, h, angle):
    """Rotated rectangles as shapely polygons, vectorised."""
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5]])
    dx = corners[None, :, 0] * w[:, None]
    dy = corners[None, :, 1] * h[:, None]
    x = cx[:, None] + dx * c[:, None] - dy * s[:, None]
    y = cy[:, None] + dx * s[:, None] + dy * c[:, None]
    return shapely.polygons(np.stack([x, y], axis=-1))


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_img = int(np.ceil(n / PER_IMAGE))
    img = np.repeat(np.arange(n_img), PER_IMAGE)[:n]
    cell = np.tile(np.arange(PER_IMAGE), n_img)[:n]
    step = CHIP / GRID
    cx = (cell % GRID + 0.5) * step + rng.uniform(-6, 6, n)
    cy = (cell // GRID + 0.5) * step + rng.uniform(-6, 6, n)
    w, h = rng.uniform(12, 45, n), rng.uniform(12, 45, n)
    ang = rng.uniform(0, np.pi / 2, n)
    truth = rectangles(cx, cy, w, h, ang)

    n_true = int(round(0.9 * n))
    pick = np.sort(rng.choice(n, n_true, replace=False))
    pcx = cx[pick] + rng.normal(0, 2.5, n_true)
    pcy = cy[pick] + rng.normal(0, 2.5, n_true)
    pw = w[pick] * rng.uniform(0.8, 1.2, n_true)
    ph = h[pick] * rng.uniform(0.8, 1.2, n_true)
    pang = ang[pick] + rng.normal(0, 0.08, n_true)
    n_false = n - n_true
    fimg = rng.integers(0, n_img, n_false)
    fcx, fcy = rng.uniform(20, CHIP - 20, n_false), rng.uniform(20, CHIP - 20, n_false)
    fw, fh = rng.uniform(10, 40, n_false), rng.uniform(10, 40, n_false)
    fang = rng.uniform(0, np.pi / 2, n_false)
    props = np.concatenate([rectangles(pcx, pcy, pw, ph, pang), rectangles(fcx, fcy, fw, fh, fang)])
    pimg = np.concatenate([img[pick], fimg])
    conf = rng.uniform(0, 1, n)
    names = np.array([f"AOI_9_Bench_img{i}" for i in range(n_img)], dtype=object)
    t_df = sn.make_frame(names[img], truth)
    p_df = sn.make_frame(names[pimg], props, conf)
    return t_df, p_df


def write_csv(df: pd.DataFrame, path: Path, with_conf: bool) -> None:
    out = pd.DataFrame({"ImageId": df["image_id"], "BuildingId": np.arange(len(df)),
                        "PolygonWKT_Pix": shapely.to_wkt(np.asarray(df["geometry"]), rounding_precision=3)})
    if with_conf:
        out["Confidence"] = df["confidence"].round(6)
    out.to_csv(path, index=False)


def all_pairs(t_df: pd.DataFrame, p_df: pd.DataFrame, iou: float = 0.5, min_area: float = 0.0):
    """Peer: every proposal against every truth polygon (no spatial index), greedy matching."""
    tg = np.asarray(t_df["geometry"], dtype=object)
    pg = np.asarray(p_df["geometry"], dtype=object)
    timg = np.asarray(t_df["image_id"], dtype=object)
    pimg = np.asarray(p_df["image_id"], dtype=object)
    remaining = np.asarray(t_df["area"]) >= min_area
    tp = fp = 0
    for i in np.argsort(-np.asarray(p_df["confidence"]), kind="stable"):
        p = pg[i]
        if not p.area > min_area:
            continue
        hits = np.flatnonzero(shapely.intersects(p, tg) & remaining & (timg == pimg[i]))
        best, bj = -1.0, -1
        for j in hits:
            v = p.intersection(tg[j]).area / p.union(tg[j]).area
            if v > best:
                best, bj = v, j
        if bj >= 0 and best > iou:
            remaining[bj] = False
            tp += 1
        else:
            fp += 1
    fn = int((remaining & (np.asarray(t_df["area"]) > 0)).sum())
    return tp, fp, fn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="truth polygons (and as many proposals)")
    ap.add_argument("--subset", type=int, default=5_000, help="truth polygons for the all-pairs peer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    t_df, p_df = make_data(args.n, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tcsv, pcsv = Path(tmp) / "truth.csv", Path(tmp) / "preds.csv"
        write_csv(t_df, tcsv, with_conf=False)
        write_csv(p_df, pcsv, with_conf=True)
        print(f"info: generated {len(t_df)} truth + {len(p_df)} proposals "
              f"in {t_df['image_id'].nunique()} images ({time.perf_counter() - t0:.1f}s)")

        t0 = time.perf_counter()
        result = evalio.evaluate_files(tcsv, pcsv, iou=0.5, min_area=0)
        t_files = time.perf_counter() - t0

    t0 = time.perf_counter()
    frames_result = sn.evaluate_frames(t_df, p_df, iou=0.5, min_area=0)
    t_frames = time.perf_counter() - t0
    tot = result["total"]
    print(f"info: evaluate_files (CSV parse + match + score): {t_files:.2f}s; "
          f"evaluate_frames (in memory): {t_frames:.2f}s; TP/FP/FN {tot['tp']}/{tot['fp']}/{tot['fn']}, "
          f"F1 {tot['f1']:.4f}")
    if frames_result["total"]["tp"] != tot["tp"]:
        print("info: note: CSV rounding changed the TP count "
              f"({frames_result['total']['tp']} in memory vs {tot['tp']} from CSV)")

    # peer: all pairs on the first images holding `subset` truth polygons
    n_img = max(1, args.subset // PER_IMAGE)
    keep_imgs = set(f"AOI_9_Bench_img{i}" for i in range(n_img))
    ts = t_df[t_df["image_id"].isin(keep_imgs)].reset_index(drop=True)
    ps = p_df[p_df["image_id"].isin(keep_imgs)].reset_index(drop=True)
    t0 = time.perf_counter()
    naive = all_pairs(ts, ps)
    t_naive = time.perf_counter() - t0
    sub = sn.evaluate_frames(ts, ps, iou=0.5, min_area=0)["total"]
    if (sub["tp"], sub["fp"], sub["fn"]) != naive:
        print(f"error: all-pairs peer disagrees on the subset: {naive} vs "
              f"{(sub['tp'], sub['fp'], sub['fn'])}", file=sys.stderr)
        return 1
    scale = (len(t_df) * len(p_df)) / float(len(ts) * len(ps))
    t_naive_full = t_naive * scale
    print(f"info: all-pairs loop on {len(ts)} truth x {len(ps)} proposals: {t_naive:.2f}s "
          f"(same counts {naive[0]}/{naive[1]}/{naive[2]}), extrapolated x{scale:.0f} to "
          f"{len(t_df)} x {len(p_df)}: {t_naive_full:.0f}s")
    print(f"info: evaluate {len(t_df) // 1000}k: {t_files:.2f} seconds (files), {t_frames:.2f} seconds (frames)")
    ratio = t_naive_full / t_files
    print(f"evaluate 100k vs all-pairs (extrapolated): {ratio:.0f}x (goal >= 50x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
