"""U-Net builder in pure Keras 3 (no backend-specific calls: TensorFlow, JAX and torch all work).

``build_unet(input_bands, n_classes)`` returns a fully convolutional ``keras.Model`` that takes
*raw* pixel values (float32, any height/width that is a multiple of ``2**depth``) and returns
per-pixel sigmoid probabilities in float32, even under a mixed-precision dtype policy.

The first layer, :class:`Standardize`, holds the per-band normalisation computed from the
training tiles (mean, std, nodata) and a free-form ``info`` dict (architecture, class names,
training parameters), so a saved ``.keras`` file carries everything inference needs.
"""
from __future__ import annotations

import json
import math

import keras
import numpy as np
from keras import layers, ops

CLASS_NAMES = {1: ("footprint",), 3: ("footprint", "boundary", "contact")}


def building_types(channel_names) -> tuple[str, ...]:
    """The building types of a head (or mask) with these channel names: its footprint channels,
    one per class, which come first; ``()`` for a head without types (``footprint``[, boundary,
    contact]). Their number is Polygonize's ``n_classes`` (the footprint is their union)."""
    heads = [str(c) for c in channel_names if c not in ("boundary", "contact")]
    return () if heads == ["footprint"] else tuple(heads)


@keras.saving.register_keras_serializable(package="footprints")
class Standardize(layers.Layer):
    """``(x - mean) / std`` per band, computed in float32; pixels whose bands all equal
    ``nodata`` become 0 (the mean). Carries ``info`` (JSON-serialisable metadata) in its config.

    It always computes in float32: uint16 values do not survive a bfloat16 cast (8-bit mantissa),
    so the cast to the compute dtype happens after standardisation, in the next layer.
    """

    def __init__(self, mean=None, std=None, nodata=None, info=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if mean is None or std is None:
            raise ValueError("Standardize needs mean and std (one value per band)")
        self.mean = tuple(float(m) for m in np.ravel(mean))
        self.std = tuple(float(s) if float(s) > 0 else 1.0 for s in np.ravel(std))
        if len(self.mean) != len(self.std):
            raise ValueError(f"Standardize: {len(self.mean)} means but {len(self.std)} stds")
        self.nodata = None if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)) else float(nodata)
        self._info_json = json.dumps(info or {}, sort_keys=True, default=float)  # plain text: not tracked

    @property
    def info(self) -> dict:
        return json.loads(self._info_json)

    def update_info(self, **items) -> None:
        self._info_json = json.dumps({**self.info, **items}, sort_keys=True, default=float)

    def build(self, input_shape):
        bands = input_shape[-1]
        if bands is not None and bands != len(self.mean):
            raise ValueError(f"Standardize: input has {bands} bands, statistics have {len(self.mean)}")

    def call(self, x):
        x = ops.cast(x, "float32")
        mean = ops.convert_to_tensor(np.asarray(self.mean, "float32"))
        inv = ops.convert_to_tensor(1.0 / np.asarray(self.std, "float32"))
        y = (x - mean) * inv
        if self.nodata is not None:
            valid = ops.any(ops.not_equal(x, self.nodata), axis=-1, keepdims=True)
            y = y * ops.cast(valid, "float32")
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        cfg = super().get_config()
        cfg.update(mean=list(self.mean), std=list(self.std), nodata=self.nodata, info=self.info)
        return cfg


@keras.saving.register_keras_serializable(package="footprints")
class SpaceToDepth(layers.Layer):
    """Folds every ``block`` x ``block`` pixel block into the channels: ``(h, w, c)`` ->
    ``(h/block, w/block, block²·c)``, lossless (unlike pooling). Channel order is (row in block,
    column in block, band), the inverse of :class:`DepthToSpace`."""

    def __init__(self, block: int, **kwargs):
        super().__init__(**kwargs)
        self.block = int(block)

    def call(self, x):
        s, c = self.block, x.shape[-1]
        shape = ops.shape(x)
        h, w = shape[1] // s, shape[2] // s
        x = ops.reshape(x, (-1, h, s, w, s, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, h, w, s * s * c))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.block
        return (b, None if h is None else h // s, None if w is None else w // s, c * s * s)

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="footprints")
class DepthToSpace(layers.Layer):
    """The inverse of :class:`SpaceToDepth`: ``(h, w, block²·c)`` -> ``(h·block, w·block, c)``,
    a sub-pixel output (each low-resolution position predicts its block's pixels)."""

    def __init__(self, block: int, **kwargs):
        super().__init__(**kwargs)
        self.block = int(block)

    def call(self, x):
        s = self.block
        c = x.shape[-1] // (s * s)
        shape = ops.shape(x)
        h, w = shape[1], shape[2]
        x = ops.reshape(x, (-1, h, w, s, s, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, h * s, w * s, c))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.block
        return (b, None if h is None else h * s, None if w is None else w * s, c // (s * s))

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="footprints")
class QuantizeProbabilities(layers.Layer):
    """``round(255 p)`` clipped to 0..255, as uint8: the probability GeoTIFF's values, computed
    where the network runs (on a GPU, on the device: a quarter of the bytes to copy back, and no
    host pass over float32 outputs). Rounds half to even in float32, as numpy's ``rint``."""

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, p):
        return ops.cast(ops.round(ops.clip(ops.cast(p, "float32") * 255.0, 0.0, 255.0)), "uint8")

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, p):
        return keras.KerasTensor(p.shape, dtype="uint8")


@keras.saving.register_keras_serializable(package="footprints")
class Dihedral(layers.Layer):
    """One of the 8 symmetries of the square on (batch, h, w, c) arrays: bit 0 flips rows, bit 1
    flips columns, bit 2 transposes. ``inverse`` undoes it (the transpose comes first then)."""

    def __init__(self, k: int, inverse: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # moves values, never computes: no cast
        super().__init__(**kwargs)
        self.k, self.inverse = int(k), bool(inverse)

    def call(self, x):
        if self.inverse and self.k & 4:
            x = ops.transpose(x, (0, 2, 1, 3))
        if self.k & 1:
            x = ops.flip(x, axis=1)
        if self.k & 2:
            x = ops.flip(x, axis=2)
        if not self.inverse and self.k & 4:
            x = ops.transpose(x, (0, 2, 1, 3))
        return x

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, w, h, c) if self.k & 4 else input_shape

    def get_config(self):
        return {**super().get_config(), "k": self.k, "inverse": self.inverse}


TTA_CHOICES = (1, 2, 4, 8)
# the symmetries of n-way test-time augmentation are the first n of these (k as in Dihedral)
TTA_ORDER = (0, 2, 1, 3, 4, 5, 6, 7)


def dihedral(x, k: int, inverse: bool = False):
    """:class:`Dihedral` on a numpy (batch, h, w, c) array (a view: nothing is copied)."""
    if inverse and k & 4:
        x = x.transpose(0, 2, 1, 3)
    if k & 1:
        x = x[:, ::-1]
    if k & 2:
        x = x[:, :, ::-1]
    if not inverse and k & 4:
        x = x.transpose(0, 2, 1, 3)
    return x


def test_time_augmented(model: keras.Model, n: int) -> keras.Model:
    """``model``'s probabilities averaged over ``n`` symmetries of each window (1: ``model``
    itself; 2: plus the left-right mirror; 4: all flips; 8: flips and transposes), each mapped
    back before averaging. n times the compute. Every symmetry maps a window with the same
    margin on every side and a side that is a multiple of the pooling grid onto one of the same
    kind, so tiled predictions still equal the whole image's."""
    if n not in TTA_CHOICES:
        raise ValueError(f"test-time augmentation takes 1, 2, 4 or 8 symmetries, got {n}")
    if n == 1:
        return model
    x = model.inputs[0]
    ks = TTA_ORDER[:n]
    outs = [Dihedral(k, inverse=True, name=f"tta{k}_back")(model(Dihedral(k, name=f"tta{k}")(x))) for k in ks]
    avg = layers.Average(name="tta_mean", dtype="float32")(outs)
    return keras.Model(model.inputs, avg, name=model.name)


def quantized(model: keras.Model) -> keras.Model:
    """``model`` with its probabilities quantized to uint8 by :class:`QuantizeProbabilities`."""
    return keras.Model(model.inputs, QuantizeProbabilities(name="quantize")(model.outputs[0]), name=model.name)


def alignment(depth: int, input_scale: int = 1, fold: int = 1) -> int:
    """Tile offsets and input sizes must be multiples of this for tiled == whole-image output."""
    return input_scale * fold * 2 ** depth


def arch_alignment(arch: dict) -> int:
    """:func:`alignment` of a saved model's ``arch``."""
    return alignment(arch["depth"], arch.get("input_scale", 1), arch.get("fold", 1))


def arch_margin(arch: dict) -> int:
    """:func:`receptive_margin` of a saved model's ``arch``, in input pixels: the U-Net's reach at
    its own resolution, plus the downscaling and upsampling windows and the 3x3 head."""
    s = arch.get("input_scale", 1)
    f = arch.get("fold", 1)
    if f > 1:  # a folded pixel covers f x f input pixels: the reach in blocks, plus the block itself
        return receptive_margin(arch["depth"]) * f + f - 1
    return receptive_margin(arch["depth"]) * s + (2 * s + 1 if s > 1 else 0)


def receptive_margin(depth: int, convs_per_level: int = 2) -> int:
    """Theoretical receptive radius in input pixels of :func:`build_unet` (3x3 convs, 2x2 pools).

    A tile core at least this far from its tile edge is predicted exactly as in the whole image;
    in practice the influence decays much sooner (see tests/tasks/test_predict.py).
    """
    r = 0
    for level in range(depth):                      # encoder convs + the pooling window
        r += convs_per_level * 2 ** level + 2 ** level
    r += convs_per_level * 2 ** depth               # bottleneck
    for level in range(depth):                      # 1x1 conv + nearest upsampling, decoder convs
        r += convs_per_level * 2 ** level
    return r


def _conv_block(x, filters, name, seed, policy, batchnorm, bn_momentum=0.9):
    for i in range(2):
        init = keras.initializers.HeNormal(seed=seed + i)
        if batchnorm:
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=init,
                              name=f"{name}_conv{i}", dtype=policy)(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i}", dtype=policy)(x)
            x = layers.Activation("relu", name=f"{name}_relu{i}", dtype=policy)(x)
        else:  # conv + bias + relu: one fused kernel on oneDNN/cuDNN/XLA
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init,
                              name=f"{name}_conv{i}", dtype=policy)(x)
    return x


def build_unet(
    input_bands: int,
    n_classes: int = 1,
    depth: int = 4,
    base_filters: int = 32,
    seed: int = 0,
    dtype_policy: str | None = None,
    mean=None,
    std=None,
    nodata=None,
    info: dict | None = None,
    name: str = "unet",
    batchnorm: bool = True,
    bn_momentum: float = 0.9,
    head_bias: float = -2.0,
    input_scale: int = 1,
    fold: int = 1,
    channel_names=None,
) -> keras.Model:
    """A U-Net: ``depth`` poolings, ``base_filters * 2**level`` filters, sigmoid head.

    - ``input_bands``: 1, 3, 8, ... raw bands (the model standardises them itself).
    - ``n_classes``: 1 (footprint) or 3 (footprint, boundary, contact); independent sigmoids.
      Building types: any number, named by ``channel_names`` (one footprint channel per class,
      then boundary and contact), saved as the model's ``classes``.
    - ``seed``: every initializer is seeded from it, so two builds are identical.
    - ``dtype_policy``: e.g. ``"mixed_bfloat16"``; ``None`` uses Keras' global policy.
      The head is always float32.
    - ``mean``/``std``/``nodata``: per-band normalisation (default 0/1: identity).
    - ``batchnorm``: conv-BN-ReLU blocks (training); ``False`` gives conv+bias+ReLU, the form
      :func:`inference_model` folds a trained network into (about 3x faster on CPU).
    - ``head_bias``: initial logit bias, i.e. a prior of sigmoid(-2) = 12% positives: buildings
      are the minority class, and starting near the prior avoids large early updates.
    - ``input_scale``: > 1 averages the standardised image over ``input_scale``² pixels first and
      upsamples the last features back (nearest) into a 3x3 head: the U-Net runs at 1/input_scale
      resolution, about input_scale² times cheaper (the CPU demo recipe); 1: full resolution.
    - ``fold``: > 1 folds every ``fold`` x ``fold`` pixel block of the standardised image into the
      channels (space-to-depth, lossless, unlike ``input_scale``'s averaging), runs the U-Net at
      1/fold resolution, and its head predicts the fold² pixels of each block (depth-to-space):
      about fold² times fewer positions, with wider convolutions that use the CPU better.
    - ``bn_momentum``: of the BatchNorm moving statistics; 0.9 (not Keras' 0.99) so that short
      runs of a few hundred steps validate with settled statistics.
    """
    if input_bands < 1:
        raise ValueError(f"input_bands must be >= 1, got {input_bands}")
    if channel_names is not None and len(channel_names) != n_classes:
        raise ValueError(f"{len(channel_names)} channel names for {n_classes} channels")
    if channel_names is None and n_classes not in CLASS_NAMES:
        raise ValueError(f"n_classes must be 1 or 3 (or name every channel: channel_names), got {n_classes}")
    if input_scale > 1 and fold > 1:
        raise ValueError("input_scale and fold are two ways to run at lower resolution: use one")
    if depth < 1 or base_filters < 1:
        raise ValueError(f"depth and base_filters must be >= 1, got {depth}, {base_filters}")
    policy = dtype_policy or keras.config.dtype_policy().name
    mean = np.zeros(input_bands) if mean is None else np.ravel(mean)
    std = np.ones(input_bands) if std is None else np.ravel(std)
    arch = dict(input_bands=int(input_bands), n_classes=int(n_classes), depth=int(depth),
                base_filters=int(base_filters), seed=int(seed), batchnorm=bool(batchnorm),
                bn_momentum=float(bn_momentum))
    if input_scale > 1:
        arch["input_scale"] = int(input_scale)
    if fold > 1:
        arch["fold"] = int(fold)
    if channel_names is not None:
        arch["channel_names"] = [str(c) for c in channel_names]
    names = arch.get("channel_names") or CLASS_NAMES[n_classes]
    info = {**(info or {}), "arch": arch, "classes": list(names)}

    inputs = keras.Input(shape=(None, None, input_bands), dtype="float32", name="image")
    x = Standardize(mean=mean, std=std, nodata=nodata, info=info, name="standardize")(inputs)
    if input_scale > 1:  # the U-Net sees the image at 1/input_scale resolution (input_scale² cheaper)
        x = layers.AveragePooling2D(input_scale, name="downscale", dtype=policy)(x)
    if fold > 1:  # pixel blocks folded into channels: the U-Net runs at 1/fold resolution, losslessly
        x = SpaceToDepth(fold, name="fold", dtype=policy)(x)
    skips = []
    for level in range(depth):
        x = _conv_block(x, base_filters * 2 ** level, f"enc{level}", seed + 10 * level, policy, batchnorm, bn_momentum)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}", dtype=policy)(x)
    x = _conv_block(x, base_filters * 2 ** depth, "bottleneck", seed + 10 * depth, policy, batchnorm, bn_momentum)
    for level in reversed(range(depth)):
        filters = base_filters * 2 ** level
        # 1x1 conv at the coarse level, then nearest upsampling: a 2x2 transposed conv with
        # one kernel for the 4 positions, ~1.3x faster than Conv2DTranspose on oneDNN.
        x = layers.Conv2D(
            filters, 1, kernel_initializer=keras.initializers.HeNormal(seed=seed + 100 + level),
            name=f"up{level}_conv", dtype=policy,
        )(x)
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"up{level}", dtype=policy)(x)
        x = layers.Concatenate(name=f"concat{level}", dtype=policy)([x, skips[level]])
        x = _conv_block(x, filters, f"dec{level}", seed + 200 + 10 * level, policy, batchnorm, bn_momentum)
    if input_scale > 1:  # back to full resolution: nearest upsampling, then a 3x3 head smooths the steps
        x = layers.UpSampling2D(input_scale, interpolation="nearest", name="upscale", dtype=policy)(x)
    x = layers.Conv2D(
        n_classes * fold * fold, 3 if input_scale > 1 else 1, padding="same",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 999),
        bias_initializer=keras.initializers.Constant(head_bias), name="logits", dtype=policy,
    )(x)
    if fold > 1:  # each block's fold² pixels, unfolded back to full resolution
        x = DepthToSpace(fold, name="unfold", dtype=policy)(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def model_info(model: keras.Model) -> dict:
    """The metadata saved in the model: ``arch``, ``classes``, normalisation, anything added."""
    std = model.get_layer("standardize")
    return {**std.info, "mean": list(std.mean), "std": list(std.std), "nodata": std.nodata}


def _rebuild_args(model):
    info = model_info(model)
    extra = {k: v for k, v in info.items() if k not in ("arch", "classes", "mean", "std", "nodata")}
    return info["arch"], dict(mean=info["mean"], std=info["std"], nodata=info["nodata"], info=extra,
                              name=model.name)


def rebuild(model: keras.Model, dtype_policy: str | None = None) -> keras.Model:
    """The same network and weights under another dtype policy."""
    arch, kw = _rebuild_args(model)
    new = build_unet(**arch, dtype_policy=dtype_policy, **kw)
    new.set_weights(model.get_weights())
    return new


def inference_model(model: keras.Model, dtype_policy: str | None = None) -> keras.Model:
    """The network with every BatchNormalization folded into the conv before it.

    ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta - mean * gamma / sqrt(var + eps)``, then a
    fused conv+bias+ReLU. Outputs equal ``model(x, training=False)`` up to float rounding.
    Models built with ``batchnorm=False`` are just rebuilt under ``dtype_policy``.
    """
    arch, kw = _rebuild_args(model)
    if not arch.get("batchnorm", True):
        return rebuild(model, dtype_policy)
    new = build_unet(**{**arch, "batchnorm": False}, dtype_policy=dtype_policy, **kw)
    for layer in new.layers:
        src = model.get_layer(layer.name)
        if layer.name.endswith(tuple(f"_conv{i}" for i in range(2))) and isinstance(layer, layers.Conv2D):
            bn = model.get_layer(layer.name.replace("_conv", "_bn"))
            kernel = np.asarray(keras.ops.convert_to_numpy(src.kernel), "float64")
            gamma, beta, mean, var = (np.asarray(keras.ops.convert_to_numpy(v), "float64") for v in
                                      (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
            scale = gamma / np.sqrt(var + bn.epsilon)
            layer.set_weights([(kernel * scale).astype("float32"), (beta - mean * scale).astype("float32")])
        elif layer.weights:
            layer.set_weights(src.get_weights())
    return new


def conv_flops(model: keras.Model, height: int, width: int) -> int:
    """Floating-point operations of one forward pass of a ``height`` x ``width`` window, counted
    from the convolutions (2 per multiply-add; bias, activations, pooling and upsampling, which
    are a few percent, are left out). The network is rebuilt with that fixed input size so every
    layer's output shape is known."""
    bands = model.inputs[0].shape[-1]
    fixed = keras.models.clone_model(model, input_tensors=keras.Input((height, width, bands)))
    total = 0
    for layer in fixed.layers:
        if isinstance(layer, layers.Conv2D):
            _, h, w, cout = layer.output.shape
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            total += 2 * h * w * kh * kw * cin * cout
    return int(total)
