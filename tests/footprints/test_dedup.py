import csv
import io
import json
import threading
from dataclasses import asdict

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from footprints import db
from footprints.dedup import batch_key, check_cores, components, deduplicate, partition_names, whole_components
from footprints.errors import InputError
from footprints.geo import pixel_to_geo
from footprints.masks import make_mask
from footprints.outputs import read_buildings
from footprints.polygonize import polygonize_probabilities, prediction_rows, read_window, tile_polygons
from footprints.tiling import tile_grid

UTM = Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)  # EPSG:32616
SRID = 32616
DB_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_runs = iter(range(10 ** 9))


def new_run() -> str:
    return f"t{next(_runs)}"


def tiles_for(w, h, ts, ov):
    return [asdict(s) for s in tile_grid(w, h, ts, ov)]


def store_tile_predictions(conn, run, prob, tiles, three_class=False, order=None, image="img", halo=0):
    """Polygonize every tile's read window as the Polygonize task does, and COPY the rows."""
    _, h, w = prob.shape
    rows = []
    for t in tiles:
        c0, r0, ww, hh = win = read_window(t, halo, w, h)
        polys = tile_polygons(prob[:, r0:r0 + hh, c0:c0 + ww], UTM, t, win, three_class=three_class)
        rows.append(prediction_rows(run, image, t["tile_id"], SRID, polys, UTM))
    if order is not None:
        rows = [rows[i] for i in order]
    buf = io.StringIO()
    w = csv.writer(buf)
    for r in rows:
        w.writerows(r)
    buf.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(db.load_sql("predictions_copy"), buf)


def fetch_buildings(conn, run, image="img"):
    with conn.cursor() as cur:
        cur.execute("SELECT building_id, score, area_m2, srid, ST_AsBinary(geom_pix), ST_AsBinary(geom), "
                    "ST_AsBinary(geom_4326), ST_SRID(geom) FROM buildings "
                    "WHERE batch = buildings_batch(%(run)s, %(image)s) AND run = %(run)s AND image = %(image)s "
                    "ORDER BY building_id", {"run": run, "image": image})
        return [(bid, score, area, srid, shapely.from_wkb(bytes(p)), shapely.from_wkb(bytes(g)),
                 shapely.from_wkb(bytes(g4)), gsrid) for bid, score, area, srid, p, g, g4, gsrid in cur.fetchall()]


def tiled_dedup(conn, prob, ts, ov, three_class=False, order=None, halo=0, **kw):
    run = new_run()
    _, h, w = prob.shape
    tiles = tiles_for(w, h, ts, ov)
    store_tile_predictions(conn, run, prob, tiles, three_class=three_class, order=order, halo=halo)
    n = deduplicate(conn, run, "img", tiles, UTM, SRID, width=w, height=h, halo_px=halo, **kw)
    got = fetch_buildings(conn, run)
    assert n == len(got)
    return run, tiles, got


def assert_same_buildings(got, ref, exact=True, min_iou=0.95):
    """One-to-one: every reference polygon has exactly one building equal to it."""
    assert len(got) == len(ref), f"{len(got)} buildings, whole-image polygonization has {len(ref)}"
    tree = shapely.STRtree(got)
    used = set()
    for r in ref:
        cands = [i for i in tree.query(r) if shapely.intersection(got[i], r).area > 0]
        best = max(cands, key=lambda i: shapely.intersection(got[i], r).area / shapely.union(got[i], r).area)
        iou = shapely.intersection(got[best], r).area / shapely.union(got[best], r).area
        if exact:
            assert shapely.symmetric_difference(got[best], r).area == 0, (got[best].wkt, r.wkt)
        else:
            assert iou >= min_iou, (got[best].wkt, r.wkt, iou)
        assert best not in used
        used.add(best)


def random_rect_mask(draw_rects, h, w):
    m = np.zeros((h, w), np.uint8)
    for x, y, rw, rh in draw_rects:
        m[y:y + rh, x:x + rw] = 255
    return m[None]


rects = st.lists(st.tuples(st.integers(0, 59), st.integers(0, 47), st.integers(1, 16), st.integers(1, 16)),
                 min_size=0, max_size=14)
tilings = st.integers(6, 40).flatmap(lambda ts: st.tuples(st.just(ts), st.sampled_from(
    sorted({0, 1, 2, ts // 4, ts // 2, ts - 1}))))
halos = st.sampled_from([0, 0, 1, 3, 8])


# ---------------------------------------------------------------- the central property


@DB_SETTINGS
@given(rects, tilings, halos)
def test_tiled_polygonize_plus_dedup_equals_whole_image(pg, rect_list, tiling, halo):
    ts, ov = tiling
    prob = random_rect_mask(rect_list, 48, 60)
    ref = [p for p, _, _ in polygonize_probabilities(prob, UTM)]
    _, _, got = tiled_dedup(pg, prob, ts, ov, halo=halo)
    assert_same_buildings([g[4] for g in got], ref, exact=True)
    for _bid, score, area, srid, pix, geo, g4326, gsrid in got:
        assert pix.is_valid and pix.geom_type == "Polygon"
        assert score == pytest.approx(1.0)
        assert area == pytest.approx(pix.area * 0.25)
        assert srid == gsrid == SRID
        assert shapely.symmetric_difference(geo, pixel_to_geo(pix, UTM)).area < 1e-6
        lon, lat = g4326.centroid.x, g4326.centroid.y
        assert -85 < lon < -84 and 33 < lat < 34  # Atlanta: lon/lat order, degrees
    assert sorted(g[0] for g in got) == list(range(1, len(got) + 1))
    pg.rollback()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rects, tilings, halos)
def test_min_area_and_simplification_apply_to_whole_buildings(pg, rect_list, tiling, halo):
    ts, ov = tiling
    prob = random_rect_mask(rect_list, 48, 60)
    ref = [p for p, _, _ in polygonize_probabilities(prob, UTM, min_area_m2=3.0)]
    _, _, got = tiled_dedup(pg, prob, ts, ov, halo=halo, min_area_m2=3.0, simplify_px=1.0)
    # the area filter sees whole buildings, never fragments: the same buildings as the whole
    # image; the simplification moves no outline by more than its tolerance (1 px)
    assert len(got) == len(ref)
    for r in ref:
        best = max(got, key=lambda g: shapely.intersection(g[4], r).area)
        assert shapely.hausdorff_distance(best[4], r) <= 1.0 + 1e-9
        assert best[4].is_valid and best[2] == pytest.approx(best[4].area * 0.25)
    pg.rollback()


# ---------------------------------------------------------------- dedup properties


@DB_SETTINGS
@given(rects, tilings, halos, st.randoms(use_true_random=False))
def test_dedup_is_idempotent_and_independent_of_tile_order(pg, rect_list, tiling, halo, rnd):
    ts, ov = tiling
    prob = random_rect_mask(rect_list, 48, 60)
    run, tiles, first = tiled_dedup(pg, prob, ts, ov, halo=halo, simplify_px=0.5)
    # again on the same predictions: the same buildings (replaced, not added)
    deduplicate(pg, run, "img", tiles, UTM, SRID, halo_px=halo, simplify_px=0.5)
    again = fetch_buildings(pg, run)
    # the same predictions inserted in another tile order (other row ids)
    order = list(range(len(tiles)))
    rnd.shuffle(order)
    _, _, shuffled = tiled_dedup(pg, prob, ts, ov, halo=halo, order=order, simplify_px=0.5)
    assert partitions_of(pg, run, "img") == [partition_names(batch_key(pg, run, "img"))[1]]
    for other in (again, shuffled):
        assert len(other) == len(first)
        for a, b in zip(first, other):
            assert a[0] == b[0]
            assert a[4].wkb == b[4].wkb  # same vertices in the same order
            assert a[1] == pytest.approx(b[1])
    pg.rollback()


@pytest.mark.parametrize("halo", [0, 4])
@pytest.mark.parametrize("overlap", [0, 1, 8, 16])
@pytest.mark.parametrize("where", ["vertical", "horizontal", "corner"])
def test_building_split_across_2_or_4_tiles_comes_out_once(pg, overlap, where, halo):
    ts, w, h = 32, 64, 64
    tiles = tiles_for(w, h, ts, overlap)
    core_line = tiles[0]["core_col_off"] + tiles[0]["core_width"]
    m = np.zeros((h, w), np.uint8)
    if where == "vertical":
        box = (core_line - 7, 10, core_line + 5, 20)
    elif where == "horizontal":
        box = (10, core_line - 7, 20, core_line + 5)
    else:
        box = (core_line - 7, core_line - 6, core_line + 5, core_line + 9)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    _, _, got = tiled_dedup(pg, m[None], ts, overlap, halo=halo)
    assert len(got) == 1
    assert shapely.symmetric_difference(got[0][4], shapely.box(*box)).area == 0
    pg.rollback()


@pytest.mark.parametrize("halo", [0, 4])
@pytest.mark.parametrize("overlap", [0, 8])
def test_buildings_a_pixel_apart_across_a_border_stay_separate(pg, overlap, halo):
    ts, w, h = 32, 64, 40
    tiles = tiles_for(w, h, ts, overlap)
    line = tiles[0]["core_col_off"] + tiles[0]["core_width"]
    m = np.zeros((h, w), np.uint8)
    m[5:15, line - 6:line] = 255          # ends on the core line
    m[5:15, line + 1:line + 7] = 255      # starts one pixel after it
    m[20:30, line - 6:line - 1] = 255     # one pixel before the line
    m[20:30, line:line + 6] = 255         # starts on it
    _, _, got = tiled_dedup(pg, m[None], ts, overlap, halo=halo)
    assert len(got) == 4
    pg.rollback()


@pytest.mark.parametrize("ov, halo", [(16, 0), (16, 8), (0, 8)])
def test_three_class_split_on_the_core_line_stays_split(pg, ov, halo):
    """Two houses sharing a wall exactly on the core line between two tiles. (With tiling
    overlap 0 AND no halo no tile sees across the line; then they would be joined.)"""
    ts, w, h = 48, 88, 40
    tiles = tiles_for(w, h, ts, ov)
    line = tiles[0]["core_col_off"] + tiles[0]["core_width"]
    houses = [shapely.box(*(UTM * (line - 14, 8)), *(UTM * (line, 24))),
              shapely.box(*(UTM * (line, 8)), *(UTM * (line + 14, 24)))]
    mask = make_mask(houses, (h, w), UTM, kind="3class")
    ref = [p for p, _, _ in polygonize_probabilities(mask, UTM, three_class=True)]
    assert len(ref) == 2
    _, _, got = tiled_dedup(pg, mask, ts, ov, three_class=True, halo=halo)
    assert_same_buildings([g[4] for g in got], ref, exact=False, min_iou=0.9)
    pg.rollback()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(10, 24), st.integers(10, 24), st.booleans()), min_size=1, max_size=5),
       st.integers(0, 30), st.sampled_from([(32, 8, 0), (40, 12, 0), (48, 16, 4), (32, 31, 0), (32, 0, 8),
                                            (40, 0, 6)]))
def test_three_class_tiled_matches_whole_image(pg, houses, y_shift, tiling):
    """Row houses (some sharing walls) over tile borders: the same buildings as whole-image
    polygonization of the same 3-class probabilities (overlap 0 needs the halo)."""
    ts, ov, halo = tiling
    polys, x = [], 2
    for w_, h_, gap in houses:
        polys.append(shapely.box(*(UTM * (x, 2 + y_shift)), *(UTM * (x + w_, 2 + y_shift + h_))))
        x += w_ + (3 if gap else 0)
    shape = (60, x + 2)
    mask = make_mask(polys, shape, UTM, kind="3class")
    ref = [p for p, _, _ in polygonize_probabilities(mask, UTM, three_class=True)]
    _, _, got = tiled_dedup(pg, mask, ts, ov, three_class=True, halo=halo)
    assert_same_buildings([g[4] for g in got], ref, exact=False, min_iou=0.8)
    pg.rollback()


def test_image_without_predictions_gives_no_buildings(pg):
    tiles = tiles_for(40, 40, 16, 4)
    assert deduplicate(pg, "empty", "img", tiles, UTM, SRID, width=40, height=40) == 0
    pg.rollback()


# ---------------------------------------------------------------- the partitioned buildings table


def partitions_of(conn, run, image):
    """The partitions of `buildings` whose bound is the batch of (run, image)."""
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'buildings'::regclass")
        rows = cur.fetchall()
        cur.execute("SELECT format('FOR VALUES IN (%%L)', buildings_batch(%s, %s))", (run, image))
        bound = cur.fetchone()[0]
    return sorted(name for name, b in rows if b == bound)


def index_layout(conn, table):
    """{index: the partitioned index it is attached to, or None} for the indexes of a table."""
    with conn.cursor() as cur:
        cur.execute("SELECT c.relname, p.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                    "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent "
                    "WHERE x.indrelid = %s::regclass", (table,))
        return dict(cur.fetchall())


def two_images(conn, run):
    """Predictions of two 64 x 48 images (buildings across tile borders) in `run`; their tiles."""
    tiles = tiles_for(64, 48, 24, 6)
    for image, boxes in (("img", [(3, 4, 30, 20), (40, 30, 60, 44)]), ("img2", [(10, 10, 50, 40)])):
        m = np.zeros((48, 64), np.uint8)
        for x0, y0, x1, y1 in boxes:
            m[y0:y1, x0:x1] = 255
        store_tile_predictions(conn, run, m[None], tiles, image=image, halo=2)
    return tiles


def test_rerun_replaces_the_partition_and_never_duplicates(pg):
    run = new_run()
    tiles = two_images(pg, run)
    kw = dict(width=64, height=48, halo_px=2)
    assert deduplicate(pg, run, "img", tiles, UTM, SRID, **kw) == 2
    assert deduplicate(pg, run, "img2", tiles, UTM, SRID, **kw) == 1
    pg.commit()
    first, other = fetch_buildings(pg, run), fetch_buildings(pg, run, "img2")
    names = partition_names(batch_key(pg, run, "img"))
    assert partitions_of(pg, run, "img") == [names[0]]
    # each partition carries the primary key and the three GiST indexes, attached to the parent's
    assert index_layout(pg, names[0]) == {f"{names[0]}_pkey": "buildings_pkey",
                                          f"{names[0]}_geom_gix": "buildings_geom_gix",
                                          f"{names[0]}_geom_pix_gix": "buildings_geom_pix_gix",
                                          f"{names[0]}_geom_4326_gix": "buildings_geom_4326_gix"}
    for attempt in range(3):  # reruns, committed: the partition alternates between two names
        assert deduplicate(pg, run, "img", tiles, UTM, SRID, **kw) == 2
        pg.commit()
        assert partitions_of(pg, run, "img") == [names[(attempt + 1) % 2]]
        assert sorted(index_layout(pg, names[(attempt + 1) % 2]).values()) == [
            "buildings_geom_4326_gix", "buildings_geom_gix", "buildings_geom_pix_gix", "buildings_pkey"]
        with pg.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (names[attempt % 2],))
            assert cur.fetchone()[0] is None  # the old partition is gone, not left detached
        again = fetch_buildings(pg, run)
        assert [(b[0], b[4].wkb, b[5].wkb) for b in again] == [(b[0], b[4].wkb, b[5].wkb) for b in first]
    assert fetch_buildings(pg, run, "img2") == other  # the other image's partition is untouched
    with pg.cursor() as cur:
        cur.execute("SELECT run, image, count(*) FROM buildings GROUP BY 1, 2 ORDER BY 2")
        assert cur.fetchall() == [(run, "img", 2), (run, "img2", 1)]
    # the predictions change (one building fewer): the rerun replaces the rows
    with pg.cursor() as cur:
        cur.execute("DELETE FROM predictions WHERE image = 'img' AND ST_XMin(geom_pix) >= 40")
    assert deduplicate(pg, run, "img", tiles, UTM, SRID, **kw) == 1
    pg.commit()
    assert len(fetch_buildings(pg, run)) == 1 and len(partitions_of(pg, run, "img")) == 1


def test_a_failed_rerun_keeps_the_previous_buildings(pg):
    run = new_run()
    tiles = two_images(pg, run)
    deduplicate(pg, run, "img", tiles, UTM, SRID, width=64, height=48, halo_px=2)
    pg.commit()
    before = fetch_buildings(pg, run)
    def fail(what, frac):
        if what == "indexing buildings":  # the new table is filled, the old partition still attached
            raise RuntimeError("interrupted")

    with pg.cursor() as cur:
        cur.execute("DELETE FROM predictions WHERE image = 'img'")
    with pytest.raises(RuntimeError, match="interrupted"):
        deduplicate(pg, run, "img", tiles, UTM, SRID, width=64, height=48, halo_px=2, progress=fail)
    pg.rollback()
    assert fetch_buildings(pg, run) == before
    assert partitions_of(pg, run, "img") == [partition_names(batch_key(pg, run, "img"))[0]]


def test_concurrent_reruns_of_two_images_do_not_deadlock(pg, pg_database):
    """Two DeduplicateBorders reruns, both past the fill when either replaces its partition:
    neither holds a lock on `buildings` before it drops its old partition, so both commit."""
    run = new_run()
    tiles = two_images(pg, run)
    kw = dict(width=64, height=48, halo_px=2)
    for image in ("img", "img2"):
        deduplicate(pg, run, image, tiles, UTM, SRID, **kw)
    pg.commit()
    barrier = threading.Barrier(2, timeout=60)
    errors, counts = [], {}

    def rerun(image):
        conn = db.connect()
        try:
            def progress(what, frac):
                if what == "indexing buildings":
                    barrier.wait()  # both filled, neither attached yet

            counts[image] = deduplicate(conn, run, image, tiles, UTM, SRID, progress=progress, **kw)
            conn.commit()
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)
            barrier.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=rerun, args=(i,)) for i in ("img", "img2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert counts == {"img": 2, "img2": 1}
    for image in ("img", "img2"):
        assert partitions_of(pg, run, image) == [partition_names(batch_key(pg, run, image))[1]]


def test_select_reads_only_the_partition_of_its_batch(pg):
    run = new_run()
    tiles = two_images(pg, run)
    for image in ("img", "img2"):
        deduplicate(pg, run, image, tiles, UTM, SRID, width=64, height=48, halo_px=2)
    with pg.cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + db.load_sql("buildings_select"), {"run": run, "image": "img2"})
        plan = json.dumps(cur.fetchone()[0])
    assert partition_names(batch_key(pg, run, "img2"))[0] in plan
    assert partition_names(batch_key(pg, run, "img"))[0] not in plan
    pg.rollback()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.text(st.sampled_from("ab|:1\\'\"é "), max_size=5),
                          st.text(st.sampled_from("ab|:1\\'\"é "), max_size=5)), min_size=2, max_size=6, unique=True))
def test_batch_keys_and_partition_names_are_one_to_one(pg, pairs):
    keys = [batch_key(pg, r, i) for r, i in pairs]
    assert len(set(keys)) == len(pairs)  # "a|b" + "c" and "a" + "b|c" are different batches
    names = [partition_names(k) for k in keys]
    assert len({n for pair in names for n in pair}) == 2 * len(pairs)
    for n0, n1 in names:
        assert n0.isascii() and n0.replace("_", "").isalnum() and len(n0) + len("_geom_4326_gix") <= 63
        assert n1 == n0[:-1] + "1"
    pg.rollback()


def _old_buildings(cur, rows):
    """The `buildings` table as the schema made it before the partitioning, with ``rows``
    ((run, image, building_id), ...)."""
    cur.execute("DROP TABLE buildings")
    cur.execute("""CREATE TABLE buildings (
        id bigserial PRIMARY KEY, run text NOT NULL, image text NOT NULL, building_id integer NOT NULL,
        score real NOT NULL, area_m2 double precision NOT NULL, srid integer NOT NULL,
        geom_pix geometry(Polygon, 0) NOT NULL, geom geometry(Polygon) NOT NULL CHECK (ST_SRID(geom) = srid),
        geom_4326 geometry(Polygon, 4326) NOT NULL, UNIQUE (run, image, building_id));
        CREATE INDEX buildings_geom_gix ON buildings USING gist (geom);
        CREATE INDEX buildings_geom_pix_gix ON buildings USING gist (geom_pix);
        CREATE INDEX buildings_geom_4326_gix ON buildings USING gist (geom_4326);""")
    cur.execute("INSERT INTO table_updates (update_id, target_table) VALUES ('dedup:r:i', 'buildings')")
    for run, image, bid in rows:
        cur.execute("INSERT INTO buildings (run, image, building_id, score, area_m2, srid, geom_pix, geom, geom_4326) "
                    "VALUES (%s, %s, %s, 0.9, 0.125, 32616, 'POLYGON((0 0,1 0,1 1,0 0))', "
                    "'SRID=32616;POLYGON((0 0,1 0,1 1,0 0))', 'SRID=4326;POLYGON((0 0,1 0,1 1,0 0))')",
                    (run, image, bid))


def _is_partitioned(cur):
    cur.execute("SELECT relkind FROM pg_class WHERE oid = 'buildings'::regclass")
    return cur.fetchone()[0] == "p"


def test_schema_is_idempotent_and_migrates_an_unpartitioned_buildings_table(pg):
    with pg.cursor() as cur:
        for _ in range(2):  # idempotent
            cur.execute(db.load_sql("schema"))
        assert _is_partitioned(cur)
        # an old, empty `buildings`: dropped and made again
        _old_buildings(cur, [])
        cur.execute(db.load_sql("schema"))
        assert _is_partitioned(cur)
        cur.execute("SELECT to_regclass('buildings_unpartitioned'), count(*) FROM table_updates")
        assert cur.fetchone() == (None, 1)
    pg.rollback()
    run = new_run()
    tiles = two_images(pg, run)
    with pg.cursor() as cur:
        # an old `buildings` with rows: moved into one partition per batch, markers kept
        _old_buildings(cur, [(run, "img", 1), (run, "img", 2), (run, "img", 3), ("r|x", "y", 1), ("r", "x|y", 1)])
        cur.execute(db.load_sql("schema"))
        cur.execute(db.load_sql("schema"))
        assert _is_partitioned(cur)
        cur.execute("SELECT to_regclass('buildings_unpartitioned'), count(*) FROM table_updates")
        assert cur.fetchone() == (None, 1)
        cur.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'unpartitioned%%'")
        assert cur.fetchone()[0] == 0
    assert partitions_of(pg, run, "img") == [partition_names(batch_key(pg, run, "img"))[0]]
    assert [b["building_id"] for b in read_buildings(pg, run, "img")] == [1, 2, 3]
    assert len(read_buildings(pg, "r|x", "y")) == len(read_buildings(pg, "r", "x|y")) == 1
    # and DeduplicateBorders replaces a migrated partition like its own
    assert deduplicate(pg, run, "img", tiles, UTM, SRID, width=64, height=48, halo_px=2) == 2
    assert [b["building_id"] for b in read_buildings(pg, run, "img")] == [1, 2]
    assert partitions_of(pg, run, "img") == [partition_names(batch_key(pg, run, "img"))[1]]
    pg.rollback()


# ---------------------------------------------------------------- pure helpers


def test_components_label_by_smallest_id():
    ids, labels = components([(5, 3), (3, 9), (20, 21), (9, 5), (40, 41), (41, 42)])
    got = dict(zip(ids.tolist(), labels.tolist()))
    assert got == {3: 3, 5: 3, 9: 3, 20: 20, 21: 20, 40: 40, 41: 40, 42: 40}
    ids, labels = components([])
    assert len(ids) == len(labels) == 0


def test_whole_components_only_where_one_complete_polygon_is_the_union():
    # (a, b, agree) links; pieces (piece_id, pred_id, complete, area, whole area)
    links = [(1, 2, True),                    # two predictions, 1's polygon complete, areas add up
             (3, 4, False),                   # the tiles only overlap enough: no
             (5, 6, True), (6, 7, True),      # three predictions: no
             (8, 9, True),                    # complete, but the pieces' areas fall short: no
             (10, 11, True),                  # neither complete: no
             (12, 13, True), (12, 14, True)]  # a U across the line: 13 and 14 are parts of one prediction
    pieces = [(1, 100, True, 2.0, 5.0), (2, 101, False, 3.0, 3.5),
              (3, 102, True, 2.0, 5.0), (4, 103, False, 3.0, 3.0),
              (5, 104, True, 1.0, 3.0), (6, 105, False, 1.0, 1.0), (7, 106, False, 1.0, 1.0),
              (8, 107, True, 2.0, 6.0), (9, 108, False, 3.0, 3.0),
              (10, 109, False, 2.0, 5.0), (11, 110, False, 3.0, 5.0),
              (14, 112, False, 1.0, 2.0), (13, 112, False, 1.0, 2.0), (12, 111, True, 2.0, 4.0)]
    pairs = [(a, b) for a, b, _ in links]
    ids, labels = components(pairs)
    got = dict(zip(ids.tolist(), whole_components(ids, labels, pairs, [g for _, _, g in links], pieces).tolist()))
    assert got == {1: 1, 2: 1, 3: -1, 4: -1, 5: -1, 6: -1, 7: -1, 8: -1, 9: -1, 10: -1, 11: -1,
                   12: 12, 13: 12, 14: 12}
    assert len(whole_components(*components([]), [], [], [])) == 0
    with pytest.raises(ValueError, match="missing"):
        whole_components(ids, labels, pairs, [g for _, _, g in links], pieces[1:])


def test_check_cores_reports_bad_tilings():
    good = tiles_for(50, 30, 16, 4)
    check_cores(good, 50, 30)
    gap = [dict(t) for t in good]
    gap[0]["core_width"] -= 1
    with pytest.raises(InputError, match="partition the image"):
        check_cores(gap, 50, 30, source="idx.json")
    overlap = [dict(t) for t in good]
    overlap[0]["core_width"] += 1  # into its right neighbour's core...
    last_of_row = max((t for t in overlap if t["row_off"] == 0), key=lambda t: t["col_off"])
    last_of_row["core_width"] -= 1  # ...and a gap of the same area at the right edge
    with pytest.raises(InputError, match=r"idx.json: core columns \[0, 14\) and \[0, 15\) overlap"):
        check_cores(overlap, 50, 30, source="idx.json")
    dup = [dict(t) for t in good] + [dict(good[0])]
    with pytest.raises(InputError, match="twice"):
        check_cores(dup, 50, 30)
    outside = [dict(t) for t in good]
    outside[0]["core_col_off"] = outside[0]["col_off"] + outside[0]["width"]
    with pytest.raises(InputError, match="not inside its window"):
        check_cores(outside, 50, 30)
    same_cell = [dict(t) for t in good]
    same_cell[1].update({k: good[0][k] for k in ("core_col_off", "core_row_off", "core_width", "core_height",
                                                    "col_off", "row_off")})
    with pytest.raises(InputError, match="overlap"):
        check_cores(same_cell, 50, 30)
    with pytest.raises(InputError, match="lacks core_height"):
        check_cores([{k: v for k, v in good[0].items() if k != "core_height"}], 50, 30)
