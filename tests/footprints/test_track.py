"""footprints/track.py: persistent building ids through an image series (SpaceNet 7's greedy rule
and the one-to-one optimal alternative), pinned on tiny hand-made series of boxes."""
import numpy as np
import pytest
import shapely
from scipy.optimize import linear_sum_assignment

from footprints.scot import Footprints, scot_aoi
from footprints.track import match_greedy, match_hungarian, track

A = shapely.box(0, 0, 10, 10)
B = shapely.box(20, 0, 30, 10)
C = shapely.box(40, 0, 44, 4)  # the smallest


def ids(tracks):
    return [list(map(int, d)) for d in tracks.ids]


def test_first_date_numbers_largest_first_and_steady_buildings_keep_their_ids():
    t = track([[C, A, shapely.box(20, 0, 30, 12)], [A, C, shapely.box(20, 0, 30, 12)]])
    assert ids(t) == [[3, 2, 1], [2, 3, 1]]
    assert t.first == {1: 0, 2: 0, 3: 0} and t.last == {1: 1, 2: 1, 3: 1}


@pytest.mark.parametrize("method", ["greedy", "hungarian"])
def test_a_missed_building_takes_its_id_back_later(method):
    # B is hidden (a cloud, a miss) on the second date and seen again on the third
    t = track([[A, B], [A], [A, B], [B]], method=method)
    assert ids(t) == [[1, 2], [1], [1, 2], [2]]
    assert t.first[2] == 0 and t.last[2] == 3 and sorted(t.areas[2]) == [0, 2, 3]


@pytest.mark.parametrize("method", ["greedy", "hungarian"])
def test_ids_are_compared_through_their_first_seen_footprint(method):
    # a footprint drifting 4 m a date: IoU with the previous date stays 0.43, but with the
    # first-seen footprint it falls to 0.11 on the third date, which then starts a new id
    d0, d1, d2 = shapely.box(0, 0, 10, 10), shapely.box(4, 0, 14, 10), shapely.box(8, 0, 18, 10)
    t = track([[d0], [d1], [d2]], method=method)
    assert ids(t) == [[1], [1], [2]]
    assert t.footprint[1].equals(d0) and t.footprint[2].equals(d2)


def test_min_iou_is_inclusive_and_new_buildings_get_new_ids():
    quarter = shapely.box(0, 0, 10, 2.5)  # IoU with A = 25 / 100 = 0.25
    assert ids(track([[A], [quarter]], min_iou=0.25)) == [[1], [1]]
    assert ids(track([[A], [quarter]], min_iou=0.26)) == [[1], [2]]
    assert ids(track([[A], [A, B]])) == [[1], [1, 2]]
    with pytest.raises(ValueError, match="min_iou"):
        track([[A]], min_iou=0)
    with pytest.raises(ValueError, match="method"):
        track([[A]], method="nearest")


def test_greedy_each_id_at_most_once_per_date_the_larger_building_first():
    # A splits in two: the larger half keeps A's id, the smaller (IoU 0.4 >= 0.25) gets a new one
    big, small = shapely.box(0, 0, 10, 6), shapely.box(0, 6, 10, 10)
    t = track([[A], [small, big]])
    assert ids(t) == [[1], [2, 1]]
    # and the order the buildings come in does not matter
    assert ids(track([[A], [big, small]])) == [[1], [1, 2]]


def _contested():
    """A (id 1) and B (id 2) side by side; then a large X overlapping both, better with B, and a
    small Y overlapping only B."""
    a, b = shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)
    x, y = shapely.box(3, 0, 19, 7), shapely.box(10, 7, 20, 10)  # IoU X-A 0.30, X-B 0.42, Y-B 0.30
    return [[a, b], [x, y]]


def test_greedy_and_hungarian_differ_where_a_large_building_takes_the_id_a_small_one_needed():
    dates = _contested()
    greedy, hungarian = track(dates, "greedy"), track(dates, "hungarian")
    assert ids(greedy) == [[1, 2], [2, 3]]  # X (largest) takes its best id, B; Y has none left
    assert ids(hungarian) == [[1, 2], [1, 2]]  # two matches beat one
    # scored against a truth in which X is A's successor and Y is B's, hungarian tracks better
    truth = {0: Footprints((1, 2), np.array(dates[0], dtype=object)),
             1: Footprints((1, 2), np.array(dates[1], dtype=object))}

    def prop(t):
        return {d: Footprints(tuple(int(i) for i in t.ids[d]), np.array(dates[d], dtype=object)) for d in (0, 1)}

    assert scot_aoi(truth, prop(hungarian))["mismatches"] == 0
    assert scot_aoi(truth, prop(greedy))["mismatches"] == 2  # X now B's id, Y a new one


def test_match_greedy_on_a_matrix():
    ious = np.array([[0.3, 0.42], [0.0, 0.3]])
    assert match_greedy(ious, np.array([112.0, 30.0]), 0.25) == {0: 1}
    assert match_greedy(ious, np.array([30.0, 112.0]), 0.25) == {1: 1, 0: 0}  # the other building first
    # ties between ids: the lowest id
    assert match_greedy(np.array([[0.5, 0.5]]), np.array([1.0]), 0.25) == {0: 0}
    assert match_greedy(np.zeros((2, 0)), np.array([1.0, 2.0]), 0.25) == {}


def test_match_hungarian_maximises_matches_then_total_iou():
    # one match of IoU 0.9 (total 0.9) loses to two of 0.3 (more matches)
    assert match_hungarian(np.array([[0.9, 0.3], [0.3, 0.0]]), 0.25) == {0: 1, 1: 0}
    # with as many matches either way, the larger total IoU
    assert match_hungarian(np.array([[0.9, 0.5], [0.6, 0.4]]), 0.25) == {0: 0, 1: 1}
    # pairs below min_iou are never made
    assert match_hungarian(np.array([[0.2, 0.0], [0.0, 0.9]]), 0.25) == {1: 1}


def test_hungarian_by_components_equals_one_global_assignment():
    rng = np.random.default_rng(3)
    ious = np.where(rng.random((40, 60)) < 0.04, rng.uniform(0.1, 1.0, (40, 60)), 0.0)
    got = match_hungarian(ious, 0.25)
    ok = ious >= 0.25
    reward = np.where(ok, 41.0 + ious, 0.0)
    r, c = linear_sum_assignment(reward, maximize=True)
    ref = [(a, b) for a, b in zip(r, c) if ok[a, b]]
    assert len(got) == len(ref)
    assert sum(ious[a, b] for a, b in got.items()) == pytest.approx(sum(ious[a, b] for a, b in ref))
    assert len(set(got.values())) == len(got)


@pytest.mark.parametrize("method", ["greedy", "hungarian"])
def test_empty_dates_and_permutations(method):
    t = track([[], [A, B], [], [B, A]], method=method)
    assert ids(t) == [[], [1, 2], [], [2, 1]]
    assert t.first == {1: 1, 2: 1} and t.last == {1: 3, 2: 3}
