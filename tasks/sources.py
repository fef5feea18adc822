"""Where the input images and label files are: the demo dataset, or `[data] images/labels`."""
from __future__ import annotations

import glob
import itertools
import os
from pathlib import Path

import luigi

from footprints.demo import demo_scene_names, demo_series_names
from footprints.errors import InputError
from footprints.names import check_image_id, group_series, match_label, series_key, series_regex
from tasks.config import data, workdir

RASTER_EXT = (".tif", ".tiff", ".vrt")
LABEL_EXT = (".geojson", ".json")


def using_demo() -> bool:
    return not data().images


def demo_key(scenes: int, size: int, seed: int, dates: int = 1, typed: bool = False, bands: int = 3) -> str:
    """Directory name of a generated demo dataset, e.g. ``n4_s1024_seed42`` (``..._d4`` for a
    temporal demo of 4 dates, ``..._typed`` for the typed demo, ``..._b8`` for 8 bands)."""
    return (f"n{scenes}_s{size}_seed{seed}" + (f"_d{dates}" if dates > 1 else "") + ("_typed" if typed else "")
            + (f"_b{bands}" if bands != 3 else ""))


def demo_dir() -> Path:
    """``<workdir>/demo/<key>``: where GenerateDemo puts the scenes of the current config.
    (Here, not in ``tasks.keys``, which re-exports it: keys needs ``labelled_images``.)"""
    cfg = data()
    return workdir() / "demo" / demo_key(cfg.demo_scenes, cfg.demo_size, cfg.demo_seed, cfg.demo_dates,
                                          cfg.demo_typed, cfg.demo_bands)


def demo_names() -> list[str]:
    """The image ids of the configured demo: ``demo_00 ..``, or with ``demo_dates`` > 1 one
    SpaceNet 7 style id per scene and date (``global_monthly_2018_01_mosaic_demo_00 ..``)."""
    cfg = data()
    if cfg.demo_dates > 1:
        return [name for _, _, name in demo_series_names(cfg.demo_scenes, cfg.demo_dates)]
    return demo_scene_names(cfg.demo_scenes)


def demo_image_path(name: str) -> Path:
    """The GeoTIFF of demo scene ``name`` (made by GenerateDemo)."""
    return demo_dir() / "images" / f"{name}.tif"


def demo_label_path(name: str) -> Path:
    """The GeoJSON labels of demo scene ``name`` (made by GenerateDemo)."""
    return demo_dir() / "labels" / f"{name}.geojson"


def _glob_base(spec: str) -> Path:
    """The directory a glob searches: its path up to the first component with a wildcard."""
    parts = Path(spec).parts
    fixed = [x for x in itertools.takewhile(lambda x: not glob.has_magic(x), parts)]
    return Path(*fixed[:len(parts) - 1]) if fixed else Path(".")


def _expand(spec: str, exts, setting: str) -> list[Path]:
    """The files of a directory, a glob or one file, as absolute paths. A file of a directory or glob
    that resolves outside it (a symlink out, or a ``..`` in its target) is an InputError: the
    data directory is what the user named, and nothing is read from elsewhere behind their back."""
    if os.path.isdir(spec):
        base, files = Path(spec), [p for p in sorted(Path(spec).iterdir()) if p.suffix.lower() in exts]
    elif os.path.isfile(spec):
        return [Path(spec).resolve()]  # one file named by the user
    else:
        base, files = _glob_base(spec), [Path(p) for p in sorted(glob.glob(spec))]
    root = base.resolve()
    out = []
    for p in files:
        if not (p.is_file() or p.suffix.lower() == ".vrt"):
            continue
        r = p.resolve()
        if not r.is_relative_to(root):
            raise InputError(p, f"resolves to {r}, outside the data directory {root} of {setting}; "
                                f"copy the file there, or set {setting} to where it is")
        out.append(Path(os.path.abspath(p)))  # a link inside keeps its own name: the image id
    return out


def _by_stem(files: list[Path], what: str) -> dict[str, Path]:
    """``{file stem: path}``; two files of one stem would be one image (or one PostGIS label
    source, the second silently replacing the first): an InputError naming both."""
    out: dict[str, Path] = {}
    for p in files:
        check_image_id(p.stem, p)
        if p.stem in out:
            raise InputError(p, f"two {what} share the name {p.stem!r} ({out[p.stem]}); rename one of them")
        out[p.stem] = p
    return out


def _image_files() -> dict[str, Path]:
    if using_demo():
        return {n: demo_image_path(n) for n in demo_names()}
    return _by_stem(_expand(data().images, RASTER_EXT, "[data] images"), "images")


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
    files = _expand(spec, LABEL_EXT, "[data] labels")
    if os.path.isfile(spec):
        return files[0]  # one label file (e.g. a whole AOI) for every image
    return match_label(image, list(_by_stem(files, "label files").values()))


def shared_label_file() -> bool:
    """Whether ``[data] labels`` is one file serving every image (an AOI's labels), rather
    than a file per image (the demo's, or a directory or glob matched by name)."""
    return not using_demo() and os.path.isfile(data().labels)


def labelled_images() -> list[str]:
    """The configured images that have a label file (only those can be trained or evaluated)."""
    return [im for im in list_images() if label_path(im) is not None]


def series(images=None) -> dict[str, dict[str, str]]:
    """``{aoi: {date: image}}`` of the configured dataset's image series (``[data]
    series_pattern``), dates in time order; ``{}`` when no image matches (not a series run).
    A dataset in which some images match and others do not is an InputError naming one of
    each (set ``series_pattern`` to match all, or empty for none). ``images`` restricts the
    result to those images (the dataset still decides whether the run is a series)."""
    rx = series_regex(data().series_pattern)
    if rx is None:
        return {}
    every = list_images()
    odd = [im for im in every if series_key(im, rx) is None]
    if odd and len(odd) < len(every):
        match = next(im for im in every if im not in odd)
        raise InputError(image_path(odd[0]), f"does not match [data] series_pattern while {match!r} does: "
                                             f"a run is a set of image series or none; set series_pattern to "
                                             f"match every image, or empty it")
    wanted = None if images is None else set(images)
    groups = group_series(every if wanted is None else [im for im in every if im in wanted], rx)
    return groups


def is_series() -> bool:
    """Whether the run is a set of image series (every image matches ``[data] series_pattern``)."""
    return bool(series())


def aoi_of(image: str) -> str | None:
    """The AOI of an image of a series run, else None."""
    key = series_key(image, series_regex(data().series_pattern))
    return key[0] if key and is_series() else None


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

