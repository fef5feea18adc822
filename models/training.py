"""The fit loop: train the U-Net on the training split's tiles, validate on the validation split.

Pure Keras 3 (no backend-specific calls), so the same loop runs with ``KERAS_BACKEND=jax`` or
``torch``.

- **Data**: :mod:`models.data` (seeded, augmented crops read by worker threads; band statistics
  stored in the model's first layer).
- **Loss schedule**: ``warmup_loss`` for ``warmup_epochs`` (BCE to leave the all-background
  minimum), then ``loss`` (e.g. soft Jaccard); or a combined loss such as ``bce+jaccard``.
- **Hardware**: :mod:`models.hardware` (mixed precision where it is native, GPU when visible,
  ``keras.distribution.DataParallel`` over several GPUs with JAX).
- **Checkpoints and logs**: :mod:`models.callbacks` (every epoch; a killed run resumes after the
  last completed epoch; TensorBoard, ``history.csv``, ``training_curve.png``).
- **Selection**: early stopping on validation IoU; the best epoch's weights are saved.
- **Output**: ``<run_dir>/model.keras`` (atomic), ``model.json`` beside it.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import keras

from footprints.atomic import TMP_MARK, write_json
from models.callbacks import EpochCheckpoint, KeepMallocTuned, restore_optimizer, tensorboard_callback
from models.data import Augment, TileCache, TileDataset, band_statistics, dtype_range, effective_crop, inspect_items, tf_input
from models.hardware import data_workers, jit_setting, resolve_precision, setup_distribution, tune_malloc
from models.io import save_model_atomic
from models.losses import make_loss
from models.metrics import PixelF1, PixelIoU
from models.params import TrainParams
from models.unet import alignment, build_unet, building_types

__all__ = ["TrainParams", "build_model_for", "compile_model", "fit_inputs", "make_optimizer", "train_model"]

log = logging.getLogger(__name__)


def build_model_for(bands: int, n_classes: int, params: TrainParams, policy: str, mean, std, nodata, info: dict,
                    channel_names=None):
    return build_unet(bands, n_classes, depth=params.depth, base_filters=params.base_filters, seed=params.seed,
                      batchnorm=params.batchnorm, input_scale=params.input_scale, fold=params.fold,
                      dtype_policy=policy, mean=mean, std=std, nodata=nodata, info=info,
                      channel_names=channel_names)


def make_optimizer(params: TrainParams, total_steps: int, policy: str):
    # linear warm-up over the first steps (a full-size first Adam step can kill every ReLU of a
    # network without batch norm: all-background, IoU 0 for good), then cosine decay
    warmup = min(100, total_steps // 10)
    lr = keras.optimizers.schedules.CosineDecay(0.0 if warmup else params.learning_rate,
                                                decay_steps=max(1, total_steps - warmup), alpha=0.05,
                                                warmup_target=params.learning_rate if warmup else None,
                                                warmup_steps=warmup)
    # the global gradient norm is clipped: without batch norm a single large step late in a long
    # high-learning-rate run can still kill every ReLU (seen: IoU 0 from epoch 10 of 24 at 5e-3)
    opt = keras.optimizers.Adam(learning_rate=lr, global_clipnorm=params.clipnorm or None)
    if policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def compile_model(model, optimizer, loss_spec: str, class_weights=None, n_types: int = 0) -> None:
    """``n_types`` (building types): the head's first channels are one footprint per class, and
    the IoU/F1 that select the best epoch are of their union (the buildings Polygonize finds),
    not of the first class alone."""
    union = max(1, int(n_types))
    model.compile(optimizer=optimizer, loss=make_loss(loss_spec, class_weights),
                  metrics=[PixelIoU(name="iou", union=union), PixelF1(name="f1", union=union)],
                  jit_compile=jit_setting())


def fit_inputs(train_ds, val_ds):
    """What ``fit`` reads: on the TensorFlow backend the endless, non-autotuned ``tf.data``
    pipelines of :func:`models.data.tf_input` (no stall between epochs); on the others the
    PyDatasets themselves (their adapters do not go through tf.data)."""
    if keras.backend.backend() != "tensorflow":
        return train_ds, val_ds
    return tf_input(train_ds), (tf_input(val_ds) if val_ds is not None else None)


def _remove_stale_temporaries(*dirs: Path) -> None:
    """Temporaries of atomic writes left by a killed run (each epoch's checkpoint has its own
    name, so ``atomic_path``'s per-name clean-up does not reach them)."""
    for d in dirs:
        for stale in d.glob(f"*{TMP_MARK}*"):
            if stale.is_file():
                stale.unlink(missing_ok=True)


def train_model(train_items, val_items, run_dir, params: TrainParams, callbacks=(), status=None,
                verbose: int = 2) -> Path:
    """Train (or resume training) into ``run_dir``; returns ``run_dir/model.keras``.

    ``train_items``/``val_items``: dicts with ``tile`` and ``mask`` paths (``width``/``height``
    are filled in when missing). ``status(epoch, logs, state)`` is called after every epoch.
    An existing ``checkpoints/state.json`` resumes after its last completed epoch.
    """
    run_dir = Path(run_dir)
    final = run_dir / "model.keras"
    if final.exists():
        return final
    # the same recipe gives the same model on the same machine: deterministic kernels (read by
    # TensorFlow when the first such op runs; the data pipeline and initialisers are seeded)
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    tune_malloc()
    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(run_dir, ckpt)
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
    # compared as JSON, the form state.json keeps them in (tuples come back as lists)
    if state and state.get("params") != json.loads(json.dumps(params.significant())):
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
    align = alignment(params.depth, params.input_scale, params.fold)
    crop = effective_crop(params.crop_size, [(it["height"], it["width"]) for it in train_items], align)
    samples = params.samples_per_epoch or max(
        batch_size, sum(round(it["height"] * it["width"] / crop ** 2) for it in train_items))
    val_crop = effective_crop(0, [(it["height"], it["width"]) for it in val_items], align) if val_items else None
    steps = max(1, samples // batch_size)
    cache = TileCache(params.cache_mb * 2 ** 20)
    workers = data_workers(params.workers)
    aug = Augment(params.flips, params.rotations, params.brightness, params.contrast, params.color)
    train_ds = TileDataset(train_items, batch_size, crop, True, params.seed, samples, aug, mean, std, meta["nodata"],
                           dtype_range(meta["dtype"]), initial_epoch=state["epoch"], cache=cache,
                           workers=workers, class_share=params.class_share)
    val_ds = (TileDataset(val_items, batch_size, val_crop, False, cache=cache, workers=workers)
              if val_items else None)
    monitor = "val_iou" if val_ds is not None else "iou"

    info = {"train": params.significant(), "precision": policy, "crop": crop, "monitor": monitor,
            "data": {k: meta[k] for k in ("dtype", "nodata")}, **params.extra}
    model = build_model_for(meta["bands"], meta["n_classes"], params, policy, mean, std, meta["nodata"], info,
                            meta.get("channels"))  # building types: the masks' band names
    optimizer = make_optimizer(params, steps * params.epochs, policy)
    start = state["epoch"]
    if start:
        model.load_weights(ckpt / state["last_weights"])
        log.info("resuming %s after epoch %d", run_dir, start)
    ckpt_cb = EpochCheckpoint(run_dir, state, monitor, params.patience, params.warmup_epochs, status)
    cbs = [ckpt_cb, KeepMallocTuned()]
    tb = tensorboard_callback(run_dir / "logs")
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
        compile_model(model, optimizer, loss_spec, params.class_weights, len(building_types(meta.get("channels") or ())))
        if not restored:
            restore_optimizer(model.optimizer, model, ckpt / state["last_optimizer"])
            restored = True
        train_in, val_in = fit_inputs(train_ds, val_ds)
        model.fit(train_in, validation_data=val_in, initial_epoch=max(start, first), epochs=end,
                  steps_per_epoch=steps, validation_steps=len(val_ds) if val_ds is not None else None,
                  callbacks=cbs, verbose=verbose, shuffle=False)
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
    write_json(run_dir / "model.json", summary)
    save_model_atomic(model, final)
    # checkpoints are superseded by model.keras; keep state.json (the full history)
    for f in ckpt.iterdir():
        if f.name != "state.json":
            f.unlink(missing_ok=True)
    return final
