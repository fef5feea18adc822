"""tasks/resources.py: the GPU stages are gated by a Luigi resource, so 2 worker processes on a
1-GPU host never run two GPU tasks at once."""
import json
import time
from pathlib import Path

import luigi
import pytest

from tasks import resources
from tasks.predict import Predict, PredictImage
from tasks.train import TrainModel


def test_gpus_visible_follows_devices_and_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(resources.glob, "glob", lambda pattern: ["/dev/nvidia0", "/dev/nvidia1"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert resources.gpus_visible() == 2 and resources.gpu_resources() == {"gpu": 1}
    for value, n in (("0", 1), ("0,1", 2), ("", 0), ("-1", 0)):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert resources.gpus_visible() == n
    monkeypatch.setattr(resources.glob, "glob", lambda pattern: [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert resources.gpus_visible() == 0 and resources.gpu_resources() == {}


def test_gpu_stages_ask_for_the_gpu_only_on_a_gpu_host(monkeypatch, luigi_config):
    monkeypatch.setattr(resources, "gpus_visible", lambda: 1)
    assert TrainModel().resources == {"gpu": 1}
    assert PredictImage(image="a").resources == {"gpu": 1}
    assert Predict(model_file="m.keras", image_path="a.tif").resources == {"gpu": 1}
    luigi_config("model", "name", "oracle")
    assert PredictImage(image="a").resources == {}  # the oracle runs no network
    monkeypatch.setattr(resources, "gpus_visible", lambda: 0)
    assert TrainModel().resources == {} and Predict(model_file="m", image_path="a").resources == {}


# the real stages' resources, with the work replaced by a 1.5 s stand-in that logs when it ran
class _Timed:
    log_dir = luigi.Parameter(significant=False)

    def requires(self):
        return []

    def output(self):
        return luigi.LocalTarget(str(Path(self.log_dir) / f"{self.task_id}.json"))

    def run(self):
        t0 = time.time()
        time.sleep(1.5)
        with self.output().open("w") as f:
            json.dump({"start": t0, "end": time.time()}, f)


class _FakeTrain(_Timed, TrainModel):
    pass


class _FakePredict(_Timed, PredictImage):
    pass


class _CpuStage(_Timed, luigi.Task):
    image = luigi.Parameter()


def _intervals(log_dir: Path, prefix: str):
    return sorted((d["start"], d["end"]) for d in (json.loads(p.read_text()) for p in log_dir.glob(f"{prefix}*.json")))


def _overlaps(iv) -> bool:
    return any(b[0] < a[1] for a, b in zip(iv, iv[1:]))


@pytest.mark.parametrize("gpus", [1, 2])
def test_two_workers_never_run_two_gpu_tasks_on_one_gpu(tmp_path, monkeypatch, luigi_config, gpus):
    monkeypatch.setattr(resources, "gpus_visible", lambda: 1)  # a fake 1-GPU host
    luigi_config("resources", "gpu", gpus)
    d = str(tmp_path)
    tasks = [_FakeTrain(log_dir=d), _FakePredict(image="a", log_dir=d), _FakePredict(image="b", log_dir=d),
             _CpuStage(image="c", log_dir=d)]
    assert luigi.build(tasks, local_scheduler=True, workers=2, log_level="WARNING")
    gpu = sorted(_intervals(tmp_path, "_FakeTrain") + _intervals(tmp_path, "_FakePredict"))
    assert len(gpu) == 3
    if gpus == 1:
        assert not _overlaps(gpu), gpu  # one GPU task at a time ...
        cpu = _intervals(tmp_path, "_CpuStage")[0]
        assert any(s < cpu[1] and cpu[0] < e for s, e in gpu), "... while the CPU stage runs beside one"
    else:
        assert _overlaps(gpu), "with 2 GPUs two GPU tasks run together (the check above can fail)"
