"""Image ids: SpaceNet's ``AOI_<n>_<city>_img<k>`` naming, written once.

SpaceNet files carry the id after a product prefix (``RGB-PanSharpen_AOI_2_Vegas_img1.tif``,
``buildings_AOI_2_Vegas_img1.geojson``); the CSV's ImageId is the bare ``AOI_2_Vegas_img1``, and
its AOI is the id without ``_img<k>``.
"""
from __future__ import annotations

import re
from pathlib import Path

from footprints.errors import InputError

SPACENET_ID = re.compile(r"(AOI_.+_img\d+)$")
_IMG_SUFFIX = re.compile(r"_img\d+$")


def spacenet_id(stem: str) -> str | None:
    """The ``AOI_..._img<k>`` id at the end of a file stem, or None."""
    m = SPACENET_ID.search(str(stem))
    return m.group(1) if m else None


def image_id(image: str) -> str:
    """The SpaceNet ImageId of an image: its ``AOI_<n>_<city>_img<k>`` suffix when it has one
    (``RGB-PanSharpen_AOI_2_Vegas_img1`` -> ``AOI_2_Vegas_img1``), else the image id itself."""
    return spacenet_id(image) or str(image)


def aoi_of_image_id(image_id: str) -> str:
    """The AOI of a SpaceNet ImageId: the id without its trailing ``_imgN`` (else the id itself).

    >>> aoi_of_image_id("AOI_2_Vegas_img3457")
    'AOI_2_Vegas'
    """
    return _IMG_SUFFIX.sub("", str(image_id))


def check_image_id(image: str, path=None) -> str:
    """An image id names directories (``tiles/<image>/``...): it must be one path component,
    so a file named ``...tif`` (id ``..``) or an id with a slash cannot write outside the workdir.
    Returns the id; raises :class:`InputError` (naming ``path`` when given)."""
    s = str(image)
    if s in ("", ".", "..") or any(c in s for c in "/\\\0"):
        raise InputError(path if path is not None else s,
                         f"image id {s!r} is not usable as a directory name (empty, '.', '..', or with a "
                         f"slash or NUL); rename the file")
    return s


def match_label(image: str, label_files: list[Path]) -> Path | None:
    """The label file for an image: same stem, or the same SpaceNet ``AOI_..._imgN`` id (which
    must then be unambiguous: two candidates are an :class:`InputError` naming both)."""
    by_stem = {p.stem: p for p in label_files}
    if image in by_stem:
        return by_stem[image]
    sid = spacenet_id(image)
    if sid:
        found = [p for p in label_files if p.stem.endswith(sid)]
        if len(found) > 1:
            raise InputError(found[1], f"label files {found[0].name!r} and {found[1].name!r} both end in "
                                       f"{sid!r}: which one is image {image!r}'s is ambiguous; rename one")
        return found[0] if found else None
    return None
