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


def _value(m) -> float:
    return float(keras.ops.convert_to_numpy(m.result()))


def test_typed_heads_score_the_union_of_the_class_channels():
    """Building types: channels Complete, Incomplete, Foundation, boundary, contact. The truth is
    one building of class 1 (class 0's channel empty, class 1's full)."""
    t = np.zeros((1, 8, 8, 5), "float32")
    t[0, 2:6, 2:6, 1] = 1.0
    found_as_other_class = np.zeros_like(t)
    found_as_other_class[0, 2:6, 2:6, 2] = 0.9  # the building found, as Foundation
    for pred, want in ((t, 1.0), (found_as_other_class, 1.0), (np.zeros_like(t), 0.0)):
        iou, f1 = PixelIoU(union=3), PixelF1(union=3)
        iou.update_state(t, pred)
        f1.update_state(t, pred)
        assert (_value(iou), _value(f1)) == (want, want)
    blind = PixelIoU()  # channel 0 alone: predicting nothing scores a perfect 1 ("both empty")
    blind.update_state(t, np.zeros_like(t))
    assert _value(blind) == 1.0


def test_the_union_is_polygonizes_class_footprint():
    from footprints.polygonize import class_footprint

    rng = np.random.default_rng(1)
    t = (rng.random((2, 16, 16, 5)) > 0.8).astype("float32")
    p = rng.random((2, 16, 16, 5)).astype("float32")
    iou = PixelIoU(union=3, threshold=0.6)
    iou.update_state(t, p)
    tt = np.stack([class_footprint(np.moveaxis(x, -1, 0), 3)[0] for x in t]) >= 0.5
    pp = np.stack([class_footprint(np.moveaxis(x, -1, 0), 3)[0] for x in p]) >= 0.6
    tp, fp, fn = (tt & pp).sum(), (~tt & pp).sum(), (tt & ~pp).sum()
    assert _value(iou) == pytest.approx(tp / (tp + fp + fn), rel=1e-6)
    assert PixelIoU.from_config(iou.get_config()).union == 3
    with pytest.raises(ValueError, match="channel must be 0"):
        PixelIoU(channel=1, union=3)
