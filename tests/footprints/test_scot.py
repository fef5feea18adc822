"""The SCOT metric (footprints.scot), its directory reader (footprints.scotio) and
`footprints evaluate --scot`: each rule of solaris' solaris/eval/scot.py pinned on tiny AOIs."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box

from footprints import cli, scotio
from footprints.errors import InputError
from footprints.scot import Footprints, combine, iou_matrix, match_date, scot_aoi, scot_aois

# ------------------------------------------------------------------------------------ helpers


def fp(**buildings) -> Footprints:
    """Footprints from keyword ids: ``fp(a=box(...), b=box(...))``; ``_N`` names become int N."""
    ids = [int(k[1:]) if k.startswith("_") else k for k in buildings]
    return Footprints(tuple(ids), np.asarray(list(buildings.values()), dtype=object))


def series(*dates) -> dict:
    """``{date: Footprints}`` with dates d0, d1, ... in order."""
    return {f"d{i}": f for i, f in enumerate(dates)}


def random_series(seed: int, n_dates: int = 5, n_buildings: int = 14):
    """A random AOI ``(truth, proposals)``, each ``{date: Footprints}``: boxes that appear,
    disappear and come back; proposals jittered, dropped, re-identified, merged and invented.
    Some buildings touch or overlap, so the assignment has real choices to make."""
    rng = np.random.default_rng(seed)
    dates = [f"2018_{m:02d}" for m in range(1, n_dates + 1)]
    truth = {d: ([], []) for d in dates}
    props = {d: ([], []) for d in dates}
    next_pid = 1000
    for b in range(n_buildings):
        x, y = rng.uniform(0, 60, 2)
        w, h = rng.uniform(3, 9, 2)
        geom = box(x, y, x + w, y + h)
        first = int(rng.integers(0, n_dates))
        last = int(rng.integers(first, n_dates))
        gap = int(rng.integers(first, last + 1)) if rng.random() < 0.3 else None
        pid = next_pid
        next_pid += 1
        for i in range(first, last + 1):
            if i == gap and first < i < last:
                continue  # hidden this date (a cloud): absent from the truth, comes back later
            d = dates[i]
            truth[d][0].append(b)
            truth[d][1].append(geom)
            r = rng.random()
            if r < 0.12:
                continue  # missed
            if r < 0.22:
                pid, next_pid = next_pid, next_pid + 1  # re-identified: a tracking mismatch
            dx, dy, s = rng.normal(0, 0.8, 3)
            props[d][0].append(f"p{pid}")
            props[d][1].append(box(x + dx, y + dy, x + dx + w * (1 + s / 5), y + dy + h * (1 + s / 5)))
    for d in dates:
        for _ in range(int(rng.integers(0, 3))):  # false positives
            x, y = rng.uniform(0, 60, 2)
            props[d][0].append(f"p{next_pid}")
            props[d][1].append(box(x, y, x + rng.uniform(2, 8), y + rng.uniform(2, 8)))
            next_pid += 1

    def as_fp(pair):
        ids, geoms = pair
        return Footprints(tuple(ids), np.asarray(geoms, dtype=object) if geoms else np.zeros(0, dtype=object))

    return {d: as_fp(truth[d]) for d in dates}, {d: as_fp(props[d]) for d in dates}


def write_series(root: Path, aois: dict, id_key: str = "id") -> Path:
    """Write ``{aoi: {date: Footprints}}`` as root/<aoi>/<date>.geojson."""
    for aoi, dates in aois.items():
        (root / aoi).mkdir(parents=True, exist_ok=True)
        for date, f in dates.items():
            feats = [{"type": "Feature", "properties": {id_key: i}, "geometry": shapely.geometry.mapping(g)}
                     for i, g in zip(f.ids, f.geoms)]
            (root / aoi / f"{date}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return root


A = box(0, 0, 10, 10)
B = box(20, 0, 30, 10)
C = box(40, 0, 50, 10)


# ----------------------------------------------------------------------------------- matching


def test_iou_threshold_is_strict():
    truth = fp(_1=box(0, 0, 4, 4))
    exactly = fp(a=box(0, 0, 4, 1))  # IoU 4/16 = 0.25 exactly
    assert iou_matrix(truth, exactly)[0, 0] == 0.25
    assert match_date(truth, exactly, threshold=0.25).pairs == ()
    assert match_date(truth, fp(a=box(0, 0, 4, 1.01)), threshold=0.25).pairs == ((1, "a"),)
    assert match_date(truth, exactly, threshold=0.24).pairs == ((1, "a"),)


def test_assignment_maximises_matches_where_greedy_would_not():
    # greedy (largest IoU first) takes A-p1 (0.667) and leaves B and p2 unmatched;
    # the optimal assignment matches A-p2 (0.5) and B-p1 (0.43): two matches
    a, b = box(0, 0, 10, 10), box(6, 0, 16, 10)
    truth = fp(_1=a, _2=b)
    props = fp(p1=box(2, 0, 12, 10), p2=box(0, 0, 5, 10))
    ious = iou_matrix(truth, props)
    assert ious[0, 0] > ious[0, 1] > 0.25 and ious[1, 0] > 0.25 and ious[1, 1] == 0
    m = match_date(truth, props)
    assert sorted(m.pairs) == [(1, "p2"), (2, "p1")]
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)


def test_assignment_then_maximises_total_iou():
    # two matches either way; the larger total IoU wins (1-q, 2-p), not the first found
    truth = fp(_1=box(0, 0, 10, 10), _2=box(1, 0, 11, 10))
    props = fp(p=box(1, 0, 11, 10), q=box(0, 0, 10, 10))
    assert sorted(match_date(truth, props).pairs) == [(1, "q"), (2, "p")]


def test_footprints_refuse_duplicate_ids():
    with pytest.raises(ValueError, match="more than once"):
        Footprints((1, 1), np.asarray([A, B], dtype=object))


# ----------------------------------------------------------------------------------- tracking


def test_perfect_tracking_with_a_new_building_is_one():
    truth = series(fp(_1=A), fp(_1=A, _2=B), fp(_1=A, _2=B))
    props = series(fp(a=A), fp(a=A, b=B), fp(a=A, b=B))
    r = scot_aoi(truth, props)
    assert r == {"scot": 1.0, "tracking": 1.0, "change": 1.0, "tracking_tp": 5, "tracking_fp": 0,
                 "tracking_fn": 0, "change_tp": 1, "change_fp": 0, "change_fn": 0, "mismatches": 0}


def test_a_switched_id_is_one_mismatch_one_fp_and_one_fn():
    truth = series(fp(_1=A), fp(_1=A, _2=B), fp(_1=A, _2=B))
    props = series(fp(a=A), fp(z=A, b=B), fp(z=A, b=B))  # a becomes z on d1, and stays z
    r = scot_aoi(truth, props)
    # 5 matches; the d1 pairing 1-z contradicts 1-a (mismatch); d2's 1-z agrees with the last pairing
    assert r["mismatches"] == 1
    assert (r["tracking_tp"], r["tracking_fp"], r["tracking_fn"]) == (4, 1, 1)
    assert r["tracking"] == 4 / (4 + 1)
    # z is new on d1 but matched to an old truth id: a change FP
    assert (r["change_tp"], r["change_fp"], r["change_fn"]) == (1, 1, 0)


def test_a_proposal_id_taken_over_by_another_building_is_a_mismatch():
    truth = series(fp(_1=A, _2=B), fp(_1=A, _2=B))
    props = series(fp(a=A, b=B), fp(b=A, c=B))  # b moves from building 2 to building 1
    r = scot_aoi(truth, props)
    # 1-b: 1 was last with a and b last with 2; 2-c: 2 was last with b. Two mismatches
    assert r["mismatches"] == 2
    assert (r["tracking_tp"], r["tracking_fp"], r["tracking_fn"]) == (2, 2, 2)


def test_mismatch_is_against_the_last_pairing_only():
    truth = series(fp(_1=A), fp(_1=A), fp(_1=A), fp(_1=A))
    props = series(fp(a=A), fp(b=A), fp(b=A), fp(a=A))  # a, b, b, a: switches on d1 and d3
    r = scot_aoi(truth, props)
    assert r["mismatches"] == 2
    assert (r["tracking_tp"], r["tracking_fp"], r["tracking_fn"]) == (2, 2, 2)


def test_unmatched_truth_and_proposals_are_tracking_fn_and_fp():
    truth = series(fp(_1=A, _2=B), fp(_1=A, _2=B))
    props = series(fp(a=A, x=C), fp(a=A))
    r = scot_aoi(truth, props)
    assert (r["tracking_tp"], r["tracking_fp"], r["tracking_fn"], r["mismatches"]) == (2, 1, 2, 0)


def test_a_building_that_disappears_and_reappears_keeps_its_pairing():
    truth = series(fp(_1=A, _2=B), fp(_2=B), fp(_1=A, _2=B, _3=C))
    same = series(fp(a=A, b=B), fp(b=B), fp(a=A, b=B, c=C))
    r = scot_aoi(truth, same)
    assert r["mismatches"] == 0 and r["tracking"] == 1.0
    # building 1 is not new when it comes back: only 3 is a change
    assert (r["change_tp"], r["change_fp"], r["change_fn"]) == (1, 0, 0)
    # a proposal that gives the returning building a new id: a mismatch and a change FP
    renamed = series(fp(a=A, b=B), fp(b=B), fp(a2=A, b=B, c=C))
    r = scot_aoi(truth, renamed)
    assert r["mismatches"] == 1
    assert (r["change_tp"], r["change_fp"], r["change_fn"]) == (1, 1, 0)


# ------------------------------------------------------------------------------------- change


def test_change_term_skips_the_first_date():
    # everything on the first date is "new" but never counted; only d1's building 2 is
    truth = series(fp(_1=A, _3=C), fp(_1=A, _2=B, _3=C))
    props = series(fp(a=A), fp(a=A, b=B))
    r = scot_aoi(truth, props)
    assert (r["change_tp"], r["change_fp"], r["change_fn"]) == (1, 0, 0)
    # a new truth building the proposals miss is a change FN; a new invented proposal a change FP
    r = scot_aoi(truth, series(fp(a=A, c=C), fp(a=A, c=C, x=box(70, 0, 80, 10))))
    assert (r["change_tp"], r["change_fp"], r["change_fn"]) == (0, 1, 1)
    assert r["change"] == 0.0 and r["scot"] == 0.0


def test_new_proposal_matched_to_old_truth_and_vice_versa():
    truth = series(fp(_1=A), fp(_1=A, _2=B))
    # b is old (seen on d0, unmatched there), matched on d1 to new truth 2: change FN;
    # z is new, matched to old truth 1: change FP
    props = series(fp(b=C), fp(z=A, b=B))
    r = scot_aoi(truth, props)
    assert (r["change_tp"], r["change_fp"], r["change_fn"]) == (0, 1, 1)


def test_no_new_buildings_gives_change_zero_and_scot_zero():
    truth = series(fp(_1=A, _2=B), fp(_1=A, _2=B), fp(_1=A, _2=B))
    props = series(fp(a=A, b=B), fp(a=A, b=B), fp(a=A, b=B))
    r = scot_aoi(truth, props)
    assert r["tracking"] == 1.0
    assert (r["change"], r["scot"]) == (0.0, 0.0)
    assert scot_aoi(truth, truth)["scot"] == 0.0  # even the truth itself


@pytest.mark.parametrize("seed", range(6))
def test_truth_against_itself_is_one_with_a_new_building(seed):
    truth, _ = random_series(seed)
    r = scot_aoi(truth, truth)
    firsts = [d for d in sorted(truth) if len(truth[d])]
    has_new = any(set(truth[d].ids) - {i for e in firsts[:k] for i in truth[e].ids}
                  for k, d in enumerate(firsts) if k)
    assert r["scot"] == (1.0 if has_new else 0.0)
    assert r["tracking"] == 1.0 and r["mismatches"] == 0


@pytest.mark.parametrize("seed", range(6))
def test_counts_add_up(seed):
    truth, props = random_series(seed)
    r = scot_aoi(truth, props)
    n_truth = sum(len(f) for f in truth.values())
    scored = [d for d in truth if len(truth[d])]
    n_props = sum(len(props[d]) for d in scored)
    # a mismatch turns a TP into one FP and one FN: each side still adds up
    assert r["tracking_tp"] + r["tracking_fn"] == n_truth
    assert r["tracking_tp"] + r["tracking_fp"] == n_props
    assert 0.0 <= r["scot"] <= 1.0


# --------------------------------------------------------------------------- beta and quirks


def test_beta_weights_change_against_tracking():
    truth = series(fp(_1=A), fp(_1=A, _2=B, _3=C))
    props = series(fp(a=A), fp(a=A, b=B))  # tracking 3/(3+1/2) = 6/7, change 1/(1+1/2) = 2/3
    t, c = 3 / 3.5, 1 / 1.5
    for beta in (0.5, 1.0, 2.0, 3.0):
        r = scot_aoi(truth, props, beta=beta)
        assert (r["tracking"], r["change"]) == (t, c)
        assert math.isclose(r["scot"], (1 + beta ** 2) * c * t / (beta ** 2 * c + t))
    assert scot_aoi(truth, props, beta=1.0)["scot"] == pytest.approx(2 * c * t / (c + t))
    # beta > 1 leans towards tracking (as beta grows, SCOT tends to the tracking score)
    assert c < scot_aoi(truth, props, beta=1.0)["scot"] < scot_aoi(truth, props, beta=2.0)["scot"] < t
    assert scot_aoi(truth, props, beta=1000.0)["scot"] == pytest.approx(t, abs=1e-5)
    assert scot_aoi(truth, props, beta=0.0)["scot"] == pytest.approx(c)
    assert combine(0.0, 0.0) == 0.0 and combine(0.0, 1.0) == 0.0


def test_dates_come_from_the_truth():
    # d1 has no truth buildings: it is not a date at all, so its proposals are no FP and
    # the change term's first date stays d0; proposals on a date the truth lacks are ignored
    truth = {"d0": fp(_1=A), "d1": Footprints.empty(), "d2": fp(_1=A, _2=B)}
    props = {"d0": fp(a=A), "d1": fp(x=C), "d2": fp(a=A, b=B), "d3": fp(y=C)}
    r = scot_aoi(truth, props)
    assert r["scot"] == 1.0 and r["tracking_fp"] == 0
    # a truth series starting with an empty date starts where the buildings start
    truth = {"d0": Footprints.empty(), "d1": fp(_1=A), "d2": fp(_1=A, _2=B)}
    assert scot_aoi(truth, {"d1": fp(a=A), "d2": fp(a=A, b=B)})["change_tp"] == 1


def test_mean_over_aois_and_aois_without_truth_are_skipped():
    good = series(fp(_1=A), fp(_1=A, _2=B))
    static = series(fp(_1=A), fp(_1=A))
    r = scot_aois({"x": good, "y": static, "z": series(Footprints.empty())},
                  {"x": good, "y": static, "z": series(fp(a=A))})
    assert r["by_aoi"]["x"]["scot"] == 1.0 and r["by_aoi"]["y"]["scot"] == 0.0
    assert r["total"] == {"scot": 0.5}
    assert list(r["skipped"]) == ["z"]
    # an AOI missing from the proposals scores as no proposals
    r = scot_aois({"x": good}, {})
    assert r["by_aoi"]["x"]["tracking_fn"] == 3 and r["total"]["scot"] == 0.0
    with pytest.raises(ValueError, match="no buildings"):
        scot_aois({"z": series(Footprints.empty())}, {})


def test_invalid_polygons_are_repaired_for_the_intersection():
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # invalid, area 0 as given
    ious = iou_matrix(fp(_1=box(0, 0, 10, 10)), fp(a=bowtie))
    assert ious[0, 0] == pytest.approx(50 / (100 + 0 - 50))  # repaired intersection, area as given


# ------------------------------------------------------------------------------------- reader


def test_reader_round_trip_and_Id_property(tmp_path):
    truth, props = random_series(3)
    write_series(tmp_path / "t", {"aoi1": truth}, id_key="Id")
    write_series(tmp_path / "p", {"aoi1": props, "extra": props})
    got = scotio.scot_dirs(tmp_path / "t", tmp_path / "p")
    assert got["by_aoi"]["aoi1"] == scot_aoi(truth, props)
    assert list(got["by_aoi"]) == ["aoi1"]  # proposals for AOIs the truth lacks are ignored


def _one(root: Path, aoi="a", date="2018_01", feats=None):
    (root / aoi).mkdir(parents=True, exist_ok=True)
    if feats is None:
        feats = [{"type": "Feature", "properties": {"id": 1}, "geometry": shapely.geometry.mapping(A)}]
    (root / aoi / f"{date}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return root


def _feat(props, geom=A):
    return {"type": "Feature", "properties": props, "geometry": None if geom is None else shapely.geometry.mapping(geom)}


@pytest.mark.parametrize("feats, message", [
    ([_feat({"name": "x"})], "feature 0 has no building id: expected an 'id' or 'Id' property"),
    ([_feat({"id": 1}), _feat({"id": 1}, B)], "building id 1 appears more than once"),
    ([_feat({"id": None})], "building id None is not a number or a string"),
    ([_feat({"id": 1}, None)], "has no geometry"),
    ([_feat({"id": 1}, shapely.Point(1, 1))], "has a Point"),
])
def test_reader_errors_name_the_file_and_feature(tmp_path, feats, message):
    _one(tmp_path / "t")
    _one(tmp_path / "p", feats=feats)
    with pytest.raises(InputError, match=message) as e:
        scotio.scot_dirs(tmp_path / "t", tmp_path / "p")
    assert e.value.path.endswith("2018_01.geojson")


def test_reader_layout_errors(tmp_path):
    t = _one(tmp_path / "t")
    _one(tmp_path / "p", aoi="other")
    with pytest.raises(InputError, match="proposals AOI folder missing") as e:
        scotio.scot_dirs(t, tmp_path / "p")
    assert e.value.path == str(tmp_path / "p" / "a")
    _one(tmp_path / "p", date="2018_02")
    with pytest.raises(InputError, match="proposals file missing for date '2018_01'"):
        scotio.scot_dirs(t, tmp_path / "p")
    with pytest.raises(InputError, match="pass its parent"):
        scotio.scot_dirs(t / "a", tmp_path / "p")
    with pytest.raises(InputError, match="does not exist"):
        scotio.scot_dirs(tmp_path / "absent", tmp_path / "p")
    mixed = _one(tmp_path / "m", date="2018_02", feats=[_feat({"id": "x"})])
    _one(mixed)
    with pytest.raises(InputError, match="mix numbers and strings"):
        scotio.scot_dirs(mixed, mixed)
    empty = _one(tmp_path / "e", feats=[])
    with pytest.raises(InputError, match="no buildings on any date"):
        scotio.scot_dirs(empty, empty)
    with pytest.raises(InputError, match="IoU threshold"):
        scotio.scot_dirs(t, t, iou=1.0)


# ---------------------------------------------------------------------------------------- CLI


def test_cli_evaluate_scot_prints_json(tmp_path, capsys):
    t1, p1 = random_series(1)
    t2, p2 = random_series(2)
    truth = write_series(tmp_path / "truth", {"L15-0001": t1, "L15-0002": t2}, id_key="Id")
    props = write_series(tmp_path / "props", {"L15-0001": p1, "L15-0002": p2})
    out = tmp_path / "scot.json"
    assert cli.main(["evaluate", "--scot", "--truth", str(truth), "--proposals", str(props),
                     "--iou", "0.3", "--beta", "1", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    want = scot_aois({"L15-0001": t1, "L15-0002": t2}, {"L15-0001": p1, "L15-0002": p2}, threshold=0.3, beta=1.0)
    assert result == json.loads(json.dumps(want))
    assert set(result["by_aoi"]["L15-0001"]) == {"scot", "tracking", "change", "tracking_tp", "tracking_fp",
                                                 "tracking_fn", "change_tp", "change_fp", "change_fn", "mismatches"}
    assert result["total"]["scot"] == (result["by_aoi"]["L15-0001"]["scot"] + result["by_aoi"]["L15-0002"]["scot"]) / 2
    assert json.loads(out.read_text()) == result
    # defaults: IoU 0.25, beta 2; the truth against itself
    assert cli.main(["evaluate", "--scot", "--truth", str(truth), "--proposals", str(truth)]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["scot"] == 1.0


def test_cli_evaluate_scot_bad_input_exits_2_naming_the_folder(tmp_path):
    truth = _one(tmp_path / "truth", aoi="L15-0001")
    props = _one(tmp_path / "props", aoi="L15-0002")
    script = Path(sys.executable).parent / "footprints"
    proc = subprocess.run([str(script), "evaluate", "--scot", "--truth", str(truth), "--proposals", str(props)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert str(props / "L15-0001") in proc.stderr and "AOI folder missing" in proc.stderr
    assert cli.main(["evaluate", "--scot", "--truth", str(truth), "--proposals", str(truth),
                     "--min-area", "4"]) == 2
