"""Where the input images and label files are: the demo dataset, or `[data] images/labels`."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import luigi

from footprints.demo import demo_scene_names
from footprints.names import match_label
from tasks.config import data, workdir

RASTER_EXT = (".tif", ".tiff", ".vrt")
LABEL_EXT = (".geojson", ".json")


def using_demo() -> bool:
    return not data().images


def demo_key(scenes: int, size: int, seed: int) -> str:
    """Directory name of a generated demo dataset, e.g. ``n4_s1024_seed42``."""
    return f"n{scenes}_s{size}_seed{seed}"


def demo_dir() -> Path:
    """``<workdir>/demo/<key>``: where GenerateDemo puts the scenes of the current config.
    (Here, not in ``tasks.keys``, which re-exports it: keys needs ``labelled_images``.)"""
    cfg = data()
    return workdir() / "demo" / demo_key(cfg.demo_scenes, cfg.demo_size, cfg.demo_seed)


def demo_image_path(name: str) -> Path:
    """The GeoTIFF of demo scene ``name`` (made by GenerateDemo)."""
    return demo_dir() / "images" / f"{name}.tif"


def demo_label_path(name: str) -> Path:
    """The GeoJSON labels of demo scene ``name`` (made by GenerateDemo)."""
    return demo_dir() / "labels" / f"{name}.geojson"


def _expand(spec: str, exts) -> list[Path]:
    if os.path.isdir(spec):
        files = [p for p in sorted(Path(spec).iterdir()) if p.suffix.lower() in exts]
    else:
        files = [Path(p) for p in sorted(glob.glob(spec))]
    return [p.resolve() for p in files if p.is_file() or p.suffix.lower() == ".vrt"]


def _image_files() -> dict[str, Path]:
    if using_demo():
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


def label_path(image: str) -> Path | None:
    if using_demo():
        return demo_label_path(image)
    spec = data().labels
    if not spec:
        return None
    files = _expand(spec, LABEL_EXT)
    if os.path.isfile(spec) and len(files) == 1:
        return files[0]  # one label file (e.g. a whole AOI) for every image
    return match_label(image, files)


def labelled_images() -> list[str]:
    """The configured images that have a label file (only those can be trained or evaluated)."""
    return [im for im in list_images() if label_path(im) is not None]


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

