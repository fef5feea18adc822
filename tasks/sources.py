"""Where the input images and label files are: the demo dataset, or `[data] images/labels`."""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import luigi

from tasks.config import data

RASTER_EXT = (".tif", ".tiff", ".vrt")
LABEL_EXT = (".geojson", ".json")
_SPACENET_ID = re.compile(r"(AOI_.+_img\d+)$")


def using_demo() -> bool:
    return not data().images


def _expand(spec: str, exts) -> list[Path]:
    if os.path.isdir(spec):
        files = [p for p in sorted(Path(spec).iterdir()) if p.suffix.lower() in exts]
    else:
        files = [Path(p) for p in sorted(glob.glob(spec))]
    return [p.resolve() for p in files if p.is_file() or p.suffix.lower() == ".vrt"]


def _image_files() -> dict[str, Path]:
    if using_demo():
        from tasks.demo import demo_image_path, demo_scene_names

        return {n: demo_image_path(n) for n in demo_scene_names(data().demo_scenes)}
    files = _expand(data().images, RASTER_EXT)
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise ValueError(f"{p}: two images share the name {p.stem!r} ({out[p.stem]})")
        out[p.stem] = p
    return out


def list_images() -> list[str]:
    """Image ids (file stems) of the configured dataset, sorted."""
    return sorted(_image_files())


def image_path(image: str) -> Path:
    try:
        return _image_files()[image]
    except KeyError:
        raise KeyError(f"unknown image {image!r}; known: {', '.join(list_images()[:10])}") from None


def match_label(image: str, label_files: list[Path]) -> Path | None:
    """The label file for an image: same stem, or the same SpaceNet `AOI_..._imgN` id."""
    by_stem = {p.stem: p for p in label_files}
    if image in by_stem:
        return by_stem[image]
    m = _SPACENET_ID.search(image)
    if m:
        for p in label_files:
            if p.stem.endswith(m.group(1)):
                return p
    return None


def label_path(image: str) -> Path | None:
    if using_demo():
        from tasks.demo import demo_label_path

        return demo_label_path(image)
    spec = data().labels
    if not spec:
        return None
    files = _expand(spec, LABEL_EXT)
    if os.path.isfile(spec) and len(files) == 1:
        return files[0]  # one label file (e.g. a whole AOI) for every image
    return match_label(image, files)


class ImageFile(luigi.ExternalTask):
    """A source GeoTIFF supplied by the user."""

    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)


class LabelFile(luigi.ExternalTask):
    """A GeoJSON label file supplied by the user."""

    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)


def image_requirement(image: str) -> luigi.Task:
    """The task that provides an image file: the demo generator or the user's file."""
    if using_demo():
        from tasks.demo import GenerateDemo

        return GenerateDemo()
    return ImageFile(path=str(image_path(image)))


def label_requirement(image: str) -> luigi.Task | None:
    lp = label_path(image)
    if lp is None:
        return None
    if using_demo():
        from tasks.demo import GenerateDemo

        return GenerateDemo()
    return LabelFile(path=str(lp))
