"""footprints/demo: writing a scene (GeoTIFF, RFC 7946 GeoJSON) atomically and reproducibly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import shape
from shapely.geometry.polygon import orient

from footprints.demo import buildings_to_geojson, generate_scene, scene_origin, touching_pairs, write_geotiff, write_scene

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
        write_geotiff(np.zeros((1, 8, 8), np.uint8), rasterio.Affine.identity(), "EPSG:32737",
                      tmp_path / "bad.tif")
    assert not list(tmp_path.iterdir())
