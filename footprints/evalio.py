"""Readers and report writers of the SpaceNet metric (:mod:`footprints.spacenet`).

Inputs: a SpaceNet CSV (``ImageId,BuildingId,PolygonWKT_Pix[,...][,Confidence]``), a GeoJSON
FeatureCollection (read through :mod:`footprints.geojson`) or a directory of GeoJSON files
matched by file name. Each reader returns ``(frame, problems)``: rows or features that cannot be
used are reported (:class:`Problem`: file, line or feature, what was done) and skipped; inputs
that cannot be evaluated at all raise :class:`footprints.errors.InputError` naming the file.
Reports (``metrics.json``, the per-image CSV) are written atomically.
Used by ``footprints evaluate`` (:mod:`footprints.cli`) and by the pipeline's Evaluate task.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from footprints import atomic, geojson
from footprints.errors import InputError
from footprints.names import aoi_of_image_id
from footprints.spacenet import DEFAULT_IOU, SPACENET_MIN_AREA, evaluate_frames, make_frame, per_image_frame, prf
from footprints.split import centroid_in

__all__ = [
    "Problem", "read_spacenet_csv", "read_geojson", "geojson_files", "read_geojson_dir", "input_format",
    "read_footprints", "default_min_area", "pair_images", "evaluate_files", "result_json", "write_report", "split_block",
    "region_blocks",
]


@dataclass(frozen=True)
class Problem:
    """One row-level problem in an input file: where it is and what was done about it."""

    path: str
    where: str  # "line 12", "feature 3", "" for the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.path} ({self.where}): {self.message}" if self.where else f"{self.path}: {self.message}"


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


PROPOSAL_CLASS = "class"  # the class column/property of the pipeline's own outputs


def _class_source(names, class_field: str, role: str, path: str) -> str | None:
    """Which column (CSV) or property (GeoJSON) holds the class: ``class_field``; for proposals
    that lack it, the pipeline's own ``class``. Neither: an InputError naming the file, the field
    and the names seen."""
    lower = {str(n).lower(): n for n in names}
    if class_field.lower() in lower:
        return lower[class_field.lower()]
    if role != "truth" and PROPOSAL_CLASS in lower:
        return lower[PROPOSAL_CLASS]
    seen = ", ".join(sorted(map(str, names))[:20]) or "none"
    raise InputError(path, f"no {role} feature has the class field {class_field!r} (--class-field); seen: {seen}")


def _class_value(v):
    return None if v is None or v == "" else str(v)


def read_spacenet_csv(path, role: str = "proposals", wkt_column: str = "PolygonWKT_Pix", class_field: str = ""):
    """A SpaceNet CSV (``ImageId,BuildingId,PolygonWKT_Pix[,PolygonWKT_Geo][,Confidence]``).

    Returns ``(frame, problems)``. Rows whose WKT cannot be parsed, whose ImageId is empty or
    whose Confidence is not a number are reported (file, line, problem) and skipped; invalid
    polygons are kept and reported. A missing file or missing columns raise
    :class:`InputError` naming the file. ``class_field`` (building types): the column of each
    building's class (proposals without it: ``class``), in the frame's ``class`` column.
    """
    path = Path(path)
    p = str(path)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise InputError(p, f"cannot open {role} CSV: {e.strerror or e}") from e
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(p, "empty file, expected a SpaceNet CSV header "
                                      f"(ImageId,BuildingId,{wkt_column},...)") from None
        except csv.Error as e:
            raise InputError(p, f"not a CSV file ({e})") from None
        cols = [h.strip() for h in header]
        lower = {c.lower(): i for i, c in enumerate(cols)}
        if "imageid" not in lower or wkt_column.lower() not in lower:
            raise InputError(p, f"not a SpaceNet CSV: need columns ImageId and {wkt_column}, found {cols}")
        i_id, i_wkt = lower["imageid"], lower[wkt_column.lower()]
        i_conf = next((lower[c] for c in ("confidence", "conf") if c in lower), None)
        i_cls = lower[_class_source(cols, class_field, role, p).lower()] if class_field else None
        need = max(i_id, i_wkt, i_conf if i_conf is not None else 0, i_cls or 0) + 1
        ids, wkts, confs, lines, classes = [], [], [], [], []
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
                classes.append(_class_value(row[i_cls].strip()) if i_cls is not None else None)
        except csv.Error as e:
            raise InputError(p, f"line {reader.line_num}: malformed CSV ({e})") from None

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
        classes = [x for x, k in zip(classes, keep) if k]
    geoms = _to_2d(np.asarray(geoms, dtype=object))
    problems += _check_geometries(geoms, [f"line {ln}" for ln in lines], p, role)
    return make_frame(ids, geoms, confs, source=p, lines=lines, classes=classes if class_field else None), problems


def read_geojson(path, role: str = "proposals", image_id: str | None = None, class_field: str = ""):
    """A GeoJSON FeatureCollection (or single Feature) of polygons. Returns ``(frame, problems)``.

    ImageId: ``image_id`` if given, else the feature's ``ImageId``/``image`` property, else the
    file stem. Confidence: the ``confidence``/``Confidence`` property, default 1.0. Coordinates
    are used as they are (truth and proposals must share a CRS). Features whose geometry cannot
    be read are reported and skipped; a file that is not GeoJSON at all is an :class:`InputError`.
    ``class_field`` (building types): the property of each building's class (proposals without
    it: ``class``), in the frame's ``class`` column; a file none of whose features has it is an
    :class:`InputError` naming the field and the properties seen.
    """
    path = Path(path)
    p = str(path)
    feats, _ = geojson.read(path, what=f"{role} GeoJSON")
    stem = path.stem
    ids, geoms, confs, lines, problems, props_kept = [], [], [], [], [], []
    for n, f in enumerate(feats):
        where = f"feature {n}"
        try:
            geom = geojson.geometry(f)
        except Exception as e:  # noqa: BLE001 - malformed coordinates come in many exception types; reported
            problems.append(Problem(p, where, f"unreadable geometry ({type(e).__name__}: {e}): skipped"))
            continue
        if geom is None:
            problems.append(Problem(p, where, "null geometry: skipped"))
            continue
        props = geojson.properties(f)
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
        props_kept.append(props)
    garr = _to_2d(np.asarray(geoms, dtype=object)) if geoms else np.zeros(0, object)
    problems += _check_geometries(garr, [f"feature {n}" for n in lines], p, role)
    classes = None
    if class_field:
        classes = [None] * len(props_kept)
        if props_kept:
            key = _class_source({k for pr in props_kept for k in pr}, class_field, role, p)
            classes = [_class_value(pr.get(key)) for pr in props_kept]
    return make_frame(ids, garr, confs, source=p, lines=lines, classes=classes), problems


def geojson_files(directory) -> dict[str, Path]:
    """``{file stem: path}`` for the GeoJSON files of a directory (not recursive). Two files of
    one stem (``a.geojson`` and ``a.json``) would be one image: an :class:`InputError` naming both."""
    d = Path(directory)
    out: dict[str, Path] = {}
    for f in sorted(d.iterdir()):
        if f.is_file() and f.suffix.lower() in geojson.SUFFIXES:
            if f.stem in out:
                raise InputError(f, f"same image name {f.stem!r} as {out[f.stem]}: rename or remove one of them")
            out[f.stem] = f
    return out


def read_geojson_dir(directory, role: str = "proposals", class_field: str = ""):
    """Every GeoJSON file of a directory; the ImageId of each feature is its file's stem, so
    truth and proposal directories are matched by file name. Returns ``(frame, problems)``."""
    d = Path(directory)
    files = geojson_files(d)
    if not files and role == "truth":
        raise InputError(d, "directory has no GeoJSON files (*.geojson, *.json)")
    frames, problems = [], []
    if not files:
        problems.append(Problem(str(d), "", "no GeoJSON files: no proposals"))
    for stem, f in files.items():
        fr, pr = read_geojson(f, role=role, image_id=stem, class_field=class_field)
        if not len(fr):
            # an image with no buildings still counts, as a SpaceNet CSV's POLYGON EMPTY row does
            fr = make_frame([stem], [shapely.Polygon()], [1.0], source=str(f), lines=[-1],
                            classes=[None] if class_field else None)
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
        raise InputError(p, "no such file or directory")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in geojson.SUFFIXES:
        return "geojson"
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as e:
        raise InputError(p, f"cannot read: {e.strerror or e}") from e
    return "geojson" if head[:1] in (b"{", b"[") else "csv"


def read_footprints(path, role: str = "proposals", class_field: str = ""):
    """Any supported input: ``(frame, problems, format)`` with format 'csv', 'geojson' or 'dir'."""
    fmt = input_format(path)
    if fmt == "csv":
        frame, problems = read_spacenet_csv(path, role=role, class_field=class_field)
    elif fmt == "geojson":
        frame, problems = read_geojson(path, role=role, class_field=class_field)
    else:
        frame, problems = read_geojson_dir(path, role=role, class_field=class_field)
    return frame, problems, fmt


def default_min_area(truth_format: str) -> float:
    """20 px² on SpaceNet CSV truth (the SpaceNet 2 / off-nadir setting), no filter otherwise."""
    return SPACENET_MIN_AREA if truth_format == "csv" else 0.0


def _ids(frame: pd.DataFrame) -> list[str]:
    return sorted({str(i) for i in frame["image_id"]})


def _few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "") if names else "none"


def pair_images(t_df: pd.DataFrame, p_df: pd.DataFrame, t_fmt: str, p_fmt: str, truth="truth",
                proposals="proposals") -> tuple[pd.DataFrame, str]:
    """Decide which truth image each proposal belongs to. Returns ``(proposals frame, how)``.

    * Images with common ids (CSV ImageIds, GeoJSON ``ImageId`` properties, directory file
      stems) are matched by id; that is all a directory pairing ever does.
    * Two single files (GeoJSON, or CSV) whose ids have nothing in common, each holding one
      image, are one image: the proposals take the truth's id (``gt.geojson`` against
      ``pred.geojson`` scores the one scene, not two scenes of all misses and all false positives).
    * Any other pairing with no common image (directories, or files of several images each)
      is an :class:`InputError` listing a few names of each side, never a silent F1 of 0.
      An empty side (no proposals at all) is not an error.
    """
    t_ids, p_ids = _ids(t_df), _ids(p_df)
    if not t_ids or not p_ids or set(t_ids) & set(p_ids):
        return p_df, "by image id"
    if "dir" not in (t_fmt, p_fmt) and len(t_ids) == 1 and len(p_ids) == 1:
        p_df = p_df.copy()
        p_df["image_id"] = t_ids[0]
        return p_df, f"two single files: one image {t_ids[0]!r}"
    rule = "file names" if "dir" in (t_fmt, p_fmt) else "image ids"
    raise InputError(f"truth {truth} and proposals {proposals} have no image in common (matched by {rule}): "
                     f"truth has {_few(t_ids)}; proposals have {_few(p_ids)}")


def evaluate_files(truth, proposals, iou: float = DEFAULT_IOU, min_area: float | None = None,
                   problems: list | None = None, class_field: str = "") -> dict:
    """The SpaceNet metric on two inputs (SpaceNet CSV, GeoJSON file or directory of GeoJSON).

    ``min_area`` None means :func:`default_min_area` of the truth's format. Row-level problems
    of either file are appended to ``problems`` (if given) and listed under the result's
    ``"problems"`` key (present only when there are any). How images were paired
    (:func:`pair_images`) is under ``"pairing"``, the area filter used under ``"min_area"``.
    Raises :class:`InputError` for inputs that cannot be evaluated at all. ``class_field``
    (building types): the truth's class property/column (the proposals' too, or their
    ``class``); the result adds ``by_class`` and ``class_mean_f1`` (a match needs the same class).
    """
    if not 0.0 <= float(iou) < 1.0:
        raise InputError(f"IoU threshold must be in [0, 1), got {iou}")
    t_df, t_prob, t_fmt = read_footprints(truth, role="truth", class_field=class_field)
    p_df, p_prob, p_fmt = read_footprints(proposals, role="proposals", class_field=class_field)
    p_df, pairing = pair_images(t_df, p_df, t_fmt, p_fmt, truth, proposals)
    if min_area is None:
        min_area = default_min_area(t_fmt)
    result = evaluate_frames(t_df, p_df, iou=iou, min_area=float(min_area), aoi_of=aoi_of_image_id)
    result["pairing"] = pairing
    result["min_area"] = float(min_area)
    found = t_prob + p_prob
    if problems is not None:
        problems.extend(found)
    if found:
        result["problems"] = [str(x) for x in found]
    return result


# --------------------------------------------------------------------------------------------
# reports (atomic)
# --------------------------------------------------------------------------------------------


def result_json(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=False) + "\n"


def write_report(result: dict, metrics_json_path, per_image_csv_path=None) -> None:
    """Write ``metrics.json`` (the result dict) and the per-image CSV, each atomically (temp file
    in the same directory, then ``os.replace``). Either path may be None to skip that file."""
    if metrics_json_path is not None:
        atomic.write_text(metrics_json_path, result_json(result))
    if per_image_csv_path is not None:
        atomic.write_text(per_image_csv_path, per_image_frame(result, aoi_of=aoi_of_image_id).to_csv(index=False))


def split_block(result: dict, images) -> dict:
    """TP/FP/FN summed over a subset of images, with P/R/F1 recomputed from the sums."""
    images = set(images)
    tp = sum(v["tp"] for k, v in result["by_image"].items() if k in images)
    fp = sum(v["fp"] for k, v in result["by_image"].items() if k in images)
    fn = sum(v["fn"] for k, v in result["by_image"].items() if k in images)
    return {"images": sorted(images & set(result["by_image"])), **prf(tp, fp, fn)}


def _in_regions(ids, geoms, by_image: dict) -> np.ndarray:
    ids = np.asarray(ids, dtype=object)
    geoms = np.asarray(list(geoms), dtype=object) if len(ids) else np.zeros(0, dtype=object)
    keep = np.zeros(len(ids), bool)
    for image, region in by_image.items():
        sel = np.flatnonzero(ids == image)
        if len(sel):
            keep[sel] = centroid_in(geoms[sel], region)
    return keep


def region_blocks(truth, proposals, regions: dict, iou: float = DEFAULT_IOU, min_area: float = 0.0) -> dict:
    """Each split scored on its own part of the images (a block split's held-out score).

    ``truth``: (image ids, geometries); ``proposals``: (image ids, geometries, confidences);
    ``regions``: {split: {image: region}} (:func:`footprints.split.split_regions`). A building
    (truth or proposal) counts for a split when its centroid lies in the split's region of its
    image; what lies elsewhere (other splits, the buffer between them) is left out. Returns
    {split: {"images", "tp", "fp", "fn", "precision", "recall", "f1", "scored_on": "blocks"}}.
    """
    t_ids, t_geoms = (np.asarray(list(a), dtype=object) for a in truth)
    p_ids, p_geoms, p_conf = (np.asarray(list(a), dtype=object) for a in proposals)
    out = {}
    for name, by_image in regions.items():
        t = _in_regions(t_ids, t_geoms, by_image)
        p = _in_regions(p_ids, p_geoms, by_image)
        res = evaluate_frames(make_frame(t_ids[t], t_geoms[t]),
                              make_frame(p_ids[p], p_geoms[p], p_conf[p].astype(float)),
                              iou=iou, min_area=min_area, aoi_of=lambda i: i)
        tot = res["total"]
        out[name] = {"images": sorted(by_image), **prf(tot["tp"], tot["fp"], tot["fn"]), "scored_on": "blocks"}
    return out
