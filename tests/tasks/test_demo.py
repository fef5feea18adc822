"""Tests of the generated demo dataset (tasks/demo.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import luigi
import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.features import rasterize
from shapely.geometry import shape
from shapely.geometry.polygon import orient

from tasks import demo
from tasks.demo import (
    GenerateDemo,
    buildings_to_geojson,
    demo_dir,
    demo_image_path,
    demo_label_path,
    demo_scene_names,
    generate_scene,
    scene_origin,
    scene_seed,
    touching_pairs,
    write_scene,
)

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- helpers


def to_pixel(transform, x, y):
    """(col, row) of a point, for a north-up transform."""
    return (x - transform.c) / transform.a, (y - transform.f) / transform.e


def pixel_mask(image, transform, buildings):
    return rasterize([(p, 1) for p in buildings], out_shape=image.shape[1:], transform=transform,
                     dtype="uint8").astype(bool)


def best_single_threshold_iou(image, mask) -> float:
    """Best pixel IoU of ``band >= t`` or ``band < t`` over every band (and the grey mean) and t."""
    best = 0.0
    n_pos = int(mask.sum())
    for band in list(image) + [image.mean(axis=0).astype(np.uint8)]:
        hb = np.bincount(band[mask], minlength=256).astype(float)
        hg = np.bincount(band[~mask], minlength=256).astype(float)
        for tp, fp in ((hb[::-1].cumsum()[::-1], hg[::-1].cumsum()[::-1]), (hb.cumsum(), hg.cumsum())):
            best = max(best, float((tp / (n_pos + fp)).max()))
    return best


def assert_layout_invariants(image, transform, buildings, size):
    assert image.dtype == np.uint8 and image.shape == (3, size, size)
    x0, y0 = transform.c, transform.f
    x1, y1 = x0 + size * transform.a, y0 + size * transform.e
    for p in buildings:
        assert p.is_valid and p.geom_type == "Polygon"
        minx, miny, maxx, maxy = p.bounds
        assert x0 <= minx and maxx <= x1 and y1 <= miny and maxy <= y0, "building leaves the raster"
        assert p.area >= 25.0
    # no overlaps: every intersecting pair only shares a wall
    tree = shapely.STRtree(buildings)
    for i, j in zip(*tree.query(buildings, predicate="intersects")):
        if i < j:
            assert buildings[i].intersection(buildings[j]).area < 1e-6
    # non-touching buildings keep a gap of at least ~1.5 m
    touching = set(touching_pairs(buildings))
    for i, j in zip(*tree.query(buildings, predicate="dwithin", distance=1.4)):
        if i < j:
            assert (int(i), int(j)) in touching


# ----------------------------------------------------------------------------- one default scene


@pytest.fixture(scope="module")
def scene():
    return generate_scene(scene_seed(42, 0), origin=scene_origin(0))


def test_default_scene_geometry(scene):
    image, transform, crs, buildings = scene
    assert crs == "EPSG:32737"
    assert image.shape == (3, 1024, 1024) and image.dtype == np.uint8
    assert transform.a == 0.5 and transform.e == -0.5 and transform.b == 0 and transform.d == 0
    assert (transform.c, transform.f) == scene_origin(0)
    # near Dar es Salaam
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(transform.c, transform.f)
    assert 38.9 < lon < 39.6 and -7.3 < lat < -6.4
    assert len(buildings) >= 100
    assert_layout_invariants(image, transform, buildings, 1024)


def test_default_scene_touching_pairs(scene):
    _, _, _, buildings = scene
    pairs = touching_pairs(buildings)
    assert len(pairs) >= 5
    for i, j in pairs:  # a shared wall, not a corner
        shared = buildings[i].boundary.intersection(buildings[j].boundary)
        assert shared.length > 3.0
        assert buildings[i].intersection(buildings[j]).area < 1e-6


def test_default_scene_variety(scene):
    image, transform, _, buildings = scene
    corners = [len(shapely.simplify(p, 0.0).exterior.coords) - 1 for p in buildings]
    assert corners.count(4) >= 30  # rectangles
    assert corners.count(6) >= 5  # L-shapes
    assert sum(c >= 8 for c in corners) >= 2  # T and U shapes
    rects = [p.minimum_rotated_rectangle for p in buildings]
    sides = []
    angles = []
    for r in rects:
        c = np.asarray(r.exterior.coords)
        e = np.diff(c[:3], axis=0)
        sides.extend(np.hypot(e[:, 0], e[:, 1]))
        angles.append(np.degrees(np.arctan2(e[0, 1], e[0, 0])) % 90)
    assert min(sides) < 9 and max(sides) > 25
    assert len(np.unique(np.floor(np.asarray(angles) / 10))) >= 7  # orientations spread over 0..90 degrees
    # roof tones: median colour inside each building
    lums, reddish = [], 0
    for p in buildings:
        c = p.representative_point()
        col, row = to_pixel(transform, c.x, c.y)
        rgb = image[:, int(row), int(col)].astype(float)
        lums.append(rgb.mean())
        reddish += rgb[0] > rgb[2] + 40
    assert max(lums) - min(lums) > 100
    assert np.std(lums) > 25
    assert reddish >= 5


def test_buildings_straddle_tile_borders(scene):
    _, transform, _, buildings = scene
    for tile in (256, 384, 512):
        crossing = 0
        for p in buildings:
            minc, maxr = to_pixel(transform, p.bounds[0], p.bounds[1])
            maxc, minr = to_pixel(transform, p.bounds[2], p.bounds[3])
            if np.floor(minc / tile) != np.floor(maxc / tile) or np.floor(minr / tile) != np.floor(maxr / tile):
                crossing += 1
        assert crossing >= 3, f"only {crossing} buildings cross {tile}-px tile borders"


def test_single_band_threshold_cannot_segment(scene):
    image, transform, _, buildings = scene
    mask = pixel_mask(image, transform, buildings)
    assert 0.03 < mask.mean() < 0.3
    iou = best_single_threshold_iou(image, mask)
    assert iou < 0.6, iou
    # the check itself works: a scene painted from the mask is separated perfectly
    painted = np.where(mask, 200, 100).astype(np.uint8)[None].repeat(3, 0)
    assert best_single_threshold_iou(painted, mask) == 1.0


# ----------------------------------------------------------------------------- small scenes


def test_same_seed_same_scene_and_different_seed_differs():
    a = generate_scene(5, size=128, n_buildings=4)
    b = generate_scene(5, size=128, n_buildings=4)
    c = generate_scene(6, size=128, n_buildings=4)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert [p.wkb for p in a[3]] == [p.wkb for p in b[3]]
    assert not np.array_equal(a[0], c[0])
    assert [p.wkb for p in a[3]] != [p.wkb for p in c[3]]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="size"):
        generate_scene(1, size=8)
    with pytest.raises(ValueError, match="count"):
        demo_scene_names(0)


def test_names_seeds_and_origins():
    assert demo_scene_names(4) == ["demo_00", "demo_01", "demo_02", "demo_03"]
    assert len({scene_seed(42, i) for i in range(8)}) == 8
    assert scene_seed(42, 1) == scene_seed(42, 1) != scene_seed(43, 1)
    boxes = [shapely.box(x, y - 512, x + 512, y) for x, y in (scene_origin(i, 1024, 0.5) for i in range(9))]
    assert not any(boxes[i].intersects(boxes[j]) for i in range(9) for j in range(i + 1, 9))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([96, 128, 160]), n=st.integers(1, 6))
def test_layout_invariants_hold_for_any_seed(seed, size, n):
    image, transform, _, buildings = generate_scene(seed, size=size, n_buildings=n, origin=(500000.0, 9300000.0))
    assert 1 <= len(buildings) <= n
    assert_layout_invariants(image, transform, buildings, size)


# ----------------------------------------------------------------------------- writers


def test_write_scene_geotiff_and_rfc7946(tmp_path):
    image, transform, crs, buildings = generate_scene(11, size=128, n_buildings=6, origin=scene_origin(1, 128))
    img_path, lab_path = tmp_path / "images" / "s.tif", tmp_path / "labels" / "s.geojson"
    write_scene(image, transform, crs, buildings, img_path, lab_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["images", "labels", "s.geojson", "s.tif"]
    with rasterio.open(img_path) as src:
        assert src.count == 3 and src.dtypes == ("uint8",) * 3
        assert src.crs.to_epsg() == 32737
        assert src.transform == transform
        assert src.compression.name.lower() == "deflate"
        assert src.profile["tiled"] and src.block_shapes == [(256, 256)] * 3
        assert src.colorinterp[0].name == "red"
        assert np.array_equal(src.read(), image)
    fc = json.loads(lab_path.read_text())
    assert fc["type"] == "FeatureCollection" and "crs" not in fc
    assert len(fc["features"]) == len(buildings)
    back = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    for k, (f, orig) in enumerate(zip(fc["features"], buildings), start=1):
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        assert f["properties"]["id"] == k and f["properties"]["building"] == "yes"
        assert f["properties"]["area_m2"] == pytest.approx(orig.area, rel=1e-12)
        ring = np.asarray(f["geometry"]["coordinates"][0])
        assert np.all((38.0 < ring[:, 0]) & (ring[:, 0] < 40.5)), "lon first"
        assert np.all((-8.0 < ring[:, 1]) & (ring[:, 1] < -6.0)), "lat second"
        g = shape(f["geometry"])
        assert g.is_valid and g.exterior.is_ccw  # right-hand rule
        x, y = back.transform(ring[:, 0], ring[:, 1])
        expect = np.asarray(orient(orig, sign=1.0).exterior.coords)
        assert np.abs(np.column_stack([x, y]) - expect).max() < 1e-6  # round-trips within a micrometre
    assert not list(tmp_path.rglob(".*tmp*"))


def test_geojson_keeps_touching_walls_exact():
    image, transform, crs, buildings = generate_scene(3, size=256, n_buildings=12)
    pairs = touching_pairs(buildings)
    assert pairs
    geo = [shape(f["geometry"]) for f in buildings_to_geojson(buildings, crs)["features"]]
    for i, j in pairs:
        assert geo[i].intersects(geo[j])
        assert geo[i].intersection(geo[j]).area < 1e-15  # degrees squared: no overlap


def test_written_bytes_are_deterministic(tmp_path):
    for d in ("a", "b"):
        image, transform, crs, buildings = generate_scene(9, size=96, n_buildings=3)
        write_scene(image, transform, crs, buildings, tmp_path / d / "x.tif", tmp_path / d / "x.geojson")
    for name in ("x.tif", "x.geojson"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_write_rejects_bad_image(tmp_path):
    with pytest.raises(ValueError, match="bad.tif"):
        demo.write_geotiff(np.zeros((1, 8, 8), np.uint8), rasterio.Affine.identity(), "EPSG:32737",
                           tmp_path / "bad.tif")
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- the Luigi task


DEMO_CFG = {"demo_scenes": "2", "demo_size": "96", "demo_seed": "7"}


@pytest.fixture
def demo_config(monkeypatch, tmp_path):
    monkeypatch.setenv("FOOTPRINTS_WORKDIR", str(tmp_path / "work"))
    cfg = luigi.configuration.get_config()
    if not cfg.has_section("data"):
        cfg.add_section("data")
    saved = {k: cfg.get("data", k, None) for k in DEMO_CFG}
    for k, v in DEMO_CFG.items():
        cfg.set("data", k, v)
    yield tmp_path / "work"
    for k, v in saved.items():
        if v is None:
            cfg.remove_option("data", k)
        else:
            cfg.set("data", k, v)


def test_generate_demo_task(demo_config):
    assert demo_dir() == demo_config / "demo" / "n2_s96_seed7"
    assert luigi.build([GenerateDemo()], local_scheduler=True, log_level="WARNING")
    manifest = json.loads((demo_dir() / "manifest.json").read_text())
    assert GenerateDemo().complete()
    assert [s["name"] for s in manifest["scenes"]] == ["demo_00", "demo_01"]
    for s in manifest["scenes"]:
        assert demo_image_path(s["name"]) == demo_dir() / s["image"]
        assert demo_label_path(s["name"]) == demo_dir() / s["labels"]
        with rasterio.open(demo_image_path(s["name"])) as src:
            assert (src.width, src.height, src.count) == (96, 96, 3)
            assert tuple(src.transform)[:6] == tuple(s["transform"])
        fc = json.loads(demo_label_path(s["name"]).read_text())
        assert len(fc["features"]) == s["n_buildings"] >= 1
    assert manifest["scenes"][0]["origin"] != manifest["scenes"][1]["origin"]
    assert sorted(p.name for p in (demo_config / "demo").iterdir()) == ["n2_s96_seed7"]
    # a rerun changes nothing
    before = {p: p.stat().st_mtime_ns for p in demo_dir().rglob("*")}
    assert luigi.build([GenerateDemo()], local_scheduler=True, log_level="WARNING")
    assert {p: p.stat().st_mtime_ns for p in demo_dir().rglob("*")} == before


def test_generate_demo_failure_leaves_nothing(demo_config, monkeypatch):
    calls = []
    real = demo.generate_scene

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(demo, "generate_scene", flaky)
    stale = demo_config / "demo" / ".n2_s96_seed7.tmp-999999999-abc"
    stale.mkdir(parents=True)
    assert not luigi.build([GenerateDemo()], local_scheduler=True, log_level="CRITICAL")
    assert len(calls) == 2
    assert not demo_dir().exists()
    assert list((demo_config / "demo").iterdir()) == []  # stale temp dir of a dead process removed too


def _luigi_cmd(workdir: Path, scenes: int, size: int):
    code = ("import luigi, sys; from tasks.demo import GenerateDemo; "
            "sys.exit(0 if luigi.build([GenerateDemo()], local_scheduler=True, log_level='WARNING') else 1)")
    env = {**os.environ, "FOOTPRINTS_WORKDIR": str(workdir), "PYTHONPATH": str(REPO)}
    env["LUIGI_CONFIG_PATH"] = str(workdir.parent / f"{workdir.name}.cfg")
    workdir.parent.mkdir(parents=True, exist_ok=True)
    Path(env["LUIGI_CONFIG_PATH"]).write_text(
        f"[data]\ndemo_scenes = {scenes}\ndemo_size = {size}\ndemo_seed = 3\n")
    return [sys.executable, "-c", code], env


def test_kill_9_then_rerun_equals_clean_run(tmp_path):
    scenes, size = 6, 256
    cmd, env = _luigi_cmd(tmp_path / "killed", scenes, size)
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True)
    parent = tmp_path / "killed" / "demo"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if list(parent.glob(".n6_s256_seed3.tmp-*/images/demo_00.tif")):
                break
            assert proc.poll() is None, "generation finished before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    final = parent / "n6_s256_seed3"
    assert not final.exists()  # nothing half-written in place
    assert subprocess.run(cmd, env=env, cwd=REPO).returncode == 0
    clean_cmd, clean_env = _luigi_cmd(tmp_path / "clean", scenes, size)
    assert subprocess.run(clean_cmd, env=clean_env, cwd=REPO).returncode == 0
    clean = tmp_path / "clean" / "demo" / "n6_s256_seed3"
    files = sorted(p.relative_to(clean) for p in clean.rglob("*") if p.is_file())
    assert sorted(p.relative_to(final) for p in final.rglob("*") if p.is_file()) == files
    assert len(files) == 2 * scenes + 1
    for rel in files:
        assert (final / rel).read_bytes() == (clean / rel).read_bytes(), rel
    assert [p.name for p in parent.iterdir()] == ["n6_s256_seed3"]  # the killed run's temp dir is gone
