"""models/metrics.py: accumulated pixel IoU and F1 equal NumPy's over all batches."""
import keras
import numpy as np
import pytest

from models.metrics import PixelF1, PixelIoU


def test_iou_and_f1_accumulate_over_batches():
    rng = np.random.default_rng(0)
    t = (rng.random((2, 4, 16, 16, 3)) > 0.7).astype("float32")
    p = rng.random((2, 4, 16, 16, 3)).astype("float32")
    iou, f1 = PixelIoU(channel=1), PixelF1(channel=1)
    for b in range(2):
        iou.update_state(t[b], p[b])
        f1.update_state(t[b], p[b])
    tt, pp = t[..., 1] >= 0.5, p[..., 1] >= 0.5
    tp, fp, fn = (tt & pp).sum(), (~tt & pp).sum(), (tt & ~pp).sum()
    assert float(keras.ops.convert_to_numpy(iou.result())) == pytest.approx(tp / (tp + fp + fn), rel=1e-6)
    assert float(keras.ops.convert_to_numpy(f1.result())) == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-6)
    iou.reset_state()
    assert float(keras.ops.convert_to_numpy(iou.result())) == 1.0  # nothing seen, nothing wrong


def test_threshold_is_applied():
    t = np.ones((1, 2, 2, 1), "float32")
    p = np.full((1, 2, 2, 1), 0.6, "float32")
    lo, hi = PixelIoU(threshold=0.5), PixelIoU(threshold=0.7)
    lo.update_state(t, p)
    hi.update_state(t, p)
    assert float(keras.ops.convert_to_numpy(lo.result())) == 1.0
    assert float(keras.ops.convert_to_numpy(hi.result())) == 0.0
