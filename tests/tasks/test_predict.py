"""tasks/predict.py: the oracle, the real chip end to end, Predict's errors, [predict] context."""
import json
from pathlib import Path

import keras
import luigi
import numpy as np
import pytest
import rasterio
from affine import Affine

import models
from footprints.errors import InputError
from tasks import config
from tasks.predict import Predict, PredictImage
from tasks.train import TrainModel


@pytest.fixture(autouse=True)
def _clear_session():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def _read(path):
    with rasterio.open(path) as src:
        return np.moveaxis(src.read(), 0, -1)


def test_predict_context_is_parsed_once(luigi_config):
    for value, want in (("auto", "auto"), (" 64 ", 64), ("0", 0)):
        luigi_config("predict", "context", value)
        assert config.predict_context() == want
    for bad in ("-3", "wide"):
        luigi_config("predict", "context", bad)
        with pytest.raises(ValueError, match="context"):
            config.predict_context()


# ---------------------------------------------------------------- the tasks on the real SpaceNet chip


def _chip(luigi_config, fixtures_dir, tile_size=256, overlap=64, kind="footprint"):
    luigi_config("data", "images", str(fixtures_dir / "imagery" / "sample_geotiff.tif"))
    luigi_config("data", "labels", str(fixtures_dir / "imagery" / "geotiff_labels.geojson"))
    luigi_config("tiling", "tile_size", tile_size)
    luigi_config("tiling", "overlap", overlap)
    luigi_config("masks", "kind", kind)


def test_oracle_reproduces_the_reference_mask(pg, workdir, luigi_config, fixtures_dir):
    _chip(luigi_config, fixtures_dir, tile_size=256, overlap=64)
    luigi_config("model", "name", "oracle")
    task = PredictImage(image="sample_geotiff")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    out = Path(task.output().path)
    assert out.parent.name.startswith("oracle-ts256_ov64") and out.name == "sample_geotiff.tif"
    with rasterio.open(out) as src, rasterio.open(fixtures_dir / "masks" / "sample_fp_mask_from_geojson.tif") as ref, \
            rasterio.open(fixtures_dir / "imagery" / "sample_geotiff.tif") as img:
        assert (src.count, src.dtypes[0], src.crs, src.transform) == (1, "uint8", img.crs, img.transform)
        assert src.descriptions == ("footprint",)
        np.testing.assert_array_equal(src.read(1), ref.read(1))  # every tile core stitched in place


def test_real_uint16_chip_trains_and_predicts_end_to_end(pg, workdir, luigi_config, fixtures_dir):
    _chip(luigi_config, fixtures_dir, tile_size=256, overlap=64)
    for k, v in dict(depth=2, base_filters=4, epochs=2, batch_size=2, crop_size=64, samples_per_epoch=4,
                     workers=1, patience=0).items():
        luigi_config("train", k, v)
    task = PredictImage(image="sample_geotiff")
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")
    model_path = Path(TrainModel().output().path)
    run = model_path.parent
    assert model_path.is_file() and (run / "history.csv").is_file() and (run / "training_curve.png").is_file()
    info = models.model_info(models.load_model(model_path))
    assert info["arch"]["input_bands"] == 1 and info["data"] == {"dtype": "uint16", "nodata": 0.0}
    assert info["mean"][0] > 255  # statistics of the uint16 pixels, nodata excluded
    summary = json.loads((run / "model.json").read_text())
    n_tiles = len(json.loads((workdir / "tiles" / "sample_geotiff" / "ts256_ov64" / "index.json").read_text())["tiles"])
    assert summary["epochs_run"] == 2 and summary["train_tiles"] == n_tiles == 25 and summary["val_tiles"] == 0
    assert summary["iou"] is not None  # one image: no validation split, selection on training IoU
    src_path = fixtures_dir / "imagery" / "sample_geotiff.tif"
    out = Path(task.output().path)
    assert out.parent.name == f"{run.name}-ctxauto-tta8"  # the default context and test-time augmentation
    with rasterio.open(out) as p, rasterio.open(src_path) as s:
        assert (p.width, p.height, p.crs, p.transform) == (s.width, s.height, s.crs, s.transform)
        assert p.count == 1 and p.dtypes[0] == "uint8" and p.profile["tiled"]
        prob, img = p.read(1), s.read(1)
    assert prob.std() > 0  # a real prediction, not a constant
    assert (prob[img == 0] == 0).all()  # nodata pixels get probability 0

    # the inference-only entry on the raw image file gives the same probabilities
    adhoc = Predict(model_file=str(model_path), image_path=str(src_path), output_path=str(workdir / "adhoc.tif"))
    assert luigi.build([adhoc], local_scheduler=True, log_level="WARNING")
    np.testing.assert_array_equal(_read(workdir / "adhoc.tif")[..., 0], prob)


def test_predict_names_the_file_when_bands_do_not_match(tmp_path, workdir):
    net = models.build_unet(3, 1, depth=2, base_filters=4, seed=0)
    model_path = models.save_model_atomic(net, tmp_path / "m.keras")
    img = tmp_path / "one_band.tif"
    with rasterio.open(img, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8", crs="EPSG:32616",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))
    task = Predict(model_file=str(model_path), image_path=str(img))
    with pytest.raises(InputError, match=r"one_band\.tif: the image has 1 bands, the model was trained on 3"):
        task.run()
