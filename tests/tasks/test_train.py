"""tasks/train.py: TrainModel's settings come from TrainParams; the pipeline imports without Keras.

The training itself (input pipeline, resume after a kill) is tested in tests/models/."""
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from models.params import TrainParams
from tasks import config

REPO = Path(__file__).resolve().parents[2]


def test_params_defaults_are_the_config_defaults():
    assert config.train_params() == TrainParams()


def test_train_section_takes_defaults_and_significance_from_train_params():
    section = dict(config.train.get_params())
    for f in fields(TrainParams):
        if f.name == "extra":
            continue
        p = section[f.name]
        default = p._default if f.name != "class_weights" else (TrainParams.from_kwargs({f.name: p._default}).class_weights)
        assert default == getattr(TrainParams(), f.name), f.name
        assert p.significant == TrainParams.is_significant(f.name), f.name
    assert not section["tensorboard_port"].significant


def test_config_overrides_reach_train_params(luigi_config):
    luigi_config("train", "depth", 2)
    luigi_config("train", "class_weights", "1,3")
    luigi_config("train", "workers", 5)
    p = config.train_params()
    assert (p.depth, p.class_weights, p.workers) == (2, (1.0, 3.0), 5)


def test_scheduling_the_pipeline_does_not_import_keras():
    code = "import sys, pipeline, tasks.train, tasks.predict; print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
