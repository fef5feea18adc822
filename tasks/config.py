"""Configuration: `luigi.Config` sections of luigi.cfg, overridable on the command line.

`[tiling] tile_size` is also `--tiling-tile-size` on the command line, and so on for every
section. Nothing here is read at import time: call the section (``tiling().tile_size``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import luigi


class paths(luigi.Config):
    """Where files go. ``FOOTPRINTS_WORKDIR`` wins over ``[paths] workdir``; default ``./workspace``."""

    workdir = luigi.Parameter(default="")


class data(luigi.Config):
    """Input data. Empty ``images`` means the generated demo dataset.

    ``images``: a directory of GeoTIFFs (``*.tif``/``*.tiff``) or a glob.
    ``labels``: one GeoJSON file used for every image, or a directory of GeoJSONs matched to the images by file stem
    (``<stem>.geojson``, also SpaceNet's ``..._<stem>.geojson``), or a glob.
    ``label_crs``: CRS of label files that have no ``crs`` member and are not EPSG:4326
    (RFC 7946), e.g. ``EPSG:32616`` or a WKT/PROJ string. Empty: RFC 7946 / legacy ``crs``.
    """

    images = luigi.Parameter(default="")
    labels = luigi.Parameter(default="")
    label_crs = luigi.Parameter(default="")
    demo_scenes = luigi.IntParameter(default=4)
    demo_size = luigi.IntParameter(default=1024)
    demo_seed = luigi.IntParameter(default=42)


class tiling(luigi.Config):
    tile_size = luigi.IntParameter(default=512, description="tile edge in pixels")
    overlap = luigi.IntParameter(default=64, description="pixels shared by neighbouring tiles")
    compress = luigi.ChoiceParameter(
        default="zstd", choices=["zstd", "deflate", "lzw", "none"], significant=False,
        description="lossless GeoTIFF codec of the tiles",
    )
    workers = luigi.IntParameter(default=2, significant=False, description="processes writing tiles")


class masks(luigi.Config):
    kind = luigi.ChoiceParameter(default="3class", choices=["footprint", "3class"])
    boundary_width = luigi.FloatParameter(default=1.0, description="boundary band inside each building, pixels")
    contact_distance = luigi.FloatParameter(default=2.0, description="buildings closer than this (metres) get contact pixels between them")


class model(luigi.Config):
    name = luigi.ChoiceParameter(default="unet", choices=["unet", "oracle"])


def workdir() -> Path:
    """The one directory under which every file of the pipeline is written."""
    p = os.environ.get("FOOTPRINTS_WORKDIR") or paths().workdir or "workspace"
    return Path(p).expanduser().resolve()


def params_key(prefix: str, params: dict) -> str:
    """A readable, collision-safe directory name for a set of significant parameters."""
    body = json.dumps(params, sort_keys=True, default=str)
    h = hashlib.sha1(body.encode()).hexdigest()[:8]
    return f"{prefix}-{h}"


def tiling_key() -> str:
    t = tiling()
    return f"ts{t.tile_size}_ov{t.overlap}"


class polygonize(luigi.Config):
    """Probabilities -> building polygons (Polygonize) and their final clean-up (DeduplicateBorders)."""

    threshold = luigi.FloatParameter(default=0.5, description="a pixel is a building where its probability > threshold")
    min_area_m2 = luigi.FloatParameter(default=2.0, description="drop buildings smaller than this (m², image CRS)")
    simplify_px = luigi.FloatParameter(default=1.0, description="Douglas-Peucker tolerance (pixels), topology preserving; 0: off")


class dedup(luigi.Config):
    """How DeduplicateBorders joins the pieces of a building cut by tile cores."""

    min_shared_px = luigi.FloatParameter(default=1.0, description="pieces in neighbouring cores merge only if they share a core-line segment this long (pixels)")
    merge_overlap = luigi.FloatParameter(default=0.5, description="where two tile windows overlap, pieces merge only if their tiles' polygons agree there: shared area >= this x the smaller one's area")
