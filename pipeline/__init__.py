"""The DAG's entry point: ``luigi --module pipeline RunAll`` (or any task below by name).

Every stage lives in its own module under ``tasks/``; this package re-exports them so
``luigi --module pipeline <Task>`` works for each.
"""
import luigi

from tasks.config import data, masks, model, paths, tiling  # noqa: F401  (config sections)
from tasks.labels import LoadLabels
from tasks.masks import MakeMasks
from tasks.sources import ImageFile, LabelFile, label_path, list_images
from tasks.tiling import TileImage

try:  # stages that land in later issues
    from tasks.demo import GenerateDemo  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["RunAll", "TileImage", "LoadLabels", "MakeMasks", "ImageFile", "LabelFile"]


class RunAll(luigi.WrapperTask):
    """Everything, for every image of the configured dataset (the demo by default)."""

    def requires(self):
        for image in list_images():
            yield TileImage(image=image)
            lp = label_path(image)
            if lp is not None:
                yield LoadLabels(path=str(lp))
                yield MakeMasks(image=image)
