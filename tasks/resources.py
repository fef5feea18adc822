"""Luigi resources of the pipeline: the GPU stages (TrainModel, PredictImage with a network)
need ``{"gpu": 1}`` when they run on a GPU, so a scheduler with ``[resources] gpu = N`` never runs
more than N of them at once, however many worker processes there are (``--workers 2`` on a
1-GPU host: one GPU task at a time, the CPU stages beside it). With ``luigid`` the count is
the scheduler's (its own luigi.cfg), across every worker host that shares it.

GPUs are counted without importing a deep-learning framework (the scheduler asks every task
for its resources): NVIDIA device nodes, limited by ``CUDA_VISIBLE_DEVICES``.
"""
from __future__ import annotations

import glob
import os


def gpus_visible() -> int:
    """NVIDIA GPUs this process may use: ``/dev/nvidia<N>`` devices, at most as many as
    ``CUDA_VISIBLE_DEVICES`` lists (empty or ``-1``: none)."""
    n = len(glob.glob("/dev/nvidia[0-9]*"))
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        ids = [x.strip() for x in cvd.split(",") if x.strip()]
        n = 0 if not ids or ids[0] == "-1" else min(n, len(ids))
    return n


def gpu_resources() -> dict:
    """The Luigi ``resources`` of a stage that runs its network on a GPU when there is one."""
    return {"gpu": 1} if gpus_visible() > 0 else {}
