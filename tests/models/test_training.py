"""models/training.py (with models/callbacks.py): resume after a kill, checkpoints, logs."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- training: kill and resume


_TRAIN_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {repo!r})
    import keras
    from models.training import train_model, TrainParams

    class DieAfterEpoch1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0 and os.environ.get("DIE") == "1":
                print("DYING", flush=True)
                os._exit(9)   # like kill -9: no cleanup, no exception handling

    class Seen(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            print("EPOCH_BEGIN", epoch + 1, flush=True)

    items = json.loads(open({items!r}).read())
    params = TrainParams(depth=2, base_filters=4, epochs=3, batch_size=2, crop_size=32, samples_per_epoch=4,
                         warmup_epochs=1, loss="jaccard", patience=0, workers=1)
    out = train_model(items[:3], items[3:], {run!r}, params, callbacks=[Seen(), DieAfterEpoch1()], verbose=0)
    print("DONE", out, flush=True)
""")


def _run(script: Path, die: bool):
    env = {**os.environ, "DIE": "1" if die else "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)


def test_killed_run_resumes_after_the_last_completed_epoch(tmp_path, make_items):
    items = make_items(tmp_path / "data", n=4, size=48)
    (tmp_path / "items.json").write_text(json.dumps(items))
    run = tmp_path / "run"
    script = tmp_path / "train.py"
    script.write_text(_TRAIN_SCRIPT.format(repo=str(REPO), items=str(tmp_path / "items.json"), run=str(run)))

    first = _run(script, die=True)
    assert first.returncode == 9, first.stderr[-3000:]
    assert "DYING" in first.stdout and "EPOCH_BEGIN 2" not in first.stdout
    assert not (run / "model.keras").exists()
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1 and [r["epoch"] for r in state["history"]] == [1]

    second = _run(script, die=False)
    assert second.returncode == 0, second.stderr[-3000:]
    begun = [int(line.split()[1]) for line in second.stdout.splitlines() if line.startswith("EPOCH_BEGIN")]
    assert begun == [2, 3]  # continues at epoch 2, epoch 1 is not trained again
    history = (run / "history.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in history[1:]] == [1, 2, 3]
    assert history[0].startswith("epoch,loss_spec")
    assert [r.split(",")[1] for r in history[1:]] == ["bce", "jaccard", "jaccard"]  # the loss schedule
    # the final model exists once, nothing temporary is left behind
    assert sorted(p.name for p in run.glob("*.keras")) == ["model.keras"]
    assert not list(run.rglob("*.tmp-*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["state.json"]
    assert (run / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "logs").rglob("events.out.tfevents*"))
    summary = json.loads((run / "model.json").read_text())
    assert summary["epochs_run"] == 3 and 1 <= summary["best_epoch"] <= 3

    third = _run(script, die=False)  # a finished run is not trained again
    assert "EPOCH_BEGIN" not in third.stdout and "DONE" in third.stdout


def test_the_same_recipe_gives_the_same_model_every_time(tmp_path, make_items):
    """Two fresh runs of one recipe on this machine (separate processes, two reader threads)
    give bit-identical weights: seeded crops and augmentation, seeded initialisers, and
    deterministic kernels (train_model sets TF_DETERMINISTIC_OPS)."""
    import numpy as np

    items = make_items(tmp_path / "data", n=4, size=48)
    (tmp_path / "items.json").write_text(json.dumps(items))
    weights = []
    for k in range(2):
        run = tmp_path / f"run{k}"
        script = tmp_path / f"train{k}.py"
        script.write_text(_TRAIN_SCRIPT.replace("workers=1)", "workers=2)").format(
            repo=str(REPO), items=str(tmp_path / "items.json"), run=str(run)))
        done = _run(script, die=False)
        assert done.returncode == 0, done.stderr[-3000:]
        dump = tmp_path / f"w{k}.npz"
        subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import sys, numpy as np
            sys.path.insert(0, {str(REPO)!r})
            from models.io import load_model
            np.savez({str(dump)!r}, *load_model({str(run / 'model.keras')!r}).get_weights())""")],
                       check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        with np.load(dump) as z:
            weights.append([z[f] for f in z.files])
    assert len(weights[0]) == len(weights[1])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
