"""models/params.py: TrainParams' defaults, significance and parsing, declared once."""
from models.params import TrainParams, parse_class_weights


def test_loss_schedule_phases():
    assert TrainParams(epochs=10, warmup_epochs=3, warmup_loss="bce", loss="jaccard").phases() == \
        [(0, 3, "bce"), (3, 10, "jaccard")]
    assert TrainParams(epochs=10, warmup_epochs=0, loss="bce+jaccard").phases() == [(0, 10, "bce+jaccard")]
    assert "precision" not in TrainParams().significant() and "seed" in TrainParams().significant()


def test_significant_parameters_are_the_model_key_ones():
    """The dict that keys model directories: every parameter but how the run executes."""
    sig = TrainParams().significant()
    assert list(sig) == ["depth", "base_filters", "fold", "batchnorm", "epochs", "batch_size", "crop_size",
                         "samples_per_epoch", "learning_rate", "clipnorm", "loss", "warmup_loss", "warmup_epochs",
                         "class_weights", "flips", "rotations", "brightness", "contrast", "color", "patience", "seed"]
    assert not any(TrainParams.is_significant(k) for k in ("precision", "workers", "cache_mb", "extra"))
    assert TrainParams(workers=7, cache_mb=1, precision="auto").significant() == sig
    # full-resolution models (fold = 1, input_scale = 1) keep the keys they had before fold existed
    assert "fold" not in TrainParams(fold=1).significant() and "input_scale" not in sig


def test_from_kwargs_parses_class_weights_and_ignores_other_settings():
    p = TrainParams.from_kwargs({"depth": 2, "class_weights": "1, 2,0.5", "tensorboard_port": 6006})
    assert p == TrainParams(depth=2, class_weights=(1.0, 2.0, 0.5))
    assert TrainParams.from_kwargs({"class_weights": ""}).class_weights is None
    assert parse_class_weights(None) is None and parse_class_weights([3]) == (3.0,)
