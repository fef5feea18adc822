"""TrainModel: train the U-Net on the training split's tiles, validate on the validation split.

The work is :func:`models.training.train_model` (input pipeline, augmentation, loss schedule,
mixed precision, checkpoints every epoch so a killed run resumes, early stopping, TensorBoard
logs, ``history.csv``, ``training_curve.png``). This task picks the directory
(``<workdir>/models/<key>/``, keyed by the significant ``[train]`` settings and the split), and
reports progress, the epoch's metrics and a tracking URL to TensorBoard in the Luigi UI.
Output: ``model.keras`` (atomic), ``model.json`` beside it.
"""
from __future__ import annotations

import json
from pathlib import Path

import luigi

from tasks import config
from tasks.keys import model_dir
from tasks.resources import gpu_resources
from tasks.split import SplitDataset


class TrainModel(luigi.Task):
    """Trains the U-Net on SplitDataset's training tiles -> ``<workdir>/models/<key>/model.keras``."""

    @property
    def resources(self):
        return gpu_resources()  # {"gpu": 1} on a GPU host: [resources] gpu caps GPU tasks at once

    def requires(self):
        return SplitDataset()

    def output(self):
        return luigi.LocalTarget(str(model_dir() / "model.keras"))

    def run(self):
        from models.callbacks import start_tensorboard  # noqa: PLC0415 - keras is heavy; only a training run needs it
        from models.training import train_model  # noqa: PLC0415 - keras is heavy; only a training run needs it

        split = json.loads(Path(self.input().path).read_text())
        params = config.train_params()
        port = config.train().tensorboard_port
        run_dir = Path(self.output().path).parent
        logs = run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        url = start_tensorboard(logs, port) if port > 0 else None
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
