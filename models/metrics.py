"""Pixel metrics in pure Keras 3: IoU and F1 of one channel at a threshold, accumulated over an
epoch (true/false positives and false negatives are summed, then the ratio is taken once).

With building types the head has one footprint channel per class (then boundary and contact),
and "the footprint" is their union: ``union=n`` takes the per-pixel maximum of the first ``n``
channels, the rule of :func:`footprints.polygonize.class_footprint` (Polygonize finds buildings
on it), written in Keras ops because the metric runs inside the compiled step."""
from __future__ import annotations

import keras
from keras import ops


class _ConfusionMetric(keras.metrics.Metric):
    def __init__(self, channel=0, threshold=0.5, union=1, name=None, dtype="float32", **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.channel = int(channel)
        self.threshold = float(threshold)
        self.union = int(union)
        if self.union > 1 and self.channel:
            raise ValueError(f"union={union} is the footprint of the first {union} (class) channels; channel must be 0")
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp", dtype="float32")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp", dtype="float32")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn", dtype="float32")

    def _footprint(self, y):
        y = ops.cast(y, "float32")
        if self.union > 1:  # building types: the union of the class channels (class_footprint's rule)
            return ops.max(y[..., :self.union], axis=-1)
        return y[..., self.channel]

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(self._footprint(y_true) >= 0.5, "float32")
        p = ops.cast(self._footprint(y_pred) >= self.threshold, "float32")
        self.tp.assign_add(ops.sum(t * p))
        self.fp.assign_add(ops.sum((1.0 - t) * p))
        self.fn.assign_add(ops.sum(t * (1.0 - p)))

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "channel": self.channel, "threshold": self.threshold, "union": self.union}


@keras.saving.register_keras_serializable(package="footprints")
class PixelIoU(_ConfusionMetric):
    """TP / (TP + FP + FN) of channel ``channel`` (or of the union of the first ``union`` class
    channels) thresholded at ``threshold`` (1 when both empty)."""

    def __init__(self, channel=0, threshold=0.5, union=1, name="iou", **kwargs):
        super().__init__(channel=channel, threshold=threshold, union=union, name=name, **kwargs)

    def result(self):
        denom = self.tp + self.fp + self.fn
        return ops.where(denom > 0, self.tp / ops.maximum(denom, 1.0), 1.0)


@keras.saving.register_keras_serializable(package="footprints")
class PixelF1(_ConfusionMetric):
    """2 TP / (2 TP + FP + FN) of channel ``channel`` (or of the class channels' union; 1 when both empty)."""

    def __init__(self, channel=0, threshold=0.5, union=1, name="f1", **kwargs):
        super().__init__(channel=channel, threshold=threshold, union=union, name=name, **kwargs)

    def result(self):
        denom = 2.0 * self.tp + self.fp + self.fn
        return ops.where(denom > 0, 2.0 * self.tp / ops.maximum(denom, 1.0), 1.0)
