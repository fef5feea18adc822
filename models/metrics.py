"""Pixel metrics in pure Keras 3: IoU and F1 of one channel at a threshold, accumulated over an
epoch (true/false positives and false negatives are summed, then the ratio is taken once)."""
from __future__ import annotations

import keras
from keras import ops


class _ConfusionMetric(keras.metrics.Metric):
    def __init__(self, channel=0, threshold=0.5, name=None, dtype="float32", **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.channel = int(channel)
        self.threshold = float(threshold)
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp", dtype="float32")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp", dtype="float32")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(ops.cast(y_true[..., self.channel], "float32") >= 0.5, "float32")
        p = ops.cast(ops.cast(y_pred[..., self.channel], "float32") >= self.threshold, "float32")
        self.tp.assign_add(ops.sum(t * p))
        self.fp.assign_add(ops.sum((1.0 - t) * p))
        self.fn.assign_add(ops.sum(t * (1.0 - p)))

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "channel": self.channel, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="footprints")
class PixelIoU(_ConfusionMetric):
    """TP / (TP + FP + FN) of channel ``channel`` thresholded at ``threshold`` (1 when both empty)."""

    def __init__(self, channel=0, threshold=0.5, name="iou", **kwargs):
        super().__init__(channel=channel, threshold=threshold, name=name, **kwargs)

    def result(self):
        denom = self.tp + self.fp + self.fn
        return ops.where(denom > 0, self.tp / ops.maximum(denom, 1.0), 1.0)


@keras.saving.register_keras_serializable(package="footprints")
class PixelF1(_ConfusionMetric):
    """2 TP / (2 TP + FP + FN) of channel ``channel`` (1 when both empty)."""

    def __init__(self, channel=0, threshold=0.5, name="f1", **kwargs):
        super().__init__(channel=channel, threshold=threshold, name=name, **kwargs)

    def result(self):
        denom = 2.0 * self.tp + self.fp + self.fn
        return ops.where(denom > 0, 2.0 * self.tp / ops.maximum(denom, 1.0), 1.0)
