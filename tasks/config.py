"""Configuration: `luigi.Config` sections of luigi.cfg, overridable on the command line.

`[tiling] tile_size` is also `--tiling-tile-size` on the command line, and so on for every
section. Nothing here is read at import time: call the section (``tiling().tile_size``).
"""
from __future__ import annotations

import os
from pathlib import Path

import luigi

from footprints.demo import typed as typed_demo
from footprints.names import SN7_SERIES_PATTERN
from models.params import TrainParams

_T = TrainParams()  # the defaults of [train]


class paths(luigi.Config):
    """Where files go. ``FOOTPRINTS_WORKDIR`` wins over ``[paths] workdir``; default ``./workspace``."""

    workdir = luigi.Parameter(default="")


class data(luigi.Config):
    """Input data. Empty ``images`` means the generated demo dataset.

    ``images``: a directory of GeoTIFFs (``*.tif``/``*.tiff``) or a glob.
    ``labels``: one GeoJSON file used for every image, or a directory of GeoJSONs matched to the images by file stem
    (``<stem>.geojson``, also SpaceNet's ``..._<stem>.geojson`` and SpaceNet 7's ``<stem>_Buildings.geojson``), or a glob.
    ``label_crs``: CRS of label files that have no ``crs`` member and are not EPSG:4326
    (RFC 7946), e.g. ``EPSG:32616`` or a WKT/PROJ string. Empty: RFC 7946 / legacy ``crs``.
    """

    images = luigi.Parameter(default="")
    labels = luigi.Parameter(default="")
    label_crs = luigi.Parameter(default="")
    demo_scenes = luigi.IntParameter(default=8)
    demo_size = luigi.IntParameter(default=1024)
    demo_seed = luigi.IntParameter(default=42)
    demo_bands = luigi.ChoiceParameter(default=3, choices=[3, 8], var_type=int, description="3: uint8 RGB; 8: uint16 "
                                       "WorldView-2 bands (coastal..NIR2), 11-bit values, as SpaceNet's MUL-PanSharpen")
    demo_dates = luigi.IntParameter(default=1, description="> 1: each demo scene on this many monthly dates (a series)")
    series_pattern = luigi.Parameter(default=SN7_SERIES_PATTERN, description="regex with groups aoi, date on image "
                                     "stems: matching images form series; default SpaceNet 7's names; empty: none")
    demo_typed = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                     description="the demo's buildings carry a condition (Complete, Incomplete, "
                                     "Foundation) drawn as such; class_field and classes default to it")
    class_field = luigi.Parameter(default="", description="label property naming each building's class (type); "
                                  "empty: one class")
    classes = luigi.Parameter(default="", description="comma-separated class values, in order; empty: one class")
    default_class = luigi.Parameter(default="", description="class of features without a value; empty: the first class")


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


class polygonize(luigi.Config):
    """Probabilities -> building polygons (Polygonize) and their final clean-up (DeduplicateBorders)."""

    threshold = luigi.Parameter(default="auto", description="a pixel is a building where its probability > threshold; "
                                "auto: TuneThreshold's value on the val split (0.5 without one)")
    min_area_m2 = luigi.Parameter(default="auto", description="drop buildings smaller than this (m², image CRS); "
                                  "auto: TuneThreshold's value on the val split (5 without one)")
    simplify_px = luigi.FloatParameter(default=1.0, description="Douglas-Peucker tolerance (pixels), topology preserving; 0: off")
    halo_px = luigi.IntParameter(default=8, description="pixels read around each tile window (within the image): context for the 3-class split, and the overlap in which DeduplicateBorders proves two pieces are one building, even with tiling overlap 0")


class dedup(luigi.Config):
    """How DeduplicateBorders joins the pieces of a building cut by tile cores."""

    merge_overlap = luigi.FloatParameter(default=0.5, description="where two tiles' read windows overlap, pieces merge only if the tiles' polygons agree there: shared area >= this x the smaller one's area")
    min_shared_px = luigi.FloatParameter(default=1.0, description="where they do not overlap (overlap 0 and halo 0), pieces merge if they share a core-line stretch this long (pixels)")


class tune(luigi.Config):
    """TuneThreshold's grid (``[polygonize] threshold``/``min_area_m2 = auto``), scored by building F1 on val."""

    thresholds = luigi.Parameter(default="0.30:0.80:0.05", description="probability thresholds: comma-separated, or start:stop:step (stop included)")
    min_areas_m2 = luigi.Parameter(default="2,5,10,20", description="minimum building areas (m²): comma-separated, or start:stop:step")
    tie = luigi.FloatParameter(default=0.005, description="F1 margin within which grid points count as tied")


class track(luigi.Config):
    """TrackBuildings (image series): ``greedy`` = SpaceNet 7's baseline, ``hungarian`` = one-to-one optimal."""

    method = luigi.ChoiceParameter(default="greedy", choices=["greedy", "hungarian"])
    min_iou = luigi.FloatParameter(default=0.25, description="IoU a building needs with an id's first-seen footprint to take the id")


class split(luigi.Config):
    """How SplitDataset assigns the labelled images' tiles to train / val / test.

    ``method = image``: whole images. Explicit ``train_images``/``val_images``/``test_images``
    (comma-separated ids) win; images in no list go to train. With no list at all, the sorted
    images are cut in order: the last ``test_fraction`` to test, the ``val_fraction`` before
    them to val, the rest to train (at least one image each when there are >= 3 images; the demo's
    4 scenes give demo_00+demo_01 train, demo_02 val, demo_03 test).
    ``method = block``: square blocks of ``block_size`` CRS units (metres) are drawn to
    splits (seeded); a tile is kept only if its window grown by ``buffer`` lies in blocks of
    one split, so no two tiles of different splits overlap or come closer than ``buffer``.
    ``block_size = auto`` sizes the blocks from the labelled extent so that every split (with
    a fraction > 0) gets tiles; an explicit size that leaves one empty is an error.
    """

    method = luigi.ChoiceParameter(default="image", choices=["image", "block"])
    train_images = luigi.Parameter(default="", description="comma-separated image ids")
    val_images = luigi.Parameter(default="", description="comma-separated image ids")
    test_images = luigi.Parameter(default="", description="comma-separated image ids")
    val_fraction = luigi.FloatParameter(default=0.2)
    test_fraction = luigi.FloatParameter(default=0.2)
    block_size = luigi.Parameter(default="auto", description="block edge, CRS units (metres); auto: sized from the labelled extent so that every split gets tiles")
    buffer = luigi.FloatParameter(default=50.0, description="gap kept between splits, CRS units (metres)")
    seed = luigi.IntParameter(default=0)


class train(luigi.Config):
    """TrainModel: architecture, schedule, augmentation. Significant parameters key the model
    directory ``<workdir>/models/<key>/``; ``precision``, ``workers``, ``cache_mb`` and
    ``tensorboard_port`` only change how the run executes. Defaults and significance are
    ``models.params.TrainParams``' (declared there once).

    The defaults are the demo's recipe, sized for the slowest 2-core CPU (float32, AVX2 only):
    700 steps of 4 x 256² crops, 8 base filters, no batch norm, lr 5e-3 (about 6.5 min). For real imagery start from
    ``base_filters = 32``, ``batchnorm = true``, ``batch_size = 8``, ``samples_per_epoch = 0``
    (one pass over the tiles per epoch), ``epochs = 100``, ``patience = 10``.
    """

    depth = luigi.IntParameter(default=_T.depth, description="U-Net poolings")
    base_filters = luigi.IntParameter(default=_T.base_filters, description="filters of the first level (doubled per level)")
    input_scale = luigi.IntParameter(default=_T.input_scale, description="> 1: the U-Net runs at 1/input_scale resolution (average pooling in, nearest upsampling + a 3x3 head out): input_scale² times cheaper")
    fold = luigi.IntParameter(default=_T.fold, description="> 1: every fold x fold pixel block is folded into channels (lossless space-to-depth), the U-Net runs at 1/fold resolution and its head predicts each block's pixels")
    batchnorm = luigi.BoolParameter(default=_T.batchnorm, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                    description="conv-BN-ReLU blocks; false: conv+bias+ReLU (about 2.5x faster steps on CPU)")
    epochs = luigi.IntParameter(default=_T.epochs)
    batch_size = luigi.IntParameter(default=_T.batch_size)
    crop_size = luigi.IntParameter(default=_T.crop_size, description="random square crops of the training tiles; 0: whole tiles")
    samples_per_epoch = luigi.IntParameter(default=_T.samples_per_epoch,
                                           description="crops per epoch; 0: as many as the training tiles' area holds")
    learning_rate = luigi.FloatParameter(default=_T.learning_rate)
    clipnorm = luigi.FloatParameter(default=_T.clipnorm, description="Adam's global gradient norm is clipped to this; 0: no clipping")
    loss = luigi.Parameter(default=_T.loss, description="bce, jaccard, dice, focal or weighted sums like 0.5*bce+dice")
    warmup_loss = luigi.Parameter(default=_T.warmup_loss, description="loss of the first warmup_epochs epochs")
    warmup_epochs = luigi.IntParameter(default=_T.warmup_epochs, description="e.g. 3 with loss=jaccard: the BCE-then-soft-IoU schedule")
    class_weights = luigi.Parameter(default=",".join(str(w) for w in _T.class_weights or ()),
                                    description="comma-separated loss weight per head channel; empty: equal")
    class_share = luigi.FloatParameter(default=_T.class_share,
                                       description="building types: least share of each epoch's crops drawn for "
                                       "each class (tiles holding it, centred on it; at most 1/classes each)")
    flips = luigi.BoolParameter(default=_T.flips, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    rotations = luigi.BoolParameter(default=_T.rotations, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    brightness = luigi.FloatParameter(default=_T.brightness, description="max brightness shift, in band standard deviations")
    contrast = luigi.FloatParameter(default=_T.contrast, description="max relative contrast change")
    color = luigi.FloatParameter(default=_T.color, description="max shift drawn per band (colour jitter), in band standard deviations")
    patience = luigi.IntParameter(default=_T.patience, description="early stopping: epochs without a better val IoU; 0: off")
    seed = luigi.IntParameter(default=_T.seed)
    precision = luigi.ChoiceParameter(
        default=_T.precision, choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
        significant=TrainParams.is_significant("precision"),
        description="auto: bfloat16 on CPUs with AMX/AVX512-BF16 and on GPUs, else float32 (the demo: float32)")
    workers = luigi.IntParameter(default=_T.workers, significant=TrainParams.is_significant("workers"),
                                 description="threads reading and augmenting tiles (0: auto)")
    cache_mb = luigi.IntParameter(default=_T.cache_mb, significant=TrainParams.is_significant("cache_mb"),
                                  description="decoded tiles kept in memory (LRU)")
    tensorboard_port = luigi.IntParameter(default=0, significant=False,
                                          description="> 0: serve TensorBoard on this port during training")


class predict(luigi.Config):
    """PredictImage / Predict. ``context``: pixels of image every tile core sees around it.
    ``auto`` (the network's receptive margin) makes the stitched probabilities equal the
    whole-image prediction whatever the tiling's overlap (windows are read from the source
    image); ``0`` predicts the tile files as they are (fastest; exact only if the tiling's
    overlap is at least twice the network's reach). The rest only changes how inference runs."""

    context = luigi.Parameter(default="auto", description="auto, or pixels of context around each tile core; 0: the tiles as they are")

    tta = luigi.ChoiceParameter(default="8", choices=["1", "2", "4", "8"], description="test-time augmentation: each window's probabilities averaged over this many of its symmetries (2: mirrored; 4: all flips; 8: flips and transposes), n times the inference compute")

    window = luigi.IntParameter(default=2048, significant=False, description="with context: neighbouring tile cores are predicted together in windows of about this many pixels a side, so the context margin is a small share of the work (same output whatever the value; memory ~ window²); 0: one window per tile")
    batch_size = luigi.IntParameter(default=8, significant=False, description="inference batch, in 512² windows (a larger window counts as several; memory ~ batch x 512²)")
    precision = luigi.ChoiceParameter(
        default="auto", choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"], significant=False)
    compress = luigi.ChoiceParameter(default="zstd", choices=["zstd", "deflate", "lzw", "none"], significant=False)
    engine = luigi.ChoiceParameter(default="auto", choices=["auto", "keras", "onnxruntime", "openvino"], significant=False,
                                   description="CPU inference engine for the same weights (models/engines.py); auto: ONNX Runtime on CPU-only float32 hosts when installed, else Keras")


def class_spec() -> tuple[str, tuple[str, ...], str]:
    """``(class_field, classes, default_class)`` of ``[data]``; ``("", (), "")``: one class (as
    before types). The typed demo supplies ``condition`` and its conditions unless they are set."""
    cfg = data()
    field, classes = cfg.class_field.strip(), tuple(c.strip() for c in cfg.classes.split(",") if c.strip())
    if cfg.demo_typed and not cfg.images:
        field, classes = field or typed_demo.FIELD, classes or typed_demo.CONDITIONS
    if not (field and classes):
        if field or classes:
            raise ValueError("[data] class_field and classes go together (the label property, its values in order)")
        return "", (), ""
    if len(set(classes)) != len(classes) or {"footprint", "boundary", "contact"} & set(classes):
        raise ValueError(f"[data] classes must be distinct and not footprint, boundary or contact: {classes}")
    default = cfg.default_class.strip() or classes[0]
    if default not in classes:
        raise ValueError(f"[data] default_class {default!r} is not one of [data] classes {', '.join(classes)}")
    return field, classes, default


def train_params() -> TrainParams:
    """``models.params.TrainParams`` of ``[train]`` (its defaults and significance are declared there)."""
    return TrainParams.from_kwargs(train().param_kwargs)


def predict_context() -> int | str:
    """``[predict] context``, parsed once: ``"auto"`` or pixels >= 0."""
    value = predict().context
    v = str(value).strip().lower()
    if v == "auto":
        return "auto"
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"[predict] context must be 'auto' or pixels >= 0, got {value!r}")
    return n
