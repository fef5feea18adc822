"""Checkpoints, logs and monitoring of a training run.

- **Checkpoints**: every epoch (weights + optimizer state + ``state.json`` as the commit point),
  each file written atomically (:func:`footprints.atomic.atomic_path`, which keeps the
  ``.weights.h5`` suffix Keras checks). A killed run resumes after the last completed epoch.
- **Logs**: ``history.csv``, ``training_curve.png``, TensorBoard event files (and, on request,
  a TensorBoard server whose URL the Luigi task shows as its tracking URL).
- **Selection**: early stopping on the monitored metric; the best epoch's weights are kept.
"""
from __future__ import annotations

import csv
import importlib.util
import logging
from pathlib import Path

import keras
import numpy as np

from footprints.atomic import atomic_path, write_json
from models.hardware import tune_malloc

log = logging.getLogger(__name__)


def save_weights_atomic(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save_weights(tmp)


def optimizer_arrays(optimizer) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in optimizer.variables]


def save_optimizer_atomic(optimizer, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, *optimizer_arrays(optimizer))


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


def write_history_csv(path: Path, history: list[dict]) -> None:
    keys = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def plot_history(path: Path, history: list[dict], best_epoch: int | None = None) -> None:
    """Loss and IoU/F1 per epoch (training and validation) as a PNG."""
    import matplotlib  # noqa: PLC0415 - heavy, only the training curve needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the Agg backend

    ep = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", a1), ("val_loss", a1), ("iou", a2), ("val_iou", a2), ("f1", a2), ("val_f1", a2)):
        ys = [r.get(key) for r in history]
        if any(y is not None for y in ys):
            ax.plot(ep, [np.nan if y is None else y for y in ys], marker=".", label=key,
                    linestyle="--" if key.startswith("val_") else "-")
    for ax, title in ((a1, "loss"), (a2, "pixel IoU / F1 (footprint; with building types, their union)")):
        if best_epoch:
            ax.axvline(best_epoch, color="grey", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)


class KeepMallocTuned(keras.callbacks.Callback):
    """Applies :func:`models.hardware.tune_malloc` again after the first training step and at
    every epoch, since TensorFlow resets glibc's trim threshold itself once its kernels run."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            tune_malloc()

    def on_epoch_begin(self, epoch, logs=None):
        tune_malloc()


class EpochCheckpoint(keras.callbacks.Callback):
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
        write_json(self.ckpt / "state.json", st)
        for name in old_last + [old_best]:  # superseded files, only after the commit point
            if name and name not in (st["last_weights"], st["last_optimizer"], st.get("best_weights")):
                (self.ckpt / name).unlink(missing_ok=True)
        if self.on_epoch:
            self.on_epoch(n, logs, st)


def tensorboard_callback(log_dir: Path):
    """Keras' TensorBoard callback writing to ``log_dir``, or None where it cannot run."""
    if importlib.util.find_spec("tensorflow") is None:
        log.warning("TensorBoard logs disabled: Keras' TensorBoard callback needs tensorflow installed")
        return None
    try:
        return keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, update_freq="epoch",
                                           profile_batch=0)
    except Exception as e:  # noqa: BLE001 - e.g. JAX/torch without tensorboard installed
        log.warning("TensorBoard logs disabled: %s", e)
        return None


def start_tensorboard(log_dir: Path, port: int) -> str | None:
    """Serve TensorBoard in this process (daemon threads) and return its URL."""
    try:
        from tensorboard import program  # noqa: PLC0415 - optional, only when a port is configured

        tb = program.TensorBoard()
        tb.configure(argv=[None, "--logdir", str(log_dir), "--port", str(port), "--bind_all"])
        return tb.launch()
    except Exception as e:  # noqa: BLE001 - monitoring must not stop training
        log.warning("TensorBoard server not started: %s", e)
        return None
