"""Image ids: SpaceNet's ``AOI_<n>_<city>_img<k>`` naming, and image series, written once.

SpaceNet files carry the id after a product prefix (``RGB-PanSharpen_AOI_2_Vegas_img1.tif``,
``buildings_AOI_2_Vegas_img1.geojson``); the CSV's ImageId is the bare ``AOI_2_Vegas_img1``, and
its AOI is the id without ``_img<k>``.

Image series (SpaceNet 7): the same area (AOI) on several dates. A regular expression with the
named groups ``aoi`` and ``date``, searched in each image id (file stem), says which series and
date an image is; :data:`SN7_SERIES_PATTERN` recognises SpaceNet 7's monthly mosaics
(``global_monthly_2018_01_mosaic_L15-0331E-1257N_1327_3160_13``: AOI
``L15-0331E-1257N_1327_3160_13``, date ``2018_01``), whose label files are
``<image>_Buildings.geojson``. Dates sort as strings, so they must sort in time order
(``2018_01`` < ``2018_02``, ISO dates).
"""
from __future__ import annotations

import re
from pathlib import Path

from footprints.errors import InputError

SPACENET_ID = re.compile(r"(AOI_.+_img\d+)$")
SN7_SERIES_PATTERN = r"^global_monthly_(?P<date>\d{4}_\d{2})_mosaic_(?P<aoi>.+)$"
# label file stems that belong to image <stem>: SpaceNet 7's ``<image>_Buildings.geojson``
LABEL_SUFFIXES = ("_Buildings",)
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
    """The label file for an image: same stem, the stem plus SpaceNet 7's ``_Buildings``, or the
    same SpaceNet ``AOI_..._imgN`` id (which must then be unambiguous: two candidates are an
    :class:`InputError` naming both)."""
    by_stem = {p.stem: p for p in label_files}
    for stem in (image, *(image + s for s in LABEL_SUFFIXES)):
        if stem in by_stem:
            return by_stem[stem]
    sid = spacenet_id(image)
    if sid:
        found = [p for p in label_files if p.stem.endswith(sid)]
        if len(found) > 1:
            raise InputError(found[1], f"label files {found[0].name!r} and {found[1].name!r} both end in "
                                       f"{sid!r}: which one is image {image!r}'s is ambiguous; rename one")
        return found[0] if found else None
    return None


# ---------------------------------------------------------------- image series


def series_regex(pattern: str) -> re.Pattern | None:
    """``[data] series_pattern`` compiled; None when empty (no series). A pattern that does not
    compile, or lacks the ``aoi`` or ``date`` group, is an :class:`InputError`."""
    if not pattern:
        return None
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise InputError("[data] series_pattern", f"{pattern!r} is not a regular expression: {e}") from None
    missing = [g for g in ("aoi", "date") if g not in rx.groupindex]
    if missing:
        raise InputError("[data] series_pattern", f"{pattern!r} lacks the named group(s) "
                                                   f"{', '.join(f'(?P<{g}>...)' for g in missing)}")
    return rx


def series_key(image: str, pattern: str | re.Pattern | None) -> tuple[str, str] | None:
    """``(aoi, date)`` of an image id under a series pattern, or None when it does not match
    (or a group matched nothing).

    >>> series_key("global_monthly_2018_01_mosaic_L15-0331E-1257N_1327_3160_13", SN7_SERIES_PATTERN)
    ('L15-0331E-1257N_1327_3160_13', '2018_01')
    """
    rx = series_regex(pattern) if isinstance(pattern, str) else pattern
    m = rx.search(str(image)) if rx is not None else None
    if not m or not m.group("aoi") or not m.group("date"):
        return None
    return m.group("aoi"), m.group("date")


def group_series(images, pattern: str | re.Pattern | None) -> dict[str, dict[str, str]]:
    """``{aoi: {date: image}}`` of the images that match the pattern, dates in time (sort)
    order. Two images of one AOI and date are an :class:`InputError` naming both."""
    rx = series_regex(pattern) if isinstance(pattern, str) else pattern
    out: dict[str, dict[str, str]] = {}
    for im in sorted(images):
        key = series_key(im, rx)
        if key is None:
            continue
        aoi, date = key
        dates = out.setdefault(aoi, {})
        if date in dates:
            raise InputError(im, f"image {dates[date]!r} is AOI {aoi!r} on date {date!r} too; "
                                 f"one image per AOI and date (or change [data] series_pattern)")
        dates[date] = im
    return {aoi: dict(sorted(d.items())) for aoi, d in sorted(out.items())}


def sn7_image_name(aoi: str, date: str) -> str:
    """A SpaceNet 7 style image id, ``global_monthly_<date>_mosaic_<aoi>``."""
    return f"global_monthly_{date}_mosaic_{aoi}"
