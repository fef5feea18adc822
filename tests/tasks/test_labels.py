import json

import luigi
import pytest
import shapely

from tasks.errors import InputError
from tasks.labels import LabelReport, LoadLabels, clean_geometries, load_labels, read_label_file


def _fc(features, crs=None):
    fc = {"type": "FeatureCollection", "features": features}
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    return fc


def _poly(coords, **props):
    return {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [coords]}}


SQUARE = [[36.0, -6.0], [36.001, -6.0], [36.001, -5.999], [36.0, -5.999], [36.0, -6.0]]
BOWTIE = [[36.0, -6.0], [36.001, -5.999], [36.001, -6.0], [36.0, -5.999], [36.0, -6.0]]


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


def test_spacenet_labels_keep_their_utm_crs_exactly(pg, fixtures_dir):
    path = fixtures_dir / "imagery" / "geotiff_labels.geojson"
    report = load_labels(pg, path)
    pg.commit()
    assert report.loaded == 43 and report.repaired == 0 and not report.rejected
    with pg.cursor() as cur:
        cur.execute("SELECT DISTINCT srid FROM labels")
        assert cur.fetchall() == [(32616,)]
        cur.execute("SELECT sum(ST_Area(geom)) FROM labels")
        assert cur.fetchone()[0] == pytest.approx(8459.360742258148, rel=1e-12)
        cur.execute("SELECT ST_AsBinary(geom) FROM labels ORDER BY feature_index LIMIT 1")
        wkb = bytes(cur.fetchone()[0])
    import geopandas as gpd

    first = gpd.read_file(path).geometry.iloc[0]
    got = shapely.from_wkb(wkb)
    assert shapely.equals_exact(shapely.get_geometry(got, 0) if got.geom_type == "MultiPolygon" else got, first, 0)


def test_custom_crs_labels_without_crs_member_are_not_degrees(pg, fixtures_dir, luigi_config):
    path = fixtures_dir / "imagery" / "geotiff_custom_proj_labels.geojson"
    with pytest.raises(InputError, match=r"geotiff_custom_proj_labels\.geojson: coordinates .* not longitude/latitude"):
        load_labels(pg, path)
    pg.rollback()
    raster = fixtures_dir / "imagery" / "sample_geotiff_custom_proj.tif"
    report = load_labels(pg, path, override=str(raster))  # borrow the raster's CRS
    pg.commit()
    assert report.loaded == 19
    with pg.cursor() as cur:
        cur.execute("SELECT DISTINCT l.srid, s.auth_name FROM labels l JOIN spatial_ref_sys s USING (srid)")
        (srid, auth), = cur.fetchall()
        assert srid >= 900000 and auth == "footprints"
        # the EPSG:4326 copy is in western Nebraska, as PROVENANCE.md says
        cur.execute("SELECT ST_X(ST_Centroid(ST_Collect(geom_4326))), ST_Y(ST_Centroid(ST_Collect(geom_4326))) FROM labels")
        lon, lat = cur.fetchone()
    assert -104.5 < lon < -103.5 and 41.5 < lat < 42.2


def test_legacy_crs_member_is_honoured(pg, tmp_path):
    p = _write(tmp_path, "utm.geojson", _fc([_poly([[500000, 4000000], [500010, 4000000], [500010, 4000010],
                                                     [500000, 4000010], [500000, 4000000]])],
                                           crs="urn:ogc:def:crs:EPSG::32616"))
    rep = load_labels(pg, p)
    assert rep.loaded == 1
    with pg.cursor() as cur:
        cur.execute("SELECT srid, ST_Area(geom) FROM labels")
        assert cur.fetchone() == (32616, 100.0)


def test_self_intersecting_polygon_is_repaired_and_counted(pg, tmp_path):
    p = _write(tmp_path, "bow.geojson", _fc([_poly(SQUARE, id=1), _poly(BOWTIE, id=2),
                                             {"type": "Feature", "properties": {},
                                              "geometry": {"type": "Point", "coordinates": [36, -6]}}]))
    rep = load_labels(pg, p)
    pg.commit()
    assert rep.loaded == 2 and rep.repaired == 1
    assert rep.rejected == [{"feature": 2, "reason": "Point is not a polygon"}]
    with pg.cursor() as cur:
        cur.execute("SELECT feature_index, repaired, ST_IsValid(geom), ST_NumGeometries(geom) FROM labels ORDER BY 1")
        assert cur.fetchall() == [(0, False, True, 1), (1, True, True, 2)]


@pytest.mark.parametrize("content,problem", [
    ("", "empty"),
    ("{not json", "malformed GeoJSON"),
    ('{"type": "Topology", "objects": {}}', "not a FeatureCollection"),
])
def test_empty_or_malformed_geojson(tmp_path, content, problem):
    p = _write(tmp_path, "bad.geojson", content)
    with pytest.raises(InputError, match=rf"bad\.geojson: .*{problem}"):
        read_label_file(p)


def test_clean_geometries_rejects_empty():
    rep = LabelReport(path="x")
    idx, out, rep_flags = clean_geometries(
        [shapely.Polygon(), shapely.box(0, 0, 1, 1), None], rep)
    assert list(idx) == [1] and out[0].geom_type == "MultiPolygon"
    assert [r["feature"] for r in rep.rejected] == [0, 2]


def test_task_commits_rows_and_marker_together_and_rerun_never_duplicates(pg, workdir, luigi_config, tmp_path):
    p = _write(tmp_path, "city.geojson", _fc([_poly(SQUARE), _poly(BOWTIE)]))
    luigi_config("data", "images", str(tmp_path / "none*.tif"))
    luigi_config("data", "labels", str(p))
    task = LoadLabels(path=str(p))
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    task.output().touch  # the marker target exists
    assert task.complete()
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM labels")
        assert cur.fetchone()[0] == 2
    # forcing a second load (marker removed) replaces rows instead of duplicating them
    with pg.cursor() as cur:
        cur.execute("DELETE FROM table_updates")
    pg.commit()
    assert not task.complete()
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM labels")
        assert cur.fetchone()[0] == 2
    report = json.loads((workdir / "labels" / "city.report.json").read_text())
    assert report["loaded"] == 2 and report["repaired"] == 1


def test_failed_load_leaves_no_rows(pg, workdir, luigi_config, tmp_path):
    good = _write(tmp_path, "good.geojson", _fc([_poly(SQUARE)]))
    bad = _write(tmp_path, "bad.geojson", "")
    luigi_config("data", "images", str(tmp_path / "none*.tif"))
    tasks = [LoadLabels(path=str(bad)), LoadLabels(path=str(good))]
    assert not luigi.build(tasks, local_scheduler=True, log_level="CRITICAL")
    assert tasks[1].complete() and not tasks[0].complete()
    with pg.cursor() as cur:
        cur.execute("SELECT source, count(*) FROM labels GROUP BY source")
        assert cur.fetchall() == [("good", 1)]
