"""footprints/borders.py: DeduplicateBorders' rule without PostGIS gives the buildings that the
SQL (footprints/dedup.py) gives, on random probability fields, tilings, halos and thresholds."""
import csv
import io
from dataclasses import asdict

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from footprints import db
from footprints.borders import deduplicate_polygons
from footprints.dedup import deduplicate
from footprints.outputs import read_buildings
from footprints.polygonize import polygonize_probabilities, prediction_rows, read_window, tile_polygons
from footprints.tiling import tile_grid

UTM = Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)
SRID = 32616
CRS = "EPSG:32616"
_runs = iter(range(10 ** 9))


def tile_predictions(prob, tiles, halo, threshold=0.5, min_area_m2=0.0, three_class=False, n_classes=0):
    """Per tile, Polygonize's polygons: ``[(tile, [(pix, geo, score[, conf])])]``."""
    _, h, w = prob.shape
    out = []
    for t in tiles:
        c0, r0, ww, hh = win = read_window(t, halo, w, h)
        out.append((t, tile_polygons(prob[:, r0:r0 + hh, c0:c0 + ww], UTM, t, win, threshold=threshold,
                                     min_area_m2=min_area_m2, three_class=three_class, n_classes=n_classes)))
    return out


def via_postgis(conn, prob, tiles, halo, classes=(), **kw):
    run = f"b{next(_runs)}"
    _, h, w = prob.shape
    buf = io.StringIO()
    wr = csv.writer(buf)
    for t, polys in tile_predictions(prob, tiles, halo, kw.pop("threshold"), kw["min_area_m2"], kw.pop("three_class"),
                                     len(classes)):
        wr.writerows(prediction_rows(run, "img", t["tile_id"], SRID, polys, UTM))
    buf.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(db.load_sql("predictions_copy_classes" if classes else "predictions_copy"), buf)
    deduplicate(conn, run, "img", tiles, UTM, SRID, width=w, height=h, halo_px=halo, classes=classes, **kw)
    return read_buildings(conn, run, "img", classes)


def in_memory(prob, tiles, halo, classes=(), **kw):
    _, h, w = prob.shape
    preds = [(t["tile_id"], float(np.float32(p[2])), p[0])
             + ((tuple(float(np.float32(v)) for v in p[3]),) if len(p) > 3 else ())  # real, real[] columns
             for t, polys in tile_predictions(prob, tiles, halo, kw.pop("threshold"), kw["min_area_m2"],
                                              kw.pop("three_class"), len(classes))
             for p in polys]
    return deduplicate_polygons(tiles, preds, UTM, w, h, CRS, halo_px=halo, classes=classes, **kw)


def assert_same(got, ref):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):  # building_id order is the same: it follows the geometry
        assert g["building_id"] == r["building_id"]
        assert shapely.symmetric_difference(g["geom_pix"], r["geom_pix"]).area < 1e-6, (g["geom_pix"].wkt,
                                                                                        r["geom_pix"].wkt)
        assert g["score"] == pytest.approx(r["score"], abs=1e-6)
        assert g["area_m2"] == pytest.approx(r["area_m2"], rel=1e-9)
        assert shapely.symmetric_difference(g["geom"], r["geom"]).area < 1e-6
        assert shapely.hausdorff_distance(g["geom_4326"], r["geom_4326"]) < 1e-9
        assert g.get("class") == r.get("class")
        assert g.get("conf") == pytest.approx(r.get("conf"), abs=1e-6)


def field(seed, h, w, sigma, bands):
    """A smooth random probability field (uint8): blobs with necks, holes and touching parts."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.random((bands, h, w)), sigma=(0, sigma, sigma))
    f = (f - f.min()) / max(np.ptp(f), 1e-9)
    return np.round(f * 255).astype(np.uint8)


cases = st.tuples(
    st.integers(0, 10 ** 6),                                  # seed
    st.integers(8, 48).flatmap(lambda ts: st.tuples(st.just(ts), st.sampled_from(sorted({0, 2, ts // 4, ts // 2})))),
    st.sampled_from([0, 2, 8]),                               # halo
    st.sampled_from([0.45, 0.55, 0.6]),                       # threshold
    st.sampled_from([0.0, 3.0]),                              # min area, m²
    st.sampled_from([0.0, 1.0]),                              # simplify, px
    st.booleans(),                                            # three-class
    st.sampled_from([1.5, 3.0]),                              # smoothness
    st.sampled_from([(), (), ("house", "shed")]),             # building types
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases)
def test_in_memory_border_rule_equals_the_sql(pg, case):
    seed, (ts, ov), halo, threshold, min_area, simplify, three, sigma, classes = case
    prob = field(seed, 57, 71, sigma, max(len(classes), 1) + (2 if three else 0))
    tiles = [asdict(s) for s in tile_grid(71, 57, ts, ov)]
    kw = dict(threshold=threshold, min_area_m2=min_area, simplify_px=simplify, three_class=three, merge_overlap=0.5,
              min_shared_px=1.0, classes=classes)
    ref = via_postgis(pg, prob, tiles, halo, **dict(kw))
    got = in_memory(prob, tiles, halo, **dict(kw))
    assert_same(got, ref)
    pg.rollback()


def test_a_building_across_four_tiles_comes_out_once_and_whole():
    prob = np.zeros((1, 40, 40), np.uint8)
    prob[0, 12:28, 10:30] = 255
    tiles = [asdict(s) for s in tile_grid(40, 40, 24, 4)]
    got = in_memory(prob, tiles, 0, threshold=0.5, min_area_m2=0.0, simplify_px=0.0, three_class=False)
    assert len(got) == 1
    assert shapely.symmetric_difference(got[0]["geom_pix"], shapely.box(10, 12, 30, 28)).area == 0
    assert got[0]["area_m2"] == pytest.approx(20 * 16 * 0.25)
    whole = polygonize_probabilities(prob, UTM)
    assert len(whole) == 1 and got[0]["geom"].equals(whole[0][1])
    lon, lat = got[0]["geom_4326"].centroid.coords[0]
    assert -85 < lon < -84 and 33 < lat < 34


def test_no_predictions_no_buildings():
    tiles = [asdict(s) for s in tile_grid(40, 40, 24, 4)]
    assert deduplicate_polygons(tiles, [], UTM, 40, 40, CRS) == []
