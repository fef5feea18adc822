"""LoadLabels and footprints.labels.load_labels against PostGIS (the pure parts are tested under
tests/footprints/labels)."""
import json
import threading

import luigi
import pytest
import shapely

import footprints.labels.copy as copy_mod
from footprints import db
from footprints.errors import InputError
from footprints.labels import load_labels, partition_names
from tasks.labels import LoadLabels


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


def test_task_commits_rows_and_marker_together_and_rerun_never_duplicates(pg, workdir, luigi_config, tmp_path):
    p = _write(tmp_path, "city.geojson", _fc([_poly(SQUARE), _poly(BOWTIE)]))
    luigi_config("data", "images", str(tmp_path / "none*.tif"))
    luigi_config("data", "labels", str(p))
    task = LoadLabels(path=str(p))
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    assert task.output().exists()  # the marker row is there
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


def _load(pg, tmp_path, name, obj):
    rep = load_labels(pg, _write(tmp_path, name, obj))
    pg.commit()
    return rep


def test_odd_features_are_rejected_with_their_reasons(pg, tmp_path):
    unclosed = SQUARE[:-1] + [[36.0, -5.9995]]
    feats = [_poly(SQUARE, n=0),
             _poly(unclosed, n=1),
             _poly([[36.0, -6.0], [36.001, -6.0], [36.0, -6.0]], n=2),
             _poly([p + [12.5] for p in SQUARE], n=3),                       # 3D: Z dropped
             {"type": "Feature", "properties": {"n": 4}, "geometry": None},
             {"type": "Feature", "properties": {"n": 5},
              "geometry": {"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [36, -6]}]}},
             {"type": "Feature", "properties": {"n": 6}, "geometry": {"type": "LineString", "coordinates": SQUARE}},
             {"type": "Feature", "properties": {"n": 7}, "geometry": {"type": "Circle", "coordinates": [36, -6]}},
             {"type": "Feature", "properties": {"n": 8}, "geometry": {"type": "Polygon", "coordinates": []}},
             {"type": "Feature", "properties": {"n": 9},
              "geometry": {"type": "MultiPolygon", "coordinates": [[SQUARE], [BOWTIE]]}}]
    rep = _load(pg, tmp_path, "odd.geojson", _fc(feats))
    reasons = {r["feature"]: r["reason"] for r in rep.rejected}
    assert set(reasons) == {1, 2, 4, 5, 6, 7, 8}
    assert "not closed" in reasons[1] and "fewer than 4" in reasons[2]
    assert reasons[4] == "empty or missing geometry" and reasons[8] == "empty or missing geometry"
    assert reasons[5] == "GeometryCollection is not a polygon" and reasons[6] == "LineString is not a polygon"
    assert reasons[7].startswith("unreadable geometry")
    assert rep.read == 10 and rep.loaded == 3 and rep.repaired == 1
    with pg.cursor() as cur:
        cur.execute("SELECT feature_index, repaired, ST_NDims(geom), ST_IsValid(geom), properties->>'n' "
                    "FROM labels ORDER BY 1")
        assert cur.fetchall() == [(0, False, 2, True, "0"), (3, False, 2, True, "3"), (9, True, 2, True, "9")]


def test_properties_are_stored_as_written(pg, tmp_path):
    props = [{"name": "Ünïcode ✓", "nested": {"a": [1, 2.5, None]}, "big": 12345678901234567890123},
             {}, None, {"quote": 'say "hi"\\', "tab": "a\tb"}]
    feats = [{"type": "Feature", "properties": p, "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}
             for p in props]
    feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [SQUARE]}})  # no member
    _load(pg, tmp_path, "props.geojson", _fc(feats))
    with pg.cursor() as cur:
        cur.execute("SELECT feature_index, properties FROM labels ORDER BY 1")
        got = dict(cur.fetchall())
    assert got == {0: props[0], 1: None, 2: None, 3: props[3], 4: None}


def test_documents_that_are_not_plain_feature_collections(pg, tmp_path):
    # a single Feature; a geometry that is not an object and NaN (read by Python's json instead)
    _load(pg, tmp_path, "one.geojson", _poly(SQUARE, a=1))
    text = json.dumps(_fc([_poly(SQUARE, v=1), {"type": "Feature", "properties": {}, "geometry": "nowhere"}]))
    rep = _load(pg, tmp_path, "odd2.geojson", text.replace('"v": 1', '"v": NaN'))
    assert rep.loaded == 1 and rep.rejected[0]["feature"] == 1
    assert rep.rejected[0]["reason"].startswith("unreadable geometry")
    with pg.cursor() as cur:
        cur.execute("SELECT source, properties FROM labels ORDER BY 1")
        assert cur.fetchall() == [("odd2", {"v": None}), ("one", {"a": 1})]


@pytest.mark.parametrize("member,srid", [({"type": "EPSG", "properties": {"code": 32616}}, 32616),
                                         ({"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}, 4326),
                                         ({"type": "name", "properties": {"name": "EPSG:3857"}}, 3857)])
def test_legacy_crs_member_forms(pg, tmp_path, member, srid):
    coords = SQUARE if srid == 4326 else [[500000 + 10 * x, 4000000 + 10 * y] for x, y in
                                          [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]
    fc = _fc([_poly(coords)])
    fc["crs"] = member
    _load(pg, tmp_path, "crs.geojson", fc)
    with pg.cursor() as cur:
        cur.execute("SELECT srid FROM labels")
        assert cur.fetchall() == [(srid,)]


def _partitions(pg, *sources):
    """(name, bound) of the partitions of ``labels`` for these sources, and the default one
    (the pg fixture empties tables, so other tests' partitions are there, empty)."""
    names = ["labels_default"] + [n for s in sources for n in partition_names(s)]
    with pg.cursor() as cur:
        cur.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'labels'::regclass "
                    "AND c.relname = ANY(%s) ORDER BY 1", (names,))
        return cur.fetchall()


def test_one_partition_per_source_and_a_reload_replaces_it(pg, tmp_path):
    a = _write(tmp_path, "alpha.geojson", _fc([_poly(SQUARE), _poly(BOWTIE)]))
    b = _write(tmp_path, "beta.geojson", _fc([_poly(SQUARE)]))
    for p in (a, b, a, a):
        load_labels(pg, p)
        pg.commit()
    parts = dict(_partitions(pg, "alpha", "beta"))
    assert parts.pop("labels_default") == "DEFAULT"
    assert sorted(parts.values()) == ["FOR VALUES IN ('alpha')", "FOR VALUES IN ('beta')"]
    with pg.cursor() as cur:
        cur.execute("SELECT source, count(*), count(DISTINCT id) FROM labels GROUP BY 1 ORDER BY 1")
        assert cur.fetchall() == [("alpha", 2, 2), ("beta", 1, 1)]
        # each partition has the 3 indexes built before ATTACH, adopted as the partitioned
        # indexes' children (ATTACH built no others)
        cur.execute("SELECT c.relname, p.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                    "LEFT JOIN pg_inherits i ON i.inhrelid = x.indexrelid LEFT JOIN pg_class p ON p.oid = i.inhparent "
                    "WHERE x.indrelid::regclass::text = ANY(%s) ORDER BY 1", (list(parts),))
        got = cur.fetchall()
    assert len(got) == 6
    for child, parent in got:
        suffix = {"labels_pkey": "_pkey", "labels_geom_gix": "_geom_gix", "labels_geom_4326_gix": "_geom_4326_gix"}
        assert child[-len(suffix[parent]):] == suffix[parent] and child[:-len(suffix[parent])] in parts


def test_rows_inserted_directly_are_replaced_by_a_load(pg, tmp_path):
    with pg.cursor() as cur:
        cur.execute("INSERT INTO labels (source, feature_index, srid, geom, geom_4326) VALUES "
                    "('gamma', 7, 4326, ST_Multi(ST_MakeEnvelope(0, 0, 1, 1, 4326)), "
                    "ST_Multi(ST_MakeEnvelope(0, 0, 1, 1, 4326)))")
    pg.commit()
    _load(pg, tmp_path, "gamma.geojson", _fc([_poly(SQUARE)]))
    with pg.cursor() as cur:
        cur.execute("SELECT tableoid::regclass::text, feature_index FROM labels")
        (table, index), = cur.fetchall()
    assert table in partition_names("gamma") and index == 0


def test_a_failed_load_leaves_the_previous_partition(pg, tmp_path, monkeypatch):
    good = _fc([_poly(SQUARE), _poly(SQUARE)])
    p = _write(tmp_path, "delta.geojson", good)
    load_labels(pg, p)
    pg.commit()
    monkeypatch.setattr(copy_mod, "CHUNK", 2)  # the bad coordinates come in the second chunk
    metres = [[500000, 4000000], [500010, 4000000], [500010, 4000010], [500000, 4000000]]
    p.write_text(json.dumps(_fc([_poly(SQUARE), _poly(SQUARE), _poly(metres)])))
    with pytest.raises(InputError, match=r"delta\.geojson: coordinates .*\(features 2\.\.2\).* not longitude/latitude"):
        load_labels(pg, p)
    pg.rollback()
    with pg.cursor() as cur:
        cur.execute("SELECT source, count(*) FROM labels GROUP BY 1")
        assert cur.fetchall() == [("delta", 2)]
    assert len(_partitions(pg, "delta")) == 2  # delta's first one, and the default


def test_loaders_of_different_sources_run_side_by_side(pg, tmp_path):
    paths = [_write(tmp_path, f"side{i}.geojson", _fc([_poly(SQUARE)] * (i + 1))) for i in range(3)]
    for p in paths[:2]:  # reloads too: their swaps drop old partitions
        load_labels(pg, p)
    pg.commit()
    start, errors = threading.Barrier(len(paths)), []

    def work(p):
        try:
            with db.connection() as conn:
                start.wait()
                load_labels(conn, p)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with pg.cursor() as cur:
        cur.execute("SELECT source, count(*) FROM labels GROUP BY 1 ORDER BY 1")
        assert cur.fetchall() == [("side0", 1), ("side1", 2), ("side2", 3)]


def test_an_unpartitioned_labels_table_from_before_is_migrated(pg, tmp_path):
    with pg.cursor() as cur:  # the labels table as the older schema made it, with rows of two sources
        cur.execute("DROP TABLE labels")
        cur.execute("""CREATE TABLE labels (
            id bigserial PRIMARY KEY, source text NOT NULL, feature_index integer NOT NULL,
            srid integer NOT NULL, repaired boolean NOT NULL DEFAULT false, properties jsonb,
            geom geometry(MultiPolygon) NOT NULL CHECK (ST_SRID(geom) = srid),
            geom_4326 geometry(MultiPolygon, 4326) NOT NULL)""")
        cur.execute("CREATE INDEX labels_source_idx ON labels (source)")
        cur.execute("CREATE INDEX labels_geom_4326_gix ON labels USING gist (geom_4326)")
        cur.execute("CREATE INDEX labels_geom_gix ON labels USING gist (geom)")
        for src, n in (("old_a", 2), ("old b", 3)):
            for i in range(n):
                cur.execute("INSERT INTO labels (source, feature_index, srid, properties, geom, geom_4326) VALUES "
                            "(%s, %s, 4326, %s, ST_Multi(ST_MakeEnvelope(0, 0, 1, 1, 4326)), "
                            "ST_Multi(ST_MakeEnvelope(0, 0, 1, 1, 4326)))", (src, i, json.dumps({"i": i})))
    pg.commit()
    db.ensure_schema(pg)
    db.ensure_schema(pg)  # idempotent
    parts = dict(_partitions(pg, "old_a", "old b"))
    assert parts == {"labels_default": "DEFAULT", partition_names("old_a")[0]: "FOR VALUES IN ('old_a')",
                     partition_names("old b")[0]: "FOR VALUES IN ('old b')"}
    with pg.cursor() as cur:
        cur.execute("SELECT source, feature_index, id, properties FROM labels ORDER BY id")
        rows = cur.fetchall()
        assert [(s, i) for s, i, _, _ in rows] == [("old_a", 0), ("old_a", 1), ("old b", 0), ("old b", 1), ("old b", 2)]
        assert [r[2] for r in rows] == [1, 2, 3, 4, 5] and rows[4][3] == {"i": 2}
        cur.execute("SELECT to_regclass('labels_unpartitioned'), to_regclass('labels_unpartitioned_id_seq')")
        assert cur.fetchone() == (None, None)
    _load(pg, tmp_path, "old_a.geojson", _fc([_poly(SQUARE)]))  # replaces the migrated partition
    with pg.cursor() as cur:
        cur.execute("SELECT source, count(*), min(id) FROM labels GROUP BY 1 ORDER BY 1")
        assert cur.fetchall() == [("old b", 3, 3), ("old_a", 1, 6)]  # the sequence went on after the old ids


def test_an_empty_unpartitioned_labels_table_is_replaced(pg):
    with pg.cursor() as cur:
        cur.execute("DROP TABLE labels")
        cur.execute("CREATE TABLE labels (id bigserial PRIMARY KEY, source text NOT NULL)")
    pg.commit()
    db.ensure_schema(pg)
    with pg.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE oid = 'labels'::regclass")
        assert cur.fetchone()[0] == "p"
