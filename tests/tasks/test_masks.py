"""tasks/masks.py: MakeMasks against solaris' reference masks, through PostGIS (the mask
functions are tested in tests/footprints/test_masks.py)."""
import json
from pathlib import Path

import luigi
import numpy as np
import rasterio
from affine import Affine

from footprints.errors import InputError
from tasks.labels import LoadLabels
from tasks.masks import MakeMasks


def _use_fixture_chip(luigi_config, fixtures_dir, tile_size, overlap=0, kind="footprint"):
    luigi_config("data", "images", str(fixtures_dir / "imagery" / "sample_geotiff.tif"))
    luigi_config("data", "labels", str(fixtures_dir / "imagery" / "geotiff_labels.geojson"))
    luigi_config("tiling", "tile_size", tile_size)
    luigi_config("tiling", "overlap", overlap)
    luigi_config("masks", "kind", kind)


def test_whole_chip_mask_equals_solaris_reference(pg, workdir, luigi_config, fixtures_dir):
    _use_fixture_chip(luigi_config, fixtures_dir, tile_size=900)
    task = MakeMasks(image="sample_geotiff")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    index = json.loads(Path(task.output().path).read_text())
    (tile,) = index["tiles"]
    with rasterio.open(Path(task.output().path).parent / tile["path"]) as m:
        mask = m.read(1)
        assert m.crs.to_epsg() == 32616
    with rasterio.open(fixtures_dir / "masks" / "sample_fp_mask_from_geojson.tif") as ref:
        expected = ref.read(1)
    assert int((mask == 255).sum()) == 33818
    np.testing.assert_array_equal(mask, expected)


def test_tile_label_counts_match_solaris_vector_tiles(pg, workdir, luigi_config, fixtures_dir):
    _use_fixture_chip(luigi_config, fixtures_dir, tile_size=90)
    task = MakeMasks(image="sample_geotiff")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    index = json.loads(Path(task.output().path).read_text())
    expected = json.loads((fixtures_dir / "EXPECTED.json").read_text())["tiling/vectortile_test_expected"]["per_tile"]
    tiles = json.loads((workdir / "tiles" / "sample_geotiff" / "ts90_ov0" / "index.json").read_text())["tiles"]
    assert len(index["tiles"]) == 100
    whole = np.zeros((900, 900), np.uint8)
    for t, m in zip(tiles, index["tiles"]):
        tr = Affine(*t["transform"])
        left, top = tr.c, tr.f
        assert m["n_labels"] == expected[f"geoms_{int(left)}_{int(top)}.geojson"]["n"], t["tile_id"]
        with rasterio.open(Path(task.output().path).parent / m["path"]) as mm:
            whole[t["row_off"]:t["row_off"] + 90, t["col_off"]:t["col_off"] + 90] = mm.read(1)
    # tiles rasterized with their own transforms add up to the reference mask
    with rasterio.open(fixtures_dir / "masks" / "sample_fp_mask_from_geojson.tif") as ref:
        np.testing.assert_array_equal(whole, ref.read(1))


def test_labels_outside_every_raster_warn_not_fail(pg, workdir, luigi_config, fixtures_dir, tmp_path, caplog):
    far = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[10, 10], [10.001, 10], [10.001, 10.001], [10, 10.001], [10, 10]]]}}]}
    lp = tmp_path / "elsewhere.geojson"
    lp.write_text(json.dumps(far))
    luigi_config("data", "images", str(fixtures_dir / "imagery" / "sample_geotiff.tif"))
    luigi_config("data", "labels", str(lp))
    luigi_config("tiling", "tile_size", 450)
    luigi_config("tiling", "overlap", 0)
    task = MakeMasks(image="sample_geotiff")
    with caplog.at_level("WARNING", logger="luigi-interface"):
        assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    assert any("none of its 1 labels" in r.getMessage() and "masks are empty" in r.getMessage()
               for r in caplog.records)
    index = json.loads(Path(task.output().path).read_text())
    assert index["labels_in_image"] == 0 and all(t["building_px"] == 0 for t in index["tiles"])


def test_own_labels_entirely_outside_the_raster_fail_that_image_only(pg, workdir, luigi_config, tmp_path):
    """An image's own label file (matched by name) whose labels all lie elsewhere is an error naming
    the file (a wrong CRS, or another scene's labels); the other images go through. File names with
    quotes, unicode and SQL in them are ordinary names."""
    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    odd = "it's ü; DROP TABLE labels;--"
    for name in (odd, "far"):
        with rasterio.open(img / f"{name}.tif", "w", driver="GTiff", width=40, height=40, count=3, dtype="uint8",
                           crs="EPSG:32616", transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
            dst.write(np.full((3, 40, 40), 9, np.uint8))

    def fc(x0, y0):
        ring = [[x0, y0], [x0 + 5, y0], [x0 + 5, y0 + 5], [x0, y0 + 5], [x0, y0]]
        return json.dumps({"type": "FeatureCollection",
                           "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32616"}},
                           "features": [{"type": "Feature", "properties": {},
                                         "geometry": {"type": "Polygon", "coordinates": [ring]}}]})

    (lab / f"{odd}.geojson").write_text(fc(500005, 3999985))
    (lab / "far.geojson").write_text(fc(600000, 3999985))  # 100 km east
    luigi_config("data", "images", str(img))
    luigi_config("data", "labels", str(lab))
    luigi_config("tiling", "tile_size", 32)
    luigi_config("tiling", "overlap", 8)
    errors = {}

    def record(task, exc):
        errors[task.task_id] = exc

    luigi.Task.event_handler(luigi.Event.FAILURE)(record)
    try:
        ok, far = MakeMasks(image=odd), MakeMasks(image="far")
        assert not luigi.build([ok, far], local_scheduler=True, log_level="CRITICAL")
    finally:
        luigi.Task._event_callbacks[luigi.Task][luigi.Event.FAILURE].discard(record)
    assert ok.complete() and json.loads(Path(ok.output().path).read_text())["labels_in_image"] == 1
    assert LoadLabels(path=str(lab / "far.geojson")).complete(), "the far labels loaded; only the masks fail"
    (e,) = errors.values()
    assert isinstance(e, InputError) and "\n" not in str(e)
    assert str(e).startswith(f"{lab / 'far.geojson'}: none of its 1 labels") and "inside image far" in str(e)
    with pg.cursor() as cur:
        cur.execute("SELECT source, count(*) FROM labels GROUP BY source ORDER BY source")
        assert cur.fetchall() == [("far", 1), (odd, 1)]
