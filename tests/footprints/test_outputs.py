"""The output writers: SpaceNet CSV, RFC 7946 GeoJSON, GeoPackage, overlay (no database)."""
import io
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.crs import CRS

from footprints.geo import pixel_to_geo
from footprints.geojson import write_features
from footprints.names import image_id
from footprints.outputs import (
    FN_COLOR,
    FP_COLOR,
    TP_COLOR,
    draw_overlay,
    feature_collection,
    match_buildings,
    spacenet_rows,
    stretch_to_uint8,
    write_geopackage,
    write_spacenet_csv,
)


@pytest.fixture(scope="module")
def georef():
    """Transform and CRS of the real SpaceNet 4 fixture chip (Atlanta, EPSG:32616, 0.5 m)."""
    path = Path(__file__).parents[2] / ".." / "shared" / "fixtures" / "spacenet" / "imagery" / "sample_geotiff.tif"
    with rasterio.open(path) as src:
        return src.transform, src.crs


def make_buildings(pix_polys, transform, crs, scores=None):
    tr = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    out = []
    for i, p in enumerate(pix_polys):
        geo = pixel_to_geo(p, transform)
        g4326 = shapely.transform(geo, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        out.append({"building_id": i + 1, "score": 0.9 if scores is None else scores[i],
                    "area_m2": geo.area, "geom_pix": p, "geom": geo, "geom_4326": g4326})
    return out


def courtyard():
    return shapely.Polygon([(40, 40), (70, 40), (70, 70), (40, 70)], [[(50, 50), (60, 50), (60, 60), (50, 60)]])


# ---------------------------------------------------------------- pure writers


def test_image_id_is_the_spacenet_id():
    assert image_id("RGB-PanSharpen_AOI_2_Vegas_img1234") == "AOI_2_Vegas_img1234"
    assert image_id("AOI_5_Khartoum_img3") == "AOI_5_Khartoum_img3"
    assert image_id("demo_scene_0") == "demo_scene_0"


def test_spacenet_csv_parses_with_pandas_and_shapely(georef):
    t, crs = georef
    polys = [shapely.box(10, 10, 20.5, 30.25), courtyard()]
    rows = spacenet_rows("AOI_9_Atl_img1", make_buildings(polys, t, crs, [0.75, 0.5]))
    rows += spacenet_rows("AOI_9_Atl_img2", [])
    buf = io.StringIO()
    write_spacenet_csv(buf, rows)
    df = pd.read_csv(io.StringIO(buf.getvalue()))
    assert list(df.columns) == ["ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo", "Confidence"]
    assert len(df) == 3
    pix = shapely.from_wkt(df["PolygonWKT_Pix"].to_numpy())
    geo = shapely.from_wkt(df["PolygonWKT_Geo"].to_numpy())
    assert shapely.equals(pix[0], polys[0]) and shapely.equals(pix[1], polys[1])
    assert len(pix[1].interiors) == 1
    assert shapely.is_empty(pix[2]) and shapely.is_empty(geo[2])
    assert df["BuildingId"].tolist() == [1, 2, -1]
    assert df["Confidence"].tolist()[:2] == [0.75, 0.5]
    # PolygonWKT_Geo is lon/lat with full precision (SpaceNet's own CSVs carry ~1e-9 deg)
    assert -84.5 < geo[0].centroid.x < -84.3 and 33.6 < geo[0].centroid.y < 33.7
    g = make_buildings(polys, t, crs)[0]["geom_4326"]
    assert shapely.hausdorff_distance(geo[0], g) < 1e-12


def test_geojson_is_rfc7946_and_opens_as_epsg4326(tmp_path, georef):
    t, crs = georef
    polys = [shapely.box(10, 10, 20, 30), courtyard(), shapely.Polygon([(100, 5), (130, 5), (130, 20), (115, 28)])]
    fc = feature_collection("AOI_9_Atl_img1", make_buildings(polys, t, crs))
    assert fc["type"] == "FeatureCollection" and "crs" not in fc
    for feat in fc["features"]:
        assert feat["type"] == "Feature"
        assert set(feat["properties"]) >= {"id", "confidence", "area_m2"}
        g = shapely.geometry.shape(feat["geometry"])
        assert g.is_valid and g.geom_type == "Polygon"
        x0, y0, x1, y1 = g.bounds
        assert -180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90
        assert x0 < -80 and y0 > 30  # lon first, then lat
        assert g.exterior.is_ccw, "exterior rings counter-clockwise (right-hand rule)"
        assert all(not r.is_ccw for r in g.interiors), "holes clockwise"
    path = tmp_path / "b.geojson"
    with open(path, "w") as f:
        write_features(f, fc["features"])
    assert json.loads(path.read_text())["features"] == json.loads(json.dumps(fc["features"]))
    gdf = gpd.read_file(path)
    assert gdf.crs.to_epsg() == 4326
    assert len(gdf) == 3 and gdf.is_valid.all()
    assert sorted(gdf["id"]) == [1, 2, 3]
    # area_m2 is measured in the image CRS, not in degrees
    assert gdf.loc[gdf["id"] == 1, "area_m2"].iloc[0] == pytest.approx(200 * 0.25)


def test_geojson_refuses_coordinates_that_are_not_lon_lat(georef):
    t, crs = georef
    b = make_buildings([shapely.box(1, 1, 5, 5)], t, crs)
    b[0]["geom_4326"] = b[0]["geom"]  # UTM metres where degrees belong
    with pytest.raises(ValueError, match="lon/lat"):
        feature_collection("x", b)


def test_geopackage_in_the_image_crs(tmp_path, georef):
    t, crs = georef
    polys = [shapely.box(10, 10, 20, 30), courtyard()]
    b = make_buildings(polys, t, crs)
    path = tmp_path / "b.gpkg"
    write_geopackage(path, "img", b, crs.to_wkt())
    gdf = gpd.read_file(path, layer="buildings")
    assert gdf.crs.to_epsg() == 32616
    assert len(gdf) == 2
    assert shapely.equals(gdf.geometry.iloc[1], b[1]["geom"])
    empty = tmp_path / "empty.gpkg"
    write_geopackage(empty, "img", [], crs.to_wkt())
    assert len(gpd.read_file(empty)) == 0


def test_match_buildings_is_the_spacenet_rule():
    truth = [shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10), shapely.box(40, 0, 50, 10)]
    props = [shapely.box(1, 0, 11, 10),    # IoU 0.82: TP
             shapely.box(20, 0, 25, 10),   # IoU 0.5, not > 0.5: FP
             shapely.box(60, 0, 70, 10),   # nothing: FP
             shapely.box(0, 0, 10, 9)]     # second proposal for truth 0, lower confidence: FP
    tp, missed = match_buildings(truth, props, [0.9, 0.8, 0.7, 0.1])
    assert tp.tolist() == [True, False, False, False]
    assert missed.tolist() == [False, True, True]
    tp, missed = match_buildings(truth, [], [])
    assert len(tp) == 0 and missed.all()


def test_stretch_to_uint8():
    a = np.linspace(1000, 3000, 64 * 64).reshape(1, 64, 64).astype(np.uint16)
    rgb = stretch_to_uint8(a)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all()  # one band: grey
    assert rgb.min() == 0 and rgb.max() == 255
    three = stretch_to_uint8(np.stack([a[0], a[0] // 2, np.zeros_like(a[0])]), nodata=None)
    assert three.shape == (64, 64, 3)


def test_overlay_colours():
    base = np.full((60, 80, 3), 100, np.uint8)
    tp, fp, fn = shapely.box(5, 5, 25, 25), shapely.box(40, 5, 60, 25), shapely.box(10, 35, 30, 55)
    out = draw_overlay(base, [(FN_COLOR, [fn]), (FP_COLOR, [fp]), (TP_COLOR, [tp])], fill_alpha=0.3)
    assert tuple(out[5, 10]) == TP_COLOR       # outlines in full colour
    assert tuple(out[5, 50]) == FP_COLOR
    assert tuple(out[45, 10]) == FN_COLOR
    inside = out[15, 15].astype(int)
    assert inside[1] > inside[0] and inside[1] > inside[2]  # translucent green fill
    assert tuple(out[58, 78]) == (100, 100, 100)  # untouched elsewhere
    half = draw_overlay(base[::2, ::2], [(TP_COLOR, [tp])], scale=(0.5, 0.5))
    assert tuple(half[2, 5]) == TP_COLOR  # image pixel (10, 5) -> overlay pixel (5, 2)


# ---------------------------------------------------------------- the tasks
