"""Greedy (SpaceNet 7's baseline) against hungarian tracking, scored with SCOT on the temporal demo.

The truth is the temporal demo's labels (``--data-demo-dates``: buildings added, demolished, a
cloud). The proposals are those labels with a model's kind of errors, seeded: every footprint
shifted and rescaled a little on every date (as predictions wobble from month to month), some
buildings missed, some pairs of touching units merged into one, a few false positives. Both
trackers see the same proposals; the table gives SCOT, its tracking and change terms, and the id
mismatches for each, per noise level.

    .venv/bin/python scripts/compare_tracking.py [--scenes 4] [--dates 4] [--size 1024] [--seed 42]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import shapely
import shapely.affinity

from footprints.demo import generate_series, scene_origin, scene_seed
from footprints.scot import Footprints, scot_aois
from footprints.track import track

LEVELS = {  # shift (m, sd), scale (+-), missed, merged touching pairs, false positives (share)
    "none": (0.0, 0.0, 0.0, 0.0, 0.0),
    "low": (0.5, 0.08, 0.03, 0.2, 0.02),
    "medium": (1.0, 0.15, 0.06, 0.4, 0.04),
    "high": (1.8, 0.25, 0.10, 0.6, 0.06),
}


def perturb(rng, polys, level, extent):
    shift, scale, missed, merged, fp = LEVELS[level]
    polys = list(polys)
    out, used = [], set()
    tree = shapely.STRtree(polys) if polys else None
    for i, p in enumerate(polys):
        if i in used:
            continue
        used.add(i)
        if rng.random() < missed:
            continue
        if merged and rng.random() < merged:
            near = [int(j) for j in tree.query(p, predicate="dwithin", distance=0.01) if int(j) not in used]
            if near:
                used.add(near[0])
                p = shapely.union_all([p, polys[near[0]]]).convex_hull
        s = 1 + rng.uniform(-scale, scale)
        p = shapely.affinity.scale(p, s, s)
        p = shapely.affinity.translate(p, *rng.normal(0, shift, 2)) if shift else p
        out.append(p)
    minx, miny, maxx, maxy = extent
    for _ in range(int(round(fp * len(polys)))):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        w, h = rng.uniform(4, 12, 2)
        out.append(shapely.box(x, y, x + w, y + h))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--dates", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--min-iou", type=float, default=0.25)
    args = ap.parse_args(argv)
    truth: dict = {}
    for i in range(args.scenes):
        aoi = f"demo_{i:02d}"
        series = generate_series(scene_seed(args.seed, i), args.dates, size=args.size,
                                 origin=scene_origin(i, args.size, 0.5))
        truth[aoi] = [(d["ids"], d["buildings"]) for d in series]
        extent = shapely.total_bounds(np.asarray(series[0]["buildings"], dtype=object))
        truth[aoi + "/extent"] = extent
    print(f"temporal demo: {args.scenes} scenes x {args.dates} dates, {args.size} px, seed {args.seed}; "
          f"min_iou {args.min_iou}")
    print(f"{'noise':<8} {'method':<10} {'SCOT':>7} {'tracking':>9} {'change':>7} {'mismatch':>9} {'ids':>6}")
    aois = [a for a in truth if "/" not in a]
    for level in LEVELS:
        rng = np.random.default_rng([args.seed, list(LEVELS).index(level)])
        props = {a: [perturb(rng, polys, level, truth[a + "/extent"]) for _, polys in truth[a]] for a in aois}
        t = {a: {f"d{k}": Footprints(tuple(ids), np.asarray(polys, dtype=object))
                 for k, (ids, polys) in enumerate(truth[a])} for a in aois}
        for method in ("greedy", "hungarian"):
            p, n_ids = {}, 0
            for a in aois:
                tr = track(props[a], method=method, min_iou=args.min_iou)
                n_ids += len(tr.first)
                p[a] = {f"d{k}": Footprints(tuple(int(x) for x in tr.ids[k]), np.asarray(g, dtype=object))
                        for k, g in enumerate(props[a])}
            r = scot_aois(t, p)
            by = r["by_aoi"].values()
            print(f"{level:<8} {method:<10} {r['total']['scot']:7.4f} {np.mean([b['tracking'] for b in by]):9.4f} "
                  f"{np.mean([b['change'] for b in by]):7.4f} {sum(b['mismatches'] for b in by):9d} {n_ids:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
