"""TrainModel: train the U-Net on the training split's tiles, validate on the validation split.

Pure Keras 3 (no backend-specific calls), so the same loop runs with ``KERAS_BACKEND=jax`` or
``torch``.

- **Input pipeline** (:class:`TileDataset`, a ``keras.utils.PyDataset``): tiles and masks are
  read from disk by worker threads, cropped and augmented per sample; decoded tiles are kept in
  a byte-bounded LRU cache (``[train] cache_mb``), so memory stays bounded whatever the size of
  the training set.
- **Augmentation**: seeded per (seed, epoch, sample): flips, 90° rotations, brightness and
  contrast, identical geometry for image and mask. A resumed run sees the same samples as an
  uninterrupted one.
- **Normalisation**: per-band mean/std of the training tiles (nodata excluded), stored in the
  model's first layer (:class:`models.Standardize`), so inference uses the same numbers.
- **Loss schedule**: ``warmup_loss`` for ``warmup_epochs`` (BCE to leave the all-background
  minimum), then ``loss`` (e.g. soft Jaccard); or a combined loss such as ``bce+jaccard``.
- **Hardware**: mixed bfloat16 where the CPU has AMX/AVX512-BF16 and on GPUs (float16 on GPUs
  without bf16), GPU when visible, ``keras.distribution.DataParallel`` over several GPUs (JAX).
- **Checkpoints**: every epoch (weights + optimizer state + state.json as the commit point).
  A killed run resumes after the last completed epoch.
- **Logs**: TensorBoard (tracking URL on the Luigi task), ``history.csv``, ``training_curve.png``.
- **Selection**: early stopping on validation IoU; the best epoch's weights are saved.
- **Output**: ``<workdir>/models/<key>/model.keras`` (atomic), ``model.json`` beside it.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import luigi
import numpy as np

from tasks.config import params_key, workdir

log = logging.getLogger("luigi-interface")

# ---------------------------------------------------------------- hardware


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """AMX-BF16 or AVX512-BF16: bfloat16 matmuls/convs run natively (oneDNN)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def gpu_devices() -> list[str]:
    import keras

    try:
        return list(keras.distribution.list_devices("gpu"))
    except Exception:  # noqa: BLE001 - backends without the distribution API: no GPU support here
        return []


def gpu_has_bf16() -> bool:
    """Compute capability >= 8.0 (Ampere and later) according to nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        return bool(out) and all(float(v) >= 8.0 for v in out)
    except (OSError, ValueError, subprocess.SubprocessError):
        return False


def resolve_precision(requested: str = "auto") -> str:
    """The Keras dtype policy for ``[train]/[predict] precision``."""
    if requested != "auto":
        return requested
    if gpu_devices():
        return "mixed_bfloat16" if gpu_has_bf16() else "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def jit_setting():
    """XLA on CPU is several times slower than TensorFlow's oneDNN kernels for these convs."""
    import keras

    if keras.backend.backend() == "tensorflow" and not gpu_devices():
        return False
    return "auto"


# ---------------------------------------------------------------- data: pure helpers


def read_array(path, window=None) -> np.ndarray:
    """(H, W, bands) array of a GeoTIFF (optionally a window); errors name the file."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            arr = src.read(window=window)
    except rasterio.errors.RasterioIOError as e:
        raise ValueError(f"{path}: cannot read raster: {e}") from None
    return np.moveaxis(arr, 0, -1)


def raster_info(path) -> dict:
    import rasterio

    try:
        with rasterio.open(path) as src:
            return {"bands": src.count, "dtype": src.dtypes[0], "nodata": src.nodata,
                    "width": src.width, "height": src.height}
    except rasterio.errors.RasterioIOError as e:
        raise ValueError(f"{path}: cannot read raster: {e}") from None


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
        from rasterio.windows import Window

        return read_array(path, Window(col, row, size_c, size_r))


# ---------------------------------------------------------------- data: the Keras dataset


def _tile_dataset_class():
    """The PyDataset subclass, defined on first use so that importing this module (as every
    ``luigi --module pipeline`` run does) does not import Keras and its backend."""
    global _TileDataset
    if _TileDataset is not None:
        return _TileDataset
    import keras

    class TileDataset(keras.utils.PyDataset):
        """Batches of (image float32 (B, S, S, bands), mask float32 (B, S, S, classes) in [0, 1]).

        ``training=True``: ``samples_per_epoch`` random crops per epoch, seeded by (seed, epoch,
        position), augmented. ``training=False``: the centre crop of every tile, in order.
        Reading happens in ``workers`` threads of Keras' enqueuer.
        """

        def __init__(self, items, batch_size: int, crop: int, training: bool, seed: int = 0,
                     samples_per_epoch: int = 0, augment: Augment | None = None, mean=None, std=None,
                     nodata=None, value_range=None, initial_epoch: int = 0, cache: TileCache | None = None,
                     workers: int = 1, max_queue_size: int = 8):
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
            self._lock = threading.Lock()

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
                    reps = math.ceil(self.samples / len(self.items))
                    self._orders = {epoch: np.concatenate([rng.permutation(len(self.items))
                                                           for _ in range(reps)])[:self.samples],
                                    **{e: o for e, o in self._orders.items() if e >= epoch - 1}}
                return self._orders[epoch]

        def sample(self, position: int, epoch: int):
            """One (image, mask) pair (mask in its file's 0/255 uint8): deterministic in (seed,
            epoch, position)."""
            s = self.crop
            if self.training:
                item = self.items[int(self.order(epoch)[position])]
                rng = np.random.default_rng([self.seed, epoch, 1 + position])
                h, w = item["height"], item["width"]
                r, c = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
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
            lo = idx * self.batch_size
            hi = min(lo + self.batch_size, self.samples)
            if lo >= hi:
                raise IndexError(idx)
            epoch = self.epoch
            x = y = None
            for j, p in enumerate(range(lo, hi)):
                img, msk = self.sample(p, epoch)
                if x is None:
                    x = np.empty((hi - lo, *img.shape), np.float32)
                    y = np.empty((hi - lo, *msk.shape), np.float32)
                x[j] = img
                np.multiply(msk, np.float32(1 / 255), out=y[j], casting="unsafe")
            return x, y

    _TileDataset = TileDataset
    return TileDataset


_TileDataset = None


def TileDataset(*args, **kwargs):  # noqa: N802 - stands in for the lazily defined class
    """Batches of (image float32 (B, S, S, bands), mask float32 (B, S, S, classes) in [0, 1]);
    see :func:`_tile_dataset_class` (arguments: items, batch_size, crop, training, seed,
    samples_per_epoch, augment, mean, std, nodata, value_range, initial_epoch, cache, workers)."""
    return _tile_dataset_class()(*args, **kwargs)


def load_batches(items, crop: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centre crops of ``items`` as in-memory arrays (small data only: tests, benchmarks)."""
    ds = TileDataset(items[:limit] if limit else items, batch_size=len(items), crop=crop, training=False)
    return ds[0]


# ---------------------------------------------------------------- training


@dataclass
class TrainParams:
    """Training hyper-parameters; the defaults are ``[train]``'s (see tasks/config.py)."""

    depth: int = 4
    base_filters: int = 16
    batchnorm: bool = False
    epochs: int = 15
    batch_size: int = 4
    crop_size: int = 256
    samples_per_epoch: int = 400
    learning_rate: float = 2e-3
    loss: str = "bce+jaccard"
    warmup_loss: str = "bce"
    warmup_epochs: int = 0
    class_weights: tuple | None = None
    flips: bool = True
    rotations: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    color: float = 0.25
    patience: int = 8
    seed: int = 0
    # how the run executes (no effect on the result beyond float rounding)
    precision: str = "auto"
    workers: int = 2
    cache_mb: int = 1024
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls) -> "TrainParams":
        from tasks.config import train

        t = train()
        cw = tuple(float(v) for v in t.class_weights.split(",") if v.strip()) or None
        return cls(depth=t.depth, base_filters=t.base_filters, batchnorm=t.batchnorm, epochs=t.epochs, batch_size=t.batch_size,
                   crop_size=t.crop_size, samples_per_epoch=t.samples_per_epoch, learning_rate=t.learning_rate,
                   loss=t.loss, warmup_loss=t.warmup_loss, warmup_epochs=t.warmup_epochs, class_weights=cw,
                   flips=t.flips, rotations=t.rotations, brightness=t.brightness, contrast=t.contrast, color=t.color,
                   patience=t.patience, seed=t.seed, precision=t.precision, workers=t.workers,
                   cache_mb=t.cache_mb)

    def significant(self) -> dict:
        d = asdict(self)
        for k in ("precision", "workers", "cache_mb", "extra"):
            d.pop(k)
        return d

    def phases(self) -> list[tuple[int, int, str]]:
        """[(first epoch, end epoch, loss spec)], epochs 0-based, end exclusive."""
        w = max(0, min(self.warmup_epochs, self.epochs))
        out = [(0, w, self.warmup_loss)] if w else []
        if self.epochs > w:
            out.append((w, self.epochs, self.loss))
        return out


def _atomic_path(path: Path) -> Path:
    """A temp name in the same folder keeping the suffixes Keras checks (``.weights.h5``)."""
    return path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")


def save_weights_atomic(model, path: Path) -> None:
    tmp = _atomic_path(path)
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def optimizer_arrays(optimizer) -> list[np.ndarray]:
    import keras

    return [keras.ops.convert_to_numpy(v) for v in optimizer.variables]


def save_optimizer_atomic(optimizer, path: Path) -> None:
    tmp = _atomic_path(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, *optimizer_arrays(optimizer))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def restore_optimizer(optimizer, model, path: Path) -> None:
    with np.load(path) as z:
        arrays = [z[f"arr_{i}"] for i in range(len(z.files))]
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = optimizer.variables
    if len(variables) != len(arrays) or any(tuple(v.shape) != a.shape for v, a in zip(variables, arrays)):
        raise ValueError(f"{path}: optimizer checkpoint does not match the model "
                         f"({len(arrays)} arrays for {len(variables)} variables)")
    for v, a in zip(variables, arrays):
        v.assign(a)


def write_json_atomic(path: Path, obj) -> None:
    tmp = _atomic_path(path)
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=float)
    os.replace(tmp, path)


def write_history_csv(path: Path, history: list[dict]) -> None:
    keys = []
    for row in history:
        keys += [k for k in row if k not in keys]
    tmp = _atomic_path(path)
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


def plot_history(path: Path, history: list[dict], best_epoch: int | None = None) -> None:
    """Loss and IoU/F1 per epoch (training and validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", a1), ("val_loss", a1), ("iou", a2), ("val_iou", a2), ("f1", a2), ("val_f1", a2)):
        ys = [r.get(key) for r in history]
        if any(y is not None for y in ys):
            ax.plot(ep, [np.nan if y is None else y for y in ys], marker=".", label=key,
                    linestyle="--" if key.startswith("val_") else "-")
    for ax, title in ((a1, "loss"), (a2, "pixel IoU / F1 (footprint)")):
        if best_epoch:
            ax.axvline(best_epoch, color="grey", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = _atomic_path(path)
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def EpochCheckpoint(*args, **kwargs):  # noqa: N802 - a Keras callback, defined on first use
    import keras

    class _EpochCheckpoint(keras.callbacks.Callback):
        """Per epoch: the epoch's weights and optimizer state, best weights, history.csv, the curve,
        then ``state.json`` (the commit point, written last). Also early stopping on the monitored
        metric (only counting epochs after the warmup)."""

        def __init__(self, run_dir: Path, state: dict, monitor: str, patience: int, warmup_epochs: int, on_epoch=None):
            super().__init__()
            self.run_dir, self.state, self.monitor = Path(run_dir), state, monitor
            self.ckpt = self.run_dir / "checkpoints"
            self.patience, self.warmup_epochs, self.on_epoch = patience, warmup_epochs, on_epoch
            self.stopped = False

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items()}
            n = epoch + 1
            st = self.state
            st["history"] = [r for r in st["history"] if r["epoch"] < n] + [{"epoch": n, "loss_spec": st["loss_spec"], **logs}]
            value = logs.get(self.monitor)
            old_best = st.get("best_weights")
            if value is not None and (st.get("best") is None or value > st["best"]):
                st.update(best=value, best_epoch=n, wait=0, best_weights=f"best-{n:04d}.weights.h5")
                save_weights_atomic(self.model, self.ckpt / st["best_weights"])
            elif n > self.warmup_epochs:
                st["wait"] = st.get("wait", 0) + 1
            old_last = [st.get("last_weights"), st.get("last_optimizer")]
            st["last_weights"], st["last_optimizer"] = f"epoch-{n:04d}.weights.h5", f"epoch-{n:04d}.optimizer.npz"
            save_weights_atomic(self.model, self.ckpt / st["last_weights"])
            save_optimizer_atomic(self.model.optimizer, self.ckpt / st["last_optimizer"])
            st["epoch"] = n
            if self.patience and st["wait"] >= self.patience:
                st["stopped_early"] = True
                self.stopped = True
                self.model.stop_training = True
            write_history_csv(self.run_dir / "history.csv", st["history"])
            try:
                plot_history(self.run_dir / "training_curve.png", st["history"], st.get("best_epoch"))
            except Exception as e:  # noqa: BLE001 - a plot must never kill a training run
                log.warning("training curve not written: %s", e)
            write_json_atomic(self.ckpt / "state.json", st)
            for name in old_last + [old_best]:  # superseded files, only after the commit point
                if name and name not in (st["last_weights"], st["last_optimizer"], st.get("best_weights")):
                    (self.ckpt / name).unlink(missing_ok=True)
            if self.on_epoch:
                self.on_epoch(n, logs, st)

    return _EpochCheckpoint(*args, **kwargs)


def _tensorboard_callback(log_dir: Path):
    import importlib.util

    import keras

    if importlib.util.find_spec("tensorflow") is None:
        log.warning("TensorBoard logs disabled: Keras' TensorBoard callback needs tensorflow installed")
        return None
    try:
        return keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, update_freq="epoch",
                                           profile_batch=0)
    except Exception as e:  # noqa: BLE001 - e.g. JAX/torch without tensorboard installed
        log.warning("TensorBoard logs disabled: %s", e)
        return None


def build_model_for(bands: int, n_classes: int, params: TrainParams, policy: str, mean, std, nodata, info: dict):
    from models import build_unet

    return build_unet(bands, n_classes, depth=params.depth, base_filters=params.base_filters, seed=params.seed,
                      batchnorm=params.batchnorm, dtype_policy=policy, mean=mean, std=std, nodata=nodata, info=info)


def make_optimizer(params: TrainParams, total_steps: int, policy: str):
    import keras

    # linear warm-up over the first steps (a full-size first Adam step can kill every ReLU of a
    # network without batch norm: all-background, IoU 0 for good), then cosine decay
    warmup = min(100, total_steps // 10)
    lr = keras.optimizers.schedules.CosineDecay(0.0 if warmup else params.learning_rate,
                                                decay_steps=max(1, total_steps - warmup), alpha=0.05,
                                                warmup_target=params.learning_rate if warmup else None,
                                                warmup_steps=warmup)
    opt = keras.optimizers.Adam(learning_rate=lr)
    if policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def compile_model(model, optimizer, loss_spec: str, class_weights=None) -> None:
    from models import PixelF1, PixelIoU, make_loss

    model.compile(optimizer=optimizer, loss=make_loss(loss_spec, class_weights),
                  metrics=[PixelIoU(name="iou"), PixelF1(name="f1")], jit_compile=jit_setting())


def inspect_items(items, what: str) -> dict:
    """Bands/dtype/nodata of the tiles and classes of the masks; all must agree."""
    if not items:
        raise ValueError(f"the {what} split has no tiles")
    first = raster_info(items[0]["tile"])
    first_mask = raster_info(items[0]["mask"])
    for it in items:
        ti = raster_info(it["tile"]) if it is not items[0] else first
        if ti["bands"] != first["bands"]:
            raise ValueError(f"{it['tile']}: {ti['bands']} bands, but {items[0]['tile']} has {first['bands']}")
        mi = raster_info(it["mask"]) if it is not items[0] else first_mask
        if mi["bands"] != first_mask["bands"]:
            raise ValueError(f"{it['mask']}: {mi['bands']} bands, but {items[0]['mask']} has {first_mask['bands']}")
        if (mi["width"], mi["height"]) != (ti["width"], ti["height"]):
            raise ValueError(f"{it['mask']}: {mi['width']}x{mi['height']} px, but its tile {it['tile']} is "
                             f"{ti['width']}x{ti['height']}")
        it.setdefault("width", ti["width"])
        it.setdefault("height", ti["height"])
    if first_mask["bands"] not in (1, 3):
        raise ValueError(f"{items[0]['mask']}: masks need 1 or 3 bands, got {first_mask['bands']}")
    return {"bands": first["bands"], "dtype": first["dtype"], "nodata": first["nodata"],
            "n_classes": first_mask["bands"]}


def setup_distribution(batch_size: int) -> tuple[int, list[str]]:
    """DataParallel over several GPUs (JAX backend); returns the (possibly rounded) batch size."""
    import keras

    gpus = gpu_devices()
    if len(gpus) > 1:
        if keras.backend.backend() == "jax":
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=gpus))
            if batch_size % len(gpus):
                batch_size = math.ceil(batch_size / len(gpus)) * len(gpus)
                log.warning("batch size rounded up to %d for %d GPUs", batch_size, len(gpus))
        else:
            log.warning("%d GPUs visible, but Keras distributes over several only with KERAS_BACKEND=jax; "
                        "using one", len(gpus))
    return batch_size, gpus


def train_model(train_items, val_items, run_dir, params: TrainParams, callbacks=(), status=None,
                verbose: int = 2) -> Path:
    """Train (or resume training) into ``run_dir``; returns ``run_dir/model.keras``.

    ``train_items``/``val_items``: dicts with ``tile`` and ``mask`` paths (``width``/``height``
    are filled in when missing). ``status(epoch, logs, state)`` is called after every epoch.
    An existing ``checkpoints/state.json`` resumes after its last completed epoch.
    """
    import keras

    from models import save_model_atomic

    run_dir = Path(run_dir)
    final = run_dir / "model.keras"
    if final.exists():
        return final
    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for stale in list(run_dir.glob(".tmp-*")) + list(ckpt.glob(".tmp-*")):  # left by a killed run
        stale.unlink(missing_ok=True)
    for stale in run_dir.glob(".model-*"):  # save_model_atomic's temp dir
        shutil.rmtree(stale, ignore_errors=True)
    train_items = [dict(it) for it in train_items]
    val_items = [dict(it) for it in val_items]
    meta = inspect_items(train_items, "training")
    if val_items:
        vmeta = inspect_items(val_items, "validation")
        if (vmeta["bands"], vmeta["n_classes"]) != (meta["bands"], meta["n_classes"]):
            raise ValueError(f"validation tiles have {vmeta['bands']} bands / {vmeta['n_classes']} classes, "
                             f"training tiles {meta['bands']} / {meta['n_classes']}")

    state_path = ckpt / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state and state.get("params") != params.significant():
        log.warning("%s: checkpoint from other parameters; starting over", state_path)
        state = None
    if state is None:
        cache_stats = TileCache(0)
        mean, std = band_statistics((cache_stats.get(it["tile"])[::2, ::2] for it in train_items), meta["nodata"])
        state = {"params": params.significant(), "epoch": 0, "history": [], "best": None, "best_epoch": None,
                 "wait": 0, "mean": mean, "std": std, "meta": meta}
    mean, std = state["mean"], state["std"]

    keras.utils.set_random_seed(params.seed)
    batch_size, gpus = setup_distribution(params.batch_size)
    policy = resolve_precision(params.precision)
    from models import alignment

    align = alignment(params.depth)
    crop = effective_crop(params.crop_size, [(it["height"], it["width"]) for it in train_items], align)
    samples = params.samples_per_epoch or max(
        batch_size, sum(round(it["height"] * it["width"] / crop ** 2) for it in train_items))
    val_crop = effective_crop(0, [(it["height"], it["width"]) for it in val_items], align) if val_items else None
    steps = max(1, samples // batch_size)
    cache = TileCache(params.cache_mb * 2 ** 20)
    aug = Augment(params.flips, params.rotations, params.brightness, params.contrast, params.color)
    train_ds = TileDataset(train_items, batch_size, crop, True, params.seed, samples, aug, mean, std, meta["nodata"],
                           dtype_range(meta["dtype"]), initial_epoch=state["epoch"], cache=cache,
                           workers=params.workers)
    val_ds = (TileDataset(val_items, batch_size, val_crop, False, cache=cache, workers=params.workers)
              if val_items else None)
    monitor = "val_iou" if val_ds is not None else "iou"

    info = {"train": params.significant(), "precision": policy, "crop": crop, "monitor": monitor,
            "data": {k: meta[k] for k in ("dtype", "nodata")}, **params.extra}
    model = build_model_for(meta["bands"], meta["n_classes"], params, policy, mean, std, meta["nodata"], info)
    optimizer = make_optimizer(params, steps * params.epochs, policy)
    start = state["epoch"]
    if start:
        model.load_weights(ckpt / state["last_weights"])
        log.info("resuming %s after epoch %d", run_dir, start)
    ckpt_cb = EpochCheckpoint(run_dir, state, monitor, params.patience, params.warmup_epochs, status)
    cbs = [ckpt_cb]
    tb = _tensorboard_callback(run_dir / "logs")
    if tb is not None:
        cbs.append(tb)
    cbs += list(callbacks)
    restored = not start
    stopped = state.get("stopped_early", False)
    t0 = time.time()
    for first, end, loss_spec in params.phases():
        if stopped or end <= start:
            continue
        state["loss_spec"] = loss_spec
        compile_model(model, optimizer, loss_spec, params.class_weights)
        if not restored:
            restore_optimizer(model.optimizer, model, ckpt / state["last_optimizer"])
            restored = True
        model.fit(train_ds, validation_data=val_ds, initial_epoch=max(start, first), epochs=end,
                  steps_per_epoch=steps, callbacks=cbs, verbose=verbose)
        train_ds.epoch = end  # whatever Keras did with the hooks, the next phase starts at `end`
        stopped = ckpt_cb.stopped or state.get("stopped_early", False)
        if state["epoch"] < end and not stopped:
            raise RuntimeError(f"training stopped at epoch {state['epoch']} of {end} (a callback stopped it?)")

    # the best epoch's weights, saved as the final model
    if state.get("best_weights"):
        model.load_weights(ckpt / state["best_weights"])
    std_layer = model.get_layer("standardize")
    std_layer.update_info(best_epoch=state.get("best_epoch"), best=state.get("best"), epochs_run=state["epoch"],
                          stopped_early=bool(state.get("stopped_early")))
    summary = {"model": str(final), "best_epoch": state.get("best_epoch"), monitor: state.get("best"),
               "epochs_run": state["epoch"], "stopped_early": bool(state.get("stopped_early")),
               "precision": policy, "devices": gpus or ["cpu"], "backend": keras.backend.backend(),
               "crop": crop, "steps_per_epoch": steps, "batch_size": batch_size,
               "train_tiles": len(train_items), "val_tiles": len(val_items), "mean": mean, "std": std,
               "params": params.significant(), "seconds_this_run": round(time.time() - t0, 1)}
    write_json_atomic(run_dir / "model.json", summary)
    save_model_atomic(model, final)
    # checkpoints are superseded by model.keras; keep state.json (the full history)
    for f in ckpt.iterdir():
        if f.name != "state.json":
            f.unlink(missing_ok=True)
    return final


# ---------------------------------------------------------------- the task


def model_key() -> str:
    """``unet<depth>x<filters>-<hash>`` of the significant training parameters and the split."""
    from tasks.split import SplitDataset

    p = TrainParams.from_config()
    return params_key(f"unet{p.depth}x{p.base_filters}", {"train": p.significant(), "split": SplitDataset().key()})


def model_dir() -> Path:
    return workdir() / "models" / model_key()


def start_tensorboard(log_dir: Path, port: int) -> str | None:
    """Serve TensorBoard in this process (daemon threads) and return its URL."""
    try:
        from tensorboard import program

        tb = program.TensorBoard()
        tb.configure(argv=[None, "--logdir", str(log_dir), "--port", str(port), "--bind_all"])
        return tb.launch()
    except Exception as e:  # noqa: BLE001 - monitoring must not stop training
        log.warning("TensorBoard server not started: %s", e)
        return None


class TrainModel(luigi.Task):
    """Trains the U-Net on SplitDataset's training tiles -> ``<workdir>/models/<key>/model.keras``."""

    def requires(self):
        from tasks.split import SplitDataset

        return SplitDataset()

    def output(self):
        return luigi.LocalTarget(str(model_dir() / "model.keras"))

    def run(self):
        from tasks.config import train

        split = json.loads(Path(self.input().path).read_text())
        params = TrainParams.from_config()
        run_dir = Path(self.output().path).parent
        logs = run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        url = start_tensorboard(logs, train().tensorboard_port) if train().tensorboard_port > 0 else None
        self.set_tracking_url(url or logs.as_uri())
        if not url:
            self.set_status_message(f"TensorBoard: tensorboard --logdir {logs}")

        def status(epoch, logs_, state):
            self.set_progress_percentage(int(100 * epoch / params.epochs))
            keys = ("loss", "iou", "val_loss", "val_iou")
            vals = ", ".join(f"{k} {logs_[k]:.3f}" for k in keys if k in logs_)
            best = state.get("best")
            self.set_status_message(f"epoch {epoch}/{params.epochs}: {vals}"
                                    + (f"; best {best:.3f} at epoch {state['best_epoch']}" if best is not None else "")
                                    + (" (early stop)" if state.get("stopped_early") else ""))

        train_model(split["splits"]["train"], split["splits"]["val"], run_dir, params, status=status)
        self.set_progress_percentage(100)
