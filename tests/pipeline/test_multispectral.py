"""8-band imagery through the whole DAG: the 8-band demo (oracle F1 = 1.0; a tiny U-Net trained,
tuned and applied end to end) and SpaceNet-2 directory layouts as they come (MUL-PanSharpen /
RGB-PanSharpen, labels matched by AOI_..._imgN, empty label files for chips without buildings)."""
import json
from pathlib import Path

import luigi
import numpy as np
import pytest
import rasterio

import models
from footprints.demo import buildings_to_geojson, generate_scene, scene_origin, write_geotiff
from footprints.demo.spectral import to_worldview
from footprints.errors import InputError
from pipeline import RunAll
from tasks.sources import label_path, list_images
from tasks.train import TrainModel

SMALL = [("data", "demo_scenes", 3), ("data", "demo_size", 256), ("tiling", "tile_size", 128),
         ("tiling", "overlap", 32)]


def _metrics(workdir):
    (metrics,) = (workdir / "outputs").rglob("metrics.json")
    return json.loads(metrics.read_text()), metrics.parent


def test_oracle_f1_is_one_on_the_8_band_demo(pg, workdir, luigi_config):
    for s, o, v in SMALL + [("data", "demo_bands", 8), ("model", "name", "oracle")]:
        luigi_config(s, o, v)
    assert luigi.build([RunAll()], local_scheduler=True, log_level="WARNING")
    (tif,) = (workdir / "demo").rglob("demo_00.tif")
    with rasterio.open(tif) as src:
        assert (src.count, src.dtypes[0]) == (8, "uint16") and 1000 < src.read(7).max() <= 2047
    m, out = _metrics(workdir)
    total = m["splits"]["all"]
    assert total["tp"] >= 20 and total["fp"] == 0 and total["fn"] == 0 and total["f1"] == 1.0, total
    assert (out / "images" / "demo_00_overlay.png").stat().st_size > 0


def test_a_unet_trains_tunes_and_predicts_on_the_8_band_demo(pg, workdir, luigi_config):
    for s, o, v in SMALL + [("data", "demo_bands", 8)]:
        luigi_config(s, o, v)
    for k, v in dict(depth=2, base_filters=4, epochs=1, batch_size=2, crop_size=64, samples_per_epoch=4,
                     workers=1, patience=0).items():
        luigi_config("train", k, v)
    assert luigi.build([RunAll()], local_scheduler=True, log_level="WARNING")
    model_path = Path(TrainModel().output().path)
    info = models.model_info(models.load_model(model_path))
    assert info["arch"]["input_bands"] == 8 and info["data"]["dtype"] == "uint16"
    assert len(info["mean"]) == len(info["std"]) == 8 and min(info["mean"]) > 255  # per-band, on the 11-bit DNs
    tuning = json.loads((model_path.parent / "tuning.json").read_text())
    assert tuning["val_images"] == ["demo_01"] and len(tuning["results"]) == 44
    m, out = _metrics(workdir)
    assert m["min_area_m2"] == tuning["min_area_m2"]  # Evaluate applies the tuned minimum area
    assert (out / "images" / "demo_02_overlay.png").stat().st_size > 0


def _spacenet2_tree(root: Path, product: str) -> Path:
    """``AOI_2_Vegas_Train/<product>/<product>_AOI_2_Vegas_img<k>.tif`` and
    ``AOI_2_Vegas_Train/geojson/buildings/buildings_AOI_2_Vegas_img<k>.geojson`` (lon/lat), the
    last chip without buildings (an empty FeatureCollection, as SpaceNet ships them)."""
    aoi = root / "AOI_2_Vegas_Train"
    (aoi / product).mkdir(parents=True)
    (aoi / "geojson" / "buildings").mkdir(parents=True)
    for k in (1, 2, 3):
        img, transform, crs, buildings = generate_scene(100 + k, size=160, origin=scene_origin(k, 160))
        if product == "MUL-PanSharpen":
            img = to_worldview(img, k)
            write_geotiff(img, transform, crs, aoi / product / f"{product}_AOI_2_Vegas_img{k}.tif")
        else:  # RGB-PanSharpen: 3-band uint16
            with rasterio.open(aoi / product / f"{product}_AOI_2_Vegas_img{k}.tif", "w", driver="GTiff",
                               width=160, height=160, count=3, dtype="uint16", crs=crs, transform=transform) as dst:
                dst.write(img.astype(np.uint16) * 8)
        fc = buildings_to_geojson(buildings if k < 3 else [], crs)
        (aoi / "geojson" / "buildings" / f"buildings_AOI_2_Vegas_img{k}.geojson").write_text(json.dumps(fc))
    return aoi


def test_spacenet2_rgb_pansharpen_layout_is_read_as_it_comes(tmp_path, workdir, luigi_config):
    aoi = _spacenet2_tree(tmp_path / "sn2", "RGB-PanSharpen")
    luigi_config("data", "images", str(aoi / "RGB-PanSharpen"))
    luigi_config("data", "labels", str(aoi / "geojson" / "buildings"))
    assert list_images() == [f"RGB-PanSharpen_AOI_2_Vegas_img{k}" for k in (1, 2, 3)]
    assert label_path("RGB-PanSharpen_AOI_2_Vegas_img3").name == "buildings_AOI_2_Vegas_img3.geojson"


def test_oracle_on_a_spacenet2_mul_pansharpen_tree_with_an_empty_label_file(pg, tmp_path, workdir, luigi_config):
    aoi = _spacenet2_tree(tmp_path / "sn2", "MUL-PanSharpen")
    for s, o, v in [("data", "images", aoi / "MUL-PanSharpen"), ("data", "labels", aoi / "geojson" / "buildings"),
                    ("model", "name", "oracle"), ("tiling", "tile_size", 96), ("tiling", "overlap", 16)]:
        luigi_config(s, o, v)
    assert luigi.build([RunAll()], local_scheduler=True, log_level="WARNING")
    m, out = _metrics(workdir)
    assert set(m["by_image"]) == {"MUL-PanSharpen_AOI_2_Vegas_img1", "MUL-PanSharpen_AOI_2_Vegas_img2",
                                  "MUL-PanSharpen_AOI_2_Vegas_img3"}
    empty = m["by_image"]["MUL-PanSharpen_AOI_2_Vegas_img3"]
    assert (empty["tp"], empty["fp"], empty["fn"]) == (0, 0, 0)  # labelled, and no buildings
    total = m["splits"]["all"]
    assert total["tp"] > 0 and total["fp"] == 0 and total["fn"] == 0 and total["f1"] == 1.0, total
    rows = (out / "images" / "MUL-PanSharpen_AOI_2_Vegas_img3.csv").read_text().splitlines()
    assert rows[1].startswith("AOI_2_Vegas_img3,-1,POLYGON EMPTY")  # SpaceNet's ImageId, no buildings


def test_band_count_mismatch_fails_before_any_tile_is_predicted(tmp_path):
    """A 3-band model on 8-band imagery, and the reverse: an error naming both band counts, and
    no probabilities written."""
    from models.inference import predict_file  # noqa: PLC0415 - keras is heavy; this test alone needs inference

    img, transform, crs, _ = generate_scene(5, size=64)
    paths = {3: tmp_path / "rgb.tif", 8: tmp_path / "mul.tif"}
    write_geotiff(img, transform, crs, paths[3])
    write_geotiff(to_worldview(img, 5), transform, crs, paths[8])
    for model_bands, image_bands in ((3, 8), (8, 3)):
        net = models.build_unet(model_bands, 1, depth=2, base_filters=4, seed=0)
        model_path = models.save_model_atomic(net, tmp_path / f"m{model_bands}.keras")
        out = tmp_path / f"prob_{model_bands}_{image_bands}.tif"
        with pytest.raises(InputError, match=rf"the image has {image_bands} bands, the model was trained on "
                                             rf"{model_bands}"):
            predict_file(model_path, paths[image_bands], out, 32, 8)
        assert not out.exists()
