"""The DAG's entry point: ``luigi --module pipeline RunAll`` (or any task below by name).

Every stage lives in its own module under ``tasks/``; this package re-exports them so
``luigi --module pipeline <Task>`` works for each, along with the config sections
(``--tiling-tile-size``, ``--model-name``, ...).
"""
import luigi

from tasks.config import data, dedup, masks, model, paths, polygonize, predict, split, tiling, track, train, tune  # noqa: F401
from tasks.dedup import DeduplicateBorders
from tasks.demo import GenerateDemo
from tasks.evaluate import Evaluate
from tasks.labels import LoadLabels
from tasks.masks import MakeMasks
from tasks.outputs import WriteOutputs, WriteRunOutputs
from tasks.polygonize import Polygonize
from tasks.predict import ModelFile, Predict, PredictImage
from tasks.sources import ImageFile, LabelFile, label_path, list_images, series
from tasks.split import SplitDataset
from tasks.tiling import TileImage
from tasks.track import TrackBuildings, WriteTracks
from tasks.train import TrainModel
from tasks.tune import TuneThreshold

__all__ = [
    "RunAll", "GenerateDemo", "ImageFile", "LabelFile", "TileImage", "LoadLabels", "MakeMasks", "SplitDataset",
    "TrainModel", "PredictImage", "Predict", "ModelFile", "Polygonize", "DeduplicateBorders", "WriteOutputs",
    "WriteRunOutputs", "Evaluate", "TrackBuildings", "WriteTracks", "TuneThreshold",
]


class RunAll(luigi.WrapperTask):
    """Everything, for every image of the configured dataset (the generated demo by default):
    buildings and outputs for every image, and the SpaceNet metric for the labelled ones; for
    image series also each AOI's ``<aoi>_tracks.csv`` (and SCOT in the metrics)."""

    def requires(self):
        images = list_images()
        yield WriteRunOutputs(images=images)
        labelled = [i for i in images if label_path(i) is not None]
        if labelled:
            yield Evaluate(images=labelled)
        for aoi in series():
            yield WriteTracks(aoi=aoi)
