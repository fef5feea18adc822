"""PredictImage: per-tile inference stitched into one georeferenced probability GeoTIFF.

The work is :func:`models.inference.predict_image` (tile plans and the mosaic writer are
:mod:`footprints.stitch`): every tile core is taken from a prediction of a window around it,
``[predict] context`` pixels wide (``auto``: the network's receptive margin, so the mosaic equals
the whole-image prediction whatever the tiling's overlap; ``0``: the tile files as they are).

Output ``<workdir>/predictions/<model key>-ctx<context>/<image>.tif``: uint8 ``round(255 p)``, one
band per head channel (footprint[, boundary, contact]), the image's size, transform and CRS.

``[model] name = oracle``: the same stitching path with the mask tiles (the rasterized labels)
as the "prediction", which must reproduce the ground truth exactly downstream.

``Predict``: the inference-only entry for new imagery and a trained model file:
``luigi --module tasks.predict Predict --model-file m.keras --image-path new.tif --local-scheduler``
(also ``--module pipeline`` once re-exported there).
"""
from __future__ import annotations

import time
from pathlib import Path

import luigi

from tasks import config
from tasks.keys import params_key, prediction_key, tta_entry
from tasks.masks import MakeMasks
from tasks.resources import gpu_resources
from tasks.sources import ImageFile
from tasks.tiling import TileImage
from tasks.train import TrainModel


def _progress(task, label):
    t0 = time.time()

    def progress(done, total):
        task.set_progress_percentage(int(100 * done / total))
        if done == total or done % 8 == 0:
            rate = done / max(time.time() - t0, 1e-9)
            task.set_status_message(f"{label}: tile {done}/{total} ({rate:.1f} tiles/s)")

    return progress


class PredictImage(luigi.Task):
    """Probabilities of one image -> ``<workdir>/predictions/<model key>/<image>.tif``."""

    image = luigi.Parameter()

    @property
    def resources(self):
        # the network on a GPU: {"gpu": 1}, so [resources] gpu caps GPU tasks at once (the oracle needs none)
        return {} if config.model().name == "oracle" else gpu_resources()

    def requires(self):
        reqs = {"tiles": TileImage(image=self.image)}
        if config.model().name == "oracle":
            reqs["masks"] = MakeMasks(image=self.image)
        else:
            reqs["model"] = TrainModel()
        return reqs

    def output(self):
        return luigi.LocalTarget(str(config.workdir() / "predictions" / prediction_key() / f"{self.image}.tif"))

    def run(self):
        from models.inference import predict_image  # noqa: PLC0415 - keras is heavy; only inference needs it

        cfg = config.predict()
        inputs = self.input()
        with self.output().temporary_path() as tmp:
            stats = predict_image(inputs["tiles"].path, tmp, model_path=inputs["model"].path if "model" in inputs else None,
                                  mask_index_path=inputs["masks"].path if "masks" in inputs else None,
                                  batch_size=cfg.batch_size, precision=cfg.precision, compress=cfg.compress,
                                  progress=_progress(self, self.image), context=config.predict_context(),
                                  window=cfg.window, engine=cfg.engine, tta=int(cfg.tta))
        self.set_status_message(f"{stats['tiles']} tiles in {stats['seconds']:.1f} s "
                                f"({stats['tiles'] / max(stats['seconds'], 1e-9):.2f} tiles/s)")


class ModelFile(luigi.ExternalTask):
    """A trained ``.keras`` model file supplied by the user."""

    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)


class Predict(luigi.Task):
    """Inference only: a trained model file on a new GeoTIFF, windows read straight from it.

    ``luigi --module tasks.predict Predict --model-file m.keras --image-path new.tif``
    writes ``<workdir>/predictions/file-<hash>/<image stem>.tif`` (or ``--output-path``).
    Tiling defaults to ``[tiling] tile_size/overlap``.
    """

    model_file = luigi.Parameter()
    image_path = luigi.Parameter()
    output_path = luigi.Parameter(default="")
    tile_size = luigi.IntParameter(default=0, description="0: [tiling] tile_size")
    overlap = luigi.IntParameter(default=-1, description="-1: [tiling] overlap")

    @property
    def resources(self):
        return gpu_resources()

    def requires(self):
        return {"model": ModelFile(path=self.model_file), "image": ImageFile(path=self.image_path)}

    def grid(self) -> tuple[int, int]:
        t = config.tiling()
        return (self.tile_size or t.tile_size, self.overlap if self.overlap >= 0 else t.overlap)

    def output(self):
        if self.output_path:
            return luigi.LocalTarget(self.output_path)
        ts, ov = self.grid()
        key = params_key("file", {"model": str(Path(self.model_file).resolve()), "tile_size": ts, "overlap": ov,
                                  "context": str(config.predict_context()), **tta_entry(config.predict().tta)})
        return luigi.LocalTarget(str(config.workdir() / "predictions" / key / f"{Path(self.image_path).stem}.tif"))

    def run(self):
        from models.inference import predict_file  # noqa: PLC0415 - keras is heavy; only inference needs it

        cfg = config.predict()
        ts, ov = self.grid()
        with self.output().temporary_path() as tmp:  # creates the directory
            predict_file(self.model_file, self.image_path, tmp, ts, ov, context=config.predict_context(),
                         batch_size=cfg.batch_size, precision=cfg.precision, compress=cfg.compress,
                         progress=_progress(self, Path(self.image_path).name), window=cfg.window,
                         engine=cfg.engine, tta=int(cfg.tta))
