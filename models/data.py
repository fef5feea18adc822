"""The training data pipeline: tiles and masks on disk -> seeded, augmented batches.

- **Input pipeline** (:class:`TileDataset`, a ``keras.utils.PyDataset``): tiles and masks are
  read from disk by worker threads, cropped and augmented per sample; decoded tiles are kept in
  a byte-bounded LRU cache (``[train] cache_mb``), so memory stays bounded whatever the size of
  the training set.
- **Augmentation**: seeded per (seed, epoch, sample): flips, 90° rotations, brightness and
  contrast, identical geometry for image and mask. A resumed run sees the same samples as an
  uninterrupted one.
- **Rare building types** (``class_share``, masks with one footprint band per class): at least
  that share of each epoch's crops is drawn for each class, from the tiles that hold it
  (``class_px`` of the mask index), and centred on one of that class's pixels; the rest are drawn
  as usual. Without types nothing changes.
- **Normalisation**: per-band mean/std of the training tiles (nodata excluded)
  (:func:`band_statistics`), stored in the model's first layer (:class:`models.Standardize`), so
  inference uses the same numbers.
"""
from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from rasterio.windows import Window

from footprints.errors import InputError
from footprints.raster import raster_info, read_array


def band_statistics(arrays, nodata=None) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over an iterable of (H, W, bands) arrays; pixels
    whose bands all equal ``nodata`` are left out. Accumulates in float64 (bounded memory)."""
    s = sq = n = None
    for a in arrays:
        a = np.asarray(a)
        flat = a.reshape(-1, a.shape[-1]).astype(np.float64)
        if nodata is not None:
            flat = flat[np.any(flat != nodata, axis=1)]
        if s is None:
            s, sq, n = np.zeros(flat.shape[1]), np.zeros(flat.shape[1]), 0
        if flat.shape[1] != s.shape[0]:
            raise ValueError(f"band count changed from {s.shape[0]} to {flat.shape[1]}")
        s += flat.sum(0)
        sq += (flat * flat).sum(0)
        n += flat.shape[0]
    if not n:
        raise ValueError("no valid pixels to compute band statistics from")
    mean = s / n
    std = np.sqrt(np.maximum(sq / n - mean * mean, 0.0))
    std[std == 0] = 1.0
    return [float(v) for v in mean], [float(v) for v in std]


@dataclass
class Augment:
    flips: bool = True
    rotations: bool = True
    brightness: float = 0.1   # shift, in band standard deviations
    contrast: float = 0.1     # relative scale around the band mean
    color: float = 0.0        # extra shift drawn per band, in band standard deviations


def augment_pair(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, aug: Augment,
                 mean=None, std=None, nodata=None, value_range=None) -> tuple[np.ndarray, np.ndarray]:
    """Random flips/rot90 applied identically to image and mask (H, W, C); brightness, contrast
    and colour applied to the image only (float32 out), nodata pixels untouched. Always draws the
    same number of random values, so the stream stays aligned whatever the options."""
    k, fh, fv = int(rng.integers(4)), rng.random() < 0.5, rng.random() < 0.5
    c = 1.0 + rng.uniform(-1, 1) * aug.contrast
    b = rng.uniform(-1, 1) * aug.brightness + rng.uniform(-1, 1, image.shape[-1]) * aug.color
    img, msk = image, mask
    # geometry first, on the (small) source dtype; the one copy below makes the views contiguous
    if aug.flips and fh:
        img, msk = img[:, ::-1], msk[:, ::-1]
    if aug.flips and fv:
        img, msk = img[::-1], msk[::-1]
    if aug.rotations and k and (img.shape[0] == img.shape[1] or k == 2):
        img, msk = np.rot90(img, k, axes=(0, 1)), np.rot90(msk, k, axes=(0, 1))
    out = np.array(img, dtype=np.float32)  # contiguous copy
    if aug.contrast or aug.brightness or aug.color:
        m = np.asarray(mean if mean is not None else out.reshape(-1, out.shape[-1]).mean(0), np.float32)
        sd = np.asarray(std if std is not None else 1.0, np.float32)
        # (x - m) * c + m + b * sd  ==  x * c + (m * (1 - c) + b * sd), in place
        out *= np.float32(c)
        out += (m * np.float32(1.0 - c) + b.astype(np.float32) * sd).astype(np.float32)
        if value_range is not None:
            np.clip(out, value_range[0], value_range[1], out=out)
        if nodata is not None:
            invalid = np.all(np.asarray(img) == nodata, axis=-1)
            out[invalid] = nodata
    return out, np.ascontiguousarray(msk)


def dtype_range(dtype) -> tuple[float, float] | None:
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    return None


def effective_crop(crop_size: int, shapes, align: int) -> int:
    """The square crop used for training: ``crop_size`` (0: whole tiles) limited by the smallest
    tile, rounded down to a multiple of ``align`` (the U-Net's 2**depth)."""
    smallest = min(min(h, w) for h, w in shapes)
    c = min(crop_size, smallest) if crop_size > 0 else smallest
    c = (c // align) * align
    if c < align:
        raise ValueError(f"tiles of {smallest} px are smaller than the network's alignment {align} px "
                         "(2**depth): lower [train] depth or use larger tiles")
    return c


class TileCache:
    """Thread-safe LRU of decoded arrays, bounded in bytes (0 disables it)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._d: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: str) -> np.ndarray:
        with self._lock:
            if path in self._d:
                self._d.move_to_end(path)
                return self._d[path]
        arr = read_array(path)
        if self.max_bytes and arr.nbytes <= self.max_bytes:
            with self._lock:
                if path not in self._d:
                    self._d[path] = arr
                    self._bytes += arr.nbytes
                    while self._bytes > self.max_bytes:
                        _, old = self._d.popitem(last=False)
                        self._bytes -= old.nbytes
        return arr

    def crop(self, path: str, row: int, col: int, size_r: int, size_c: int) -> np.ndarray:
        if self.max_bytes:
            return self.get(path)[row:row + size_r, col:col + size_c]
        return read_array(path, Window(col, row, size_c, size_r))


class TileDataset(keras.utils.PyDataset):
    """Batches of (image float32 (B, S, S, bands), mask float32 (B, S, S, classes) in [0, 1]).

    ``training=True``: ``samples_per_epoch`` random crops per epoch, seeded by (seed, epoch,
    position), augmented. ``training=False``: the centre crop of every tile, in order.
    Reading happens in ``workers`` threads of Keras' enqueuer.
    """

    def __init__(self, items, batch_size: int, crop: int, training: bool, seed: int = 0,
                 samples_per_epoch: int = 0, augment: Augment | None = None, mean=None, std=None,
                 nodata=None, value_range=None, initial_epoch: int = 0, cache: TileCache | None = None,
                 workers: int = 1, max_queue_size: int = 8, class_share: float = 0.0):
        super().__init__(workers=max(1, workers), use_multiprocessing=False, max_queue_size=max_queue_size)
        if not items:
            raise ValueError("TileDataset: no tiles")
        self.items = list(items)
        self.batch_size, self.crop, self.training, self.seed = int(batch_size), int(crop), training, int(seed)
        self.samples = int(samples_per_epoch) if training and samples_per_epoch else len(self.items)
        self.augment = augment or Augment(False, False, 0.0, 0.0)
        self.mean, self.std, self.nodata, self.value_range = mean, std, nodata, value_range
        self.epoch = int(initial_epoch)
        self.cache = cache or TileCache(0)
        self._orders: dict[int, np.ndarray] = {}
        self._targets: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        # building types: per tile, the pixels of each class (MakeMasks' class_px)
        px = [it.get("class_px") for it in self.items]
        self.class_px = np.asarray(px, dtype=np.int64) if training and class_share > 0 and all(px) else None
        self.class_share = float(class_share) if self.class_px is not None else 0.0

    def __len__(self):
        if self.training:
            return max(1, self.samples // self.batch_size)  # full batches only: one traced shape
        return math.ceil(self.samples / self.batch_size)

    def on_epoch_end(self):
        if self.training:
            self.epoch += 1

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's sequence of tile indexes (each tile once per pass, shuffled)."""
        with self._lock:
            if epoch not in self._orders:
                rng = np.random.default_rng([self.seed, epoch, 0])
                order, target = self._draw(rng)
                self._orders = {epoch: order, **{e: o for e, o in self._orders.items() if e >= epoch - 1}}
                self._targets = {epoch: target, **{e: o for e, o in self._targets.items() if e >= epoch - 1}}
            return self._orders[epoch]

    def target(self, epoch: int) -> np.ndarray:
        """Per position of the epoch: the class its crop is centred on, -1 for a free crop."""
        self.order(epoch)
        with self._lock:
            return self._targets[epoch]

    def _draw(self, rng) -> tuple[np.ndarray, np.ndarray]:
        """(tile indexes, target classes) of an epoch. Without building types every tile once
        per pass, shuffled. With them, ``class_share`` of the positions (at most an equal share
        each) go to each class present in some tile: tiles that hold it, centred on it."""
        n, k = self.samples, len(self.items)
        reserved, classes = [], []
        if self.class_px is not None:
            share = min(self.class_share, 1.0 / self.class_px.shape[1])
            for c in range(self.class_px.shape[1]):
                has = np.flatnonzero(self.class_px[:, c] > 0)
                if len(has):
                    m = min(n - sum(map(len, reserved)), math.ceil(share * n))
                    reserved.append(has[rng.integers(0, len(has), m)])
                    classes.append(np.full(m, c))
        rest = n - sum(map(len, reserved))
        reps = math.ceil(rest / k)
        free = np.concatenate([rng.permutation(k) for _ in range(reps)])[:rest] if rest else np.zeros(0, np.int64)
        if not reserved:
            return free, np.full(n, -1)
        order = np.concatenate([*reserved, free])
        target = np.concatenate([*classes, np.full(rest, -1)])
        mix = rng.permutation(n)
        return order[mix], target[mix]

    def sample(self, position: int, epoch: int):
        """One (image, mask) pair (mask in its file's 0/255 uint8): deterministic in (seed,
        epoch, position)."""
        s = self.crop
        if self.training:
            item = self.items[int(self.order(epoch)[position])]
            rng = np.random.default_rng([self.seed, epoch, 1 + position])
            h, w = item["height"], item["width"]
            r, c = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            cls = int(self.target(epoch)[position]) if self.class_share else -1
            if cls >= 0:  # a rare-class crop: centred on one of the class's pixels
                ys, xs = np.nonzero(self.cache.get(item["mask"])[..., cls])
                if len(ys):
                    j = int(rng.integers(len(ys)))
                    r = int(np.clip(ys[j] - s // 2, 0, h - s))
                    c = int(np.clip(xs[j] - s // 2, 0, w - s))
        else:
            item = self.items[position]
            h, w = item["height"], item["width"]
            r, c = (h - s) // 2, (w - s) // 2
        img = self.cache.crop(item["tile"], r, c, s, s)
        msk = self.cache.crop(item["mask"], r, c, s, s)
        if img.shape[:2] != (s, s) or msk.shape[:2] != (s, s):
            raise ValueError(f"{item['tile']} / {item['mask']}: expected at least {s}x{s} px at ({r}, {c}), "
                             f"got image {img.shape[:2]} and mask {msk.shape[:2]}")
        if self.training:
            img, msk = augment_pair(img, msk, rng, self.augment, self.mean, self.std, self.nodata, self.value_range)
        return img, msk

    def __getitem__(self, idx):
        return self.batch(idx, self.epoch)

    def batch(self, idx: int, epoch: int):
        """Batch ``idx`` of epoch ``epoch``."""
        lo = idx * self.batch_size
        hi = min(lo + self.batch_size, self.samples)
        if lo >= hi:
            raise IndexError(idx)
        x = y = None
        for j, p in enumerate(range(lo, hi)):
            img, msk = self.sample(p, epoch)
            if x is None:
                x = np.empty((hi - lo, *img.shape), np.float32)
                y = np.empty((hi - lo, *msk.shape), np.float32)
            x[j] = img
            np.multiply(msk, np.float32(1 / 255), out=y[j], casting="unsafe")
        return x, y


def load_batches(items, crop: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centre crops of ``items`` as in-memory arrays (small data only: tests, benchmarks)."""
    ds = TileDataset(items[:limit] if limit else items, batch_size=len(items), crop=crop, training=False)
    return ds[0]


def inspect_items(items, what: str) -> dict:
    """Bands/dtype/nodata of the tiles and classes of the masks; all must agree."""
    if not items:
        raise InputError(f"the {what} split has no tiles")
    first = raster_info(items[0]["tile"])
    first_mask = raster_info(items[0]["mask"])
    for it in items:
        ti = raster_info(it["tile"]) if it is not items[0] else first
        if ti["bands"] != first["bands"]:
            raise InputError(it["tile"], f"{ti['bands']} bands, but {items[0]['tile']} has {first['bands']}")
        mi = raster_info(it["mask"]) if it is not items[0] else first_mask
        if mi["bands"] != first_mask["bands"]:
            raise InputError(it["mask"], f"{mi['bands']} bands, but {items[0]['mask']} has {first_mask['bands']}")
        if (mi["width"], mi["height"]) != (ti["width"], ti["height"]):
            raise InputError(it["mask"], f"{mi['width']}x{mi['height']} px, but its tile {it['tile']} is "
                             f"{ti['width']}x{ti['height']}")
        it.setdefault("width", ti["width"])
        it.setdefault("height", ti["height"])
    meta = {"bands": first["bands"], "dtype": first["dtype"], "nodata": first["nodata"],
            "n_classes": first_mask["bands"]}
    names = mask_channels(items[0]["mask"], first_mask["bands"])
    if names is not None:  # building types: one footprint band per class
        meta["channels"] = names
    elif first_mask["bands"] not in (1, 3):
        raise InputError(items[0]["mask"], f"masks need 1 or 3 bands (or band names in their index.json: "
                                           f"building types), got {first_mask['bands']}")
    return meta


def mask_channels(mask_path, bands: int) -> list[str] | None:
    """The band names of a mask with building types (MakeMasks' ``index.json`` beside it, when it
    lists ``classes``), else None."""
    index = Path(mask_path).parent / "index.json"
    if not index.is_file():
        return None
    d = json.loads(index.read_text())
    names = d.get("bands")
    if not d.get("classes") or not names:
        return None
    if len(names) != bands:
        raise InputError(mask_path, f"{bands} bands, but {index} names {len(names)}: {names}")
    return [str(n) for n in names]


def endless_batches(ds: TileDataset):
    """``ds``'s batches, epoch after epoch, without end: epoch ``e``'s are ``ds.batch(i, e)`` for
    ``i`` in ``0..len-1``, from ``ds.epoch`` on, which is left as it is (a resumed run continues
    where it stopped; the validation set, ``training=False``, repeats itself). ``ds.workers`` threads read ahead, at
    most ``ds.max_queue_size`` batches, and batches come out in order (as Keras' enqueuer)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    def positions():
        epoch = ds.epoch
        while True:
            for i in range(len(ds)):
                yield epoch, i
            epoch += 1 if ds.training else 0

    def read(pos):
        return ds.batch(pos[1], pos[0])

    with ThreadPoolExecutor(max(1, ds.workers), thread_name_prefix="tiles") as pool:
        pending = []
        for pos in positions():
            pending.append(pool.submit(read, pos))
            if len(pending) > max(1, ds.max_queue_size):
                yield pending.pop(0).result()


def tf_input(ds: TileDataset):
    """The optional ``tf.data`` input path (TensorFlow backend): :func:`endless_batches` as a
    ``tf.data.Dataset`` with tf.data's autotuning off.

    Handing Keras the PyDataset itself costs a stall at every epoch on a CPU host with one
    reader thread: Keras then wraps it in ``prefetch(AUTOTUNE)``, rebuilds the iterator when an
    epoch's batches run out, and the old iterator's destructor waits for tf.data's autotuning
    thread, whose sleep doubles up to a minute (seen on a 2-core AMD EPYC: epochs of 26 s of
    steps took 41 s, one 82 s, with the CPUs idle). An endless dataset is never rebuilt, and
    without autotuning there is no such thread; ``fit`` needs ``steps_per_epoch`` (and
    ``validation_steps``) with it."""
    import tensorflow as tf  # noqa: PLC0415 - the TensorFlow backend's own input path

    x, y = ds.batch(0, ds.epoch)
    spec = (tf.TensorSpec((None, *x.shape[1:]), tf.float32), tf.TensorSpec((None, *y.shape[1:]), tf.float32))
    out = tf.data.Dataset.from_generator(lambda: endless_batches(ds), output_signature=spec)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    return out.with_options(options).prefetch(2)
