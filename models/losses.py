"""Segmentation losses in pure Keras 3 ops, for sigmoid heads with one or more channels.

Every loss takes ``y_true`` in [0, 1] and ``y_pred`` probabilities, both ``(N, H, W, C)``, and
weights the channels with ``class_weights`` (default: all 1, normalised to sum to 1). Region
losses (Jaccard, Dice) are computed per channel over the whole batch, which is stable on tiles
with few or no buildings.

``make_loss("bce+jaccard")`` builds the weighted combinations used by TrainModel; the loss names
are ``bce``, ``jaccard``, ``dice``, ``focal``, and ``a+b`` / ``0.5*a+b`` combinations.
"""
from __future__ import annotations

import re

import keras
from keras import ops

EPS = 1e-6


def _weights(class_weights, channels):
    if class_weights is None:
        w = [1.0] * channels
    else:
        w = [float(v) for v in class_weights]
        if len(w) < channels:
            raise ValueError(f"class_weights has {len(w)} values for {channels} channels")
        w = w[:channels]
    s = sum(w)
    if s <= 0:
        raise ValueError(f"class_weights must sum to > 0, got {class_weights}")
    return ops.convert_to_tensor([v / s for v in w], dtype="float32")


class _ChannelLoss(keras.losses.Loss):
    """Base: subclasses return one value per channel; channels are averaged with weights."""

    def __init__(self, class_weights=None, name=None, reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name or self.__class__.__name__.lower(), reduction=reduction, **kwargs)
        self.class_weights = None if class_weights is None else [float(v) for v in class_weights]

    def per_channel(self, y_true, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        per = self.per_channel(y_true, y_pred)
        return ops.sum(per * _weights(self.class_weights, per.shape[-1]))

    def get_config(self):
        cfg = super().get_config()
        cfg["class_weights"] = self.class_weights
        return cfg


@keras.saving.register_keras_serializable(package="footprints")
class BinaryCrossentropy(_ChannelLoss):
    """Pixel-mean binary cross-entropy per channel."""

    def per_channel(self, y_true, y_pred):
        p = ops.clip(y_pred, EPS, 1.0 - EPS)
        bce = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        return ops.mean(ops.reshape(bce, (-1, bce.shape[-1])), axis=0)


def _channel_sums(y_true, y_pred):
    """Per channel over the batch: sum(t), sum(p), sum(t*p)."""
    c = y_pred.shape[-1]
    t = ops.reshape(y_true, (-1, c))
    p = ops.reshape(y_pred, (-1, c))
    return ops.sum(t, axis=0), ops.sum(p, axis=0), ops.sum(t * p, axis=0)


@keras.saving.register_keras_serializable(package="footprints")
class SoftJaccard(_ChannelLoss):
    """1 - soft IoU = 1 - sum(p*t) / (sum(p) + sum(t) - sum(p*t)), per channel over the batch."""

    def __init__(self, smooth=1.0, **kwargs):
        super().__init__(**kwargs)
        self.smooth = float(smooth)

    def per_channel(self, y_true, y_pred):
        t_sum, p_sum, inter = _channel_sums(y_true, y_pred)
        return 1.0 - (inter + self.smooth) / (t_sum + p_sum - inter + self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="footprints")
class Dice(_ChannelLoss):
    """1 - soft Dice = 1 - 2 sum(p*t) / (sum(p) + sum(t)), per channel over the batch."""

    def __init__(self, smooth=1.0, **kwargs):
        super().__init__(**kwargs)
        self.smooth = float(smooth)

    def per_channel(self, y_true, y_pred):
        t_sum, p_sum, inter = _channel_sums(y_true, y_pred)
        return 1.0 - (2.0 * inter + self.smooth) / (t_sum + p_sum + self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="footprints")
class Focal(_ChannelLoss):
    """Binary focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log(p_t), pixel mean."""

    def __init__(self, gamma=2.0, alpha=0.25, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def per_channel(self, y_true, y_pred):
        p = ops.clip(y_pred, EPS, 1.0 - EPS)
        p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
        alpha_t = y_true * self.alpha + (1.0 - y_true) * (1.0 - self.alpha)
        fl = -alpha_t * ops.power(1.0 - p_t, self.gamma) * ops.log(p_t)
        return ops.mean(ops.reshape(fl, (-1, fl.shape[-1])), axis=0)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="footprints")
class Combined(keras.losses.Loss):
    """``sum_i weight_i * loss_i``; ``terms`` is a list of ``(weight, loss)`` pairs."""

    def __init__(self, terms, name="combined", reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.terms = [(float(w), keras.losses.get(t) if isinstance(t, dict) else t) for w, t in terms]
        if not self.terms:
            raise ValueError("Combined loss needs at least one term")

    def call(self, y_true, y_pred):
        total = 0.0
        for w, loss in self.terms:
            total = total + w * loss.call(y_true, y_pred)
        return total

    def get_config(self):
        cfg = super().get_config()
        cfg["terms"] = [(w, keras.saving.serialize_keras_object(t)) for w, t in self.terms]
        return cfg

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["terms"] = [(w, keras.saving.deserialize_keras_object(t)) for w, t in config["terms"]]
        return cls(**config)


LOSSES = {"bce": BinaryCrossentropy, "jaccard": SoftJaccard, "iou": SoftJaccard, "dice": Dice, "focal": Focal}


def make_loss(spec: str, class_weights=None) -> keras.losses.Loss:
    """A loss from a spec such as ``"bce"``, ``"jaccard"``, ``"bce+jaccard"``, ``"0.5*bce+dice"``."""
    terms = []
    for part in str(spec).replace(" ", "").split("+"):
        m = re.fullmatch(r"(?:([0-9.]+)\*)?([a-z]+)", part)
        if not m or m.group(2) not in LOSSES:
            raise ValueError(f"unknown loss term {part!r} in {spec!r}; known: {sorted(LOSSES)}")
        weight = float(m.group(1)) if m.group(1) else 1.0
        terms.append((weight, LOSSES[m.group(2)](class_weights=class_weights)))
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    return Combined(terms, name=re.sub(r"[^A-Za-z0-9_]", "_", str(spec)))
