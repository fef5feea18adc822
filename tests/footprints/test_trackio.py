"""footprints/trackio.py: ids into PostGIS and back, the tracks table, and the outputs' id column."""
import io

import shapely

from footprints import outputs as fo
from footprints.track import track
from footprints.trackio import read_id_areas, read_image_ids, store_tracks, tracks_table, write_tracks_csv

A, B = shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)


def test_tracks_table():
    header, rows = tracks_table({2: {"2018_02": 5.0}, 1: {"2018_01": 100.0, "2018_03": 99.5}},
                                ["2018_01", "2018_02", "2018_03"])
    assert header == ["id", "first_date", "last_date", "n_dates", "area_2018_01", "area_2018_02", "area_2018_03"]
    assert rows == [[1, "2018_01", "2018_03", 2, "100.00", "", "99.50"], [2, "2018_02", "2018_02", 1, "", "5.00", ""]]
    f = io.StringIO()
    write_tracks_csv(f, {1: {"a": 1.0}}, ["a"])
    assert f.getvalue() == "id,first_date,last_date,n_dates,area_a\n1,a,a,1,1.00\n"


def test_outputs_carry_the_persistent_id_in_series_runs():
    b = {"building_id": 7, "score": 0.9, "area_m2": 100.0, "geom_pix": A, "geom_4326": shapely.box(39, -6, 39.001, -5.999)}
    assert fo.spacenet_rows("img", [b]) == [["img", 7, fo.to_wkt(A), fo.to_wkt(b["geom_4326"]), 0.9]]
    tracked = {**b, "track_id": 42}
    assert fo.spacenet_rows("img", [tracked], tracked=True)[0][-1] == 42
    assert fo.spacenet_rows("img", [], tracked=True) == [["img", -1, "POLYGON EMPTY", "POLYGON EMPTY", 1, -1]]
    f = io.StringIO()
    fo.write_spacenet_csv(f, [], tracked=True)
    assert f.getvalue().strip().split(",") == fo.CSV_HEADER + ["id"]
    assert fo.geojson_features("img", [b])[0]["properties"]["id"] == 7
    props = fo.geojson_features("img", [tracked])[0]["properties"]
    assert props["id"] == 42 and props["BuildingId"] == 7


def test_store_and_read_back(pg):
    t = track([[A, B], [B], [A, B]])
    args = ("run1", "greedy_iou0.25", "aoi")
    store_tracks(pg, *args, t, ["d1", "d2", "d3"], ["im1", "im2", "im3"], [[5, 6], [9], [1, 2]],
                 [[100.0, 100.0], [100.0], [101.0, 99.0]], 32737)
    store_tracks(pg, *args, t, ["d1", "d2", "d3"], ["im1", "im2", "im3"], [[5, 6], [9], [1, 2]],
                 [[100.0, 100.0], [100.0], [101.0, 99.0]], 32737)  # a rerun replaces, never duplicates
    assert read_image_ids(pg, "run1", "greedy_iou0.25", "im2") == {9: 2}
    assert read_image_ids(pg, "run1", "hungarian_iou0.25", "im2") == {}
    assert read_id_areas(pg, "run1", "greedy_iou0.25", "aoi") == {1: {"d1": 100.0, "d3": 101.0},
                                                                 2: {"d1": 100.0, "d2": 100.0, "d3": 99.0}}
    with pg.cursor() as cur:
        cur.execute("SELECT id, first_date, last_date, n_dates, ST_SRID(footprint), ST_Area(footprint) "
                    "FROM building_ids WHERE run = %(run)s ORDER BY id", {"run": "run1"})
        assert cur.fetchall() == [(1, "d1", "d3", 2, 32737, 100.0), (2, "d1", "d3", 3, 32737, 100.0)]
