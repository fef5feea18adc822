"""models/losses.py against closed forms and NumPy."""
import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.losses import BinaryCrossentropy, Combined, Dice, Focal, SoftJaccard, make_loss


def _np(v):
    return float(keras.ops.convert_to_numpy(v))


def _pair(seed=0, c=3):
    rng = np.random.default_rng(seed)
    t = (rng.random((2, 8, 8, c)) > 0.6).astype("float32")
    p = rng.uniform(0.01, 0.99, (2, 8, 8, c)).astype("float32")
    return t, p


def test_bce_equals_numpy():
    t, p = _pair()
    ref = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    assert _np(BinaryCrossentropy()(t, p)) == pytest.approx(ref, rel=1e-5)


def test_jaccard_and_dice_closed_forms():
    t, p = _pair(1, c=1)
    inter, s_t, s_p = (t * p).sum(), t.sum(), p.sum()
    assert _np(SoftJaccard(smooth=0)(t, p)) == pytest.approx(1 - inter / (s_t + s_p - inter), rel=1e-5)
    assert _np(Dice(smooth=0)(t, p)) == pytest.approx(1 - 2 * inter / (s_t + s_p), rel=1e-5)
    assert _np(SoftJaccard()(t, t)) == pytest.approx(0, abs=1e-6)
    assert _np(SoftJaccard(smooth=0)(t, 1 - t)) == pytest.approx(1, abs=1e-6)


def test_focal_with_gamma_0_is_weighted_bce():
    t, p = _pair(2)
    assert _np(Focal(gamma=0.0, alpha=0.5)(t, p)) == pytest.approx(0.5 * _np(BinaryCrossentropy()(t, p)), rel=1e-5)
    # focusing: confident correct pixels count less than under BCE
    assert _np(Focal(gamma=2.0, alpha=0.5)(t, p)) < _np(Focal(gamma=0.0, alpha=0.5)(t, p))


def test_class_weights_select_channels():
    t, p = _pair(3)
    only0 = _np(SoftJaccard(class_weights=[1, 0, 0])(t, p))
    assert only0 == pytest.approx(_np(SoftJaccard()(t[..., :1], p[..., :1])), rel=1e-6)
    with pytest.raises(ValueError, match="class_weights"):
        SoftJaccard(class_weights=[1])(t, p)


def test_make_loss_parses_weighted_sums():
    t, p = _pair(4)
    loss = make_loss("0.5*bce + dice")
    assert isinstance(loss, Combined)
    assert _np(loss(t, p)) == pytest.approx(0.5 * _np(BinaryCrossentropy()(t, p)) + _np(Dice()(t, p)), rel=1e-5)
    assert isinstance(make_loss("jaccard"), SoftJaccard)
    with pytest.raises(ValueError, match="unknown loss term 'hinge'"):
        make_loss("bce+hinge")


def test_combined_loss_serialises():
    loss = make_loss("bce+0.3*focal", class_weights=[2, 1, 1])
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    t, p = _pair(5)
    assert _np(again(t, p)) == pytest.approx(_np(loss(t, p)), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(arrays(np.float32, (1, 4, 4, 2), elements=st.floats(0, 1, width=32)),
       arrays(np.float32, (1, 4, 4, 2), elements=st.floats(0, 1, width=32)))
def test_region_losses_are_bounded(t, p):
    for loss in (SoftJaccard(), Dice()):
        v = _np(loss(t, p))
        assert -1e-6 <= v <= 1 + 1e-6
