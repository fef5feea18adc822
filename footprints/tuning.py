"""Threshold tuning: the probability threshold and minimum building area that give the best
building-level SpaceNet F1 on validation images.

For every grid point the buildings are exactly those Polygonize and DeduplicateBorders would
store, computed without PostGIS:

* per threshold, each tile's polygons come once from :func:`footprints.polygonize.tile_polygons`
  at minimum area 0; Polygonize's minimum-area rule (a polygon under the area is dropped
  unless it touches the edge of the window the tile read) is a filter on that list, so the
  list at each minimum area is the one Polygonize makes at that area, in the same order;
* :func:`footprints.borders.deduplicate_polygons` is DeduplicateBorders' rule in memory
  (``tests/footprints/test_borders.py`` checks it against the SQL).

The score is :func:`footprints.spacenet.evaluate_frames`, the truth filtered by one fixed minimum
area for every grid point (TuneThreshold: the grid's smallest), so that a larger minimum area
is judged by the buildings it loses, not rewarded for removing small ones from the truth. :func:`choose` picks the best F1;
points within ``tie`` of it go to the one whose per-image F1 varies least, then to the higher
F1, then to the point nearest the untuned defaults (0.5, 5 m²).
"""
from __future__ import annotations

import numpy as np
import shapely
from rasterio.windows import Window

from footprints.atomic import atomic_path
from footprints.borders import deduplicate_polygons
from footprints.geo import pixel_area
from footprints.polygonize import probability_bands, read_window, tile_polygons
from footprints.spacenet import DEFAULT_IOU, evaluate_frames, make_frame

__all__ = ["UNTUNED", "parse_values", "grid_buildings", "score_grid", "choose", "plot_tuning"]

UNTUNED = {"threshold": 0.5, "min_area_m2": 5.0}  # the values without tuning (no val split)


def parse_values(text: str, setting: str = "values") -> list[float]:
    """``"2,5,10"`` or ``"0.3:0.8:0.05"`` (start:stop:step, stop included) -> sorted distinct
    floats (rounded to 10 decimals, so that the steps add up exactly). ValueError names ``setting``."""
    s = str(text).strip()
    try:
        if ":" in s:
            a, b, step = (float(x) for x in s.split(":"))
            if step <= 0 or b < a:
                raise ValueError("start:stop:step needs stop >= start and step > 0")
            vals = [a + i * step for i in range(int(round((b - a) / step)) + 1)]
        else:
            vals = [float(x) for x in s.split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(f"{setting}: {text!r} is not a list of numbers or start:stop:step ({e})") from None
    if not vals:
        raise ValueError(f"{setting} is empty")
    return sorted({round(v, 10) for v in vals})


def _tile_lists(src, tiles, threshold: float, halo_px: int, three_class: bool, bands, n_classes: int = 0):
    """Per tile: ``(tile_id, [(pix, score, droppable_area_m2)])`` at minimum area 0, where
    ``droppable_area_m2`` is the polygon's area when Polygonize's minimum-area rule may drop it
    (it does not touch the read window's edge), else None. ``n_classes``: as in
    :func:`footprints.polygonize.polygonize_probabilities` (buildings on the union of the class
    channels; their class confidences are not needed: the score is class-agnostic)."""
    px = pixel_area(src.transform)
    out = []
    for t in tiles:
        win = read_window(t, halo_px, src.width, src.height)
        c0, r0, w, h = win
        arr = src.read(bands, window=Window(*win))
        polys = []
        for pix, _, score, *_ in tile_polygons(arr, src.transform, t, win, threshold=threshold, min_area_m2=0.0,
                                               three_class=three_class, n_classes=n_classes):
            x0, y0, x1, y1 = pix.bounds
            edge = x0 <= c0 or y0 <= r0 or x1 >= c0 + w or y1 >= r0 + h  # polygonize._touches_window_edge
            polys.append((pix, float(np.float32(score)), None if edge else pix.area * px))
        out.append((t["tile_id"], polys))
    return out


def grid_buildings(src, tiles, thresholds, min_areas, *, three_class: bool = False, bands=None, halo_px: int = 0,
                   simplify_px: float = 0.0, merge_overlap: float = 0.5, min_shared_px: float = 1.0,
                   progress=None, n_classes: int = 0) -> dict:
    """``{(threshold, min_area_m2): [building polygons in the image CRS]}`` of the open
    probability raster ``src`` (PredictImage's output) tiled as ``tiles`` (TileImage's index):
    for every grid point, the buildings Polygonize + DeduplicateBorders give with those
    settings and the others passed here. ``progress(done, total)``: optional, per threshold.
    ``n_classes`` (building types): the first bands are one footprint channel per class, and
    buildings are found class-agnostically on their union, as Polygonize finds them.
    ``bands``: the bands to read (default: the class channels or the footprint, then boundary
    and contact with ``three_class``)."""
    if bands is None:
        bands = probability_bands(three_class, n_classes)
    out = {}
    for i, th in enumerate(thresholds):
        lists = _tile_lists(src, tiles, th, halo_px, three_class, bands, n_classes)
        for m in min_areas:
            preds = [(tid, score, pix) for tid, polys in lists for pix, score, area in polys
                     if area is None or area >= m]
            found = deduplicate_polygons(tiles, preds, src.transform, src.width, src.height, None,
                                         min_area_m2=m, simplify_px=simplify_px, halo_px=halo_px,
                                         min_shared_px=min_shared_px, merge_overlap=merge_overlap)
            out[(th, m)] = [b["geom"] for b in found]
        if progress:
            progress(i + 1, len(thresholds))
    return out


def score_grid(truth: dict, found: dict, iou: float = DEFAULT_IOU, truth_min_area: float | None = None) -> list[dict]:
    """One row per grid point: ``threshold``, ``min_area_m2``, tp/fp/fn, precision, recall, f1,
    ``f1_by_image`` and ``f1_variance`` (population variance of the per-image F1).

    ``truth_min_area`` (m²): the area filter of the truth, the same for every point, so that a
    larger minimum area cannot win by removing small buildings from the truth (its proposals
    are already filtered: they come from the grid). None: each point's own minimum area on both
    sides (the rule of the pipeline's Evaluate).

    ``truth``: ``{image: [polygons]}``; ``found``: ``{(threshold, min_area): {image: [polygons]}}``,
    polygons in each image's CRS. An image without truth still counts (its buildings are FP)."""
    images = sorted(truth)
    t_ids, t_geoms = [], []
    for im in images:
        geoms = list(truth[im]) or [shapely.Polygon()]
        t_ids += [im] * len(geoms)
        t_geoms += geoms
    t_frame = make_frame(t_ids, t_geoms)
    rows = []
    for (th, m), by_image in sorted(found.items()):
        p_ids = [im for im in images for _ in by_image.get(im, ())]
        p_geoms = [g for im in images for g in by_image.get(im, ())]
        res = evaluate_frames(t_frame, make_frame(p_ids, p_geoms, [1.0] * len(p_geoms)), iou=iou,
                              min_area=m if truth_min_area is None else truth_min_area, aoi_of=lambda i: i)
        per = {im: res["by_image"][im]["f1"] for im in images if im in res["by_image"]}
        rows.append({"threshold": th, "min_area_m2": m, **res["total"], "f1_by_image": per,
                     "f1_variance": float(np.var(list(per.values()))) if per else 0.0})
    return rows


def choose(rows: list[dict], tie: float = 0.005, prefer=(UNTUNED["threshold"], UNTUNED["min_area_m2"])) -> tuple[dict, str]:
    """The chosen row and why: the best F1; rows within ``tie`` of it go to the lowest per-image
    F1 variance, then the higher F1, then the point nearest ``prefer`` (threshold, min area)."""
    if not rows:
        raise ValueError("no grid points to choose from")
    best = max(r["f1"] for r in rows)
    near = [r for r in rows if r["f1"] >= best - tie]
    pick = min(near, key=lambda r: (r["f1_variance"], -r["f1"], abs(r["threshold"] - prefer[0]),
                                    abs(r["min_area_m2"] - prefer[1]), r["threshold"], r["min_area_m2"]))
    top = max(rows, key=lambda r: (r["f1"], -r["f1_variance"]))
    why = f"best F1 {best:.4f} at threshold {top['threshold']:g}, min area {top['min_area_m2']:g} m²"
    if len(near) > 1:
        why += (f"; {len(near)} grid points within {tie:g} of it, the one whose per-image F1 varies least "
                f"(variance {pick['f1_variance']:.3g}"
                + (", then the nearest to the defaults" if sum(r["f1_variance"] == pick["f1_variance"] for r in near) > 1
                   else "") + ")")
    why += f": threshold {pick['threshold']:g}, min area {pick['min_area_m2']:g} m², F1 {pick['f1']:.4f}"
    return pick, why


def plot_tuning(path, rows: list[dict], chosen: dict | None, title: str = "") -> None:
    """F1 against threshold, one curve per minimum area, the chosen point circled; PNG, atomic."""
    import matplotlib  # noqa: PLC0415 - heavy; only the tuning figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the Agg backend

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for m in sorted({r["min_area_m2"] for r in rows}):
        pts = sorted((r["threshold"], r["f1"]) for r in rows if r["min_area_m2"] == m)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"min area {m:g} m²")
    if chosen is not None:
        ax.plot([chosen["threshold"]], [chosen["f1"]], "o", ms=12, mfc="none", mec="black",
                label=f"chosen: {chosen['threshold']:g}, {chosen['min_area_m2']:g} m²")
    if not rows:
        ax.text(0.5, 0.5, "no validation split: the defaults apply", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("probability threshold")
    ax.set_ylabel("building F1 (SpaceNet, IoU > 0.5), val split")
    ax.set_title(title or "threshold tuning")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
