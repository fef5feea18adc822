"""footprints/demo/series.py: the temporal demo (one scene on several dates)."""
import numpy as np
import pytest
import shapely

from footprints import demo
from footprints.demo import demo_series_names, generate_scene, generate_series
from footprints.demo import series as fseries
from footprints.demo.series import date_labels, date_plan, series_to_geojson
from footprints.names import SN7_SERIES_PATTERN, group_series

SEED, SIZE = 123, 384


@pytest.fixture(scope="module")
def four():
    return generate_series(SEED, 4, size=SIZE)


def test_names_follow_the_sn7_pattern():
    names = demo_series_names(2, 3)
    assert names[0] == ("demo_00", "2018_01", "global_monthly_2018_01_mosaic_demo_00")
    groups = group_series([n for _, _, n in names], SN7_SERIES_PATTERN)
    assert list(groups) == ["demo_00", "demo_01"] and list(groups["demo_01"]) == ["2018_01", "2018_02", "2018_03"]
    assert date_labels(14)[11:] == ["2018_12", "2019_01", "2019_02"]


def test_deterministic(four):
    again = generate_series(SEED, 4, size=SIZE)
    for a, b in zip(four, again):
        assert np.array_equal(a["image"], b["image"]) and a["ids"] == b["ids"]


def test_ids_are_stable_and_buildings_come_go_and_hide(four):
    by_id = {}
    for d in four:
        for i, poly in zip(d["ids"], d["buildings"]):
            assert by_id.setdefault(i, poly).equals_exact(poly, 0)  # one Id, one footprint, every date
    sets = [set(d["ids"]) for d in four]
    plans = [d["plan"] for d in four]
    assert any(sets[k] - set().union(*sets[:k]) for k in range(1, 4))  # new buildings after the first date
    assert any(p.cleared.any() for p in plans)  # demolished
    (cloudy,) = [p for p in plans if p.cloud is not None]
    assert 0 < cloudy.date < 3 and cloudy.hidden.any()
    hidden_ids = {int(i) + 1 for i in np.flatnonzero(cloudy.hidden)}
    assert not hidden_ids & sets[cloudy.date]  # not in the labels under the cloud ...
    back = hidden_ids & sets[cloudy.date + 1]
    assert back  # ... and back (unless demolished) on the next date
    # the cloud covers each hidden building whole: the image is cloud-white there
    img = four[cloudy.date]["image"].transpose(1, 2, 0).astype(float)
    layout = generate_scene(SEED, size=SIZE)[3]
    t = four[0]["transform"]
    for i in sorted(hidden_ids)[:3]:
        x, y = layout[i - 1].representative_point().coords[0]
        assert img[int((y - t.f) / t.e), int((x - t.c) / t.a)].min() > 200


def test_construction_sites_become_buildings():
    four = generate_series(SEED, 4, size=SIZE)
    p0, p1 = four[0]["plan"], four[1]["plan"]
    assert p0.site.any()
    assert (p1.built[p0.site]).all()  # a site on one date stands on the next


def test_the_single_date_scene_is_untouched_by_the_series_machinery(monkeypatch):
    """With a plan in which everything stands and no cloud, a series date is exactly the
    single-date scene: the series draws from its own generator, never from the scene's."""
    want = generate_scene(SEED, size=256)

    def everything(seed, footprints, dates, date, size):
        n = len(footprints)
        return fseries.DatePlan(date, np.ones(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool))

    monkeypatch.setattr(fseries, "date_plan", everything)
    got = demo.generate_series(SEED, 2, size=256)
    assert np.array_equal(got[1]["image"], want[0])
    assert [p.equals_exact(q, 0) for p, q in zip(got[1]["buildings"], want[3])] == [True] * len(want[3])


def test_plan_rules_on_many_buildings():
    fps = [shapely.box(i * 10, 0, i * 10 + 8, 8) for i in range(100)]
    plans = [date_plan(5, fps, 4, d, 1000) for d in range(4)]
    assert 0.15 < np.mean(~plans[0].built & ~plans[0].cleared) < 0.45  # about a third not built yet
    assert plans[3].cleared.sum() >= 1
    fc = series_to_geojson([7], [fps[0]], "EPSG:32737")
    assert fc["features"][0]["properties"]["Id"] == 7
