"""models/unet.py: one training step per head and band count, seeding, normalisation, folding."""
import keras
import numpy as np
import pytest

from models import Standardize, build_unet, inference_model, make_loss, model_info, rebuild, receptive_margin
from models.metrics import PixelIoU


@pytest.fixture(autouse=True)
def _clear_session():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def _batch(bands, n_classes, size=32, n=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, bands)).astype("float32")
    y = np.zeros((n, size, size, n_classes), "float32")
    y[:, 8:20, 6:22, 0] = 1
    if n_classes == 3:
        y[:, 8:20, 6:7, 1] = 1
        y[:, 8:20, 22:23, 2] = 1
    return x, y


@pytest.mark.parametrize("n_classes", [1, 3])
@pytest.mark.parametrize("bands", [1, 3, 8])
def test_one_training_step_at_32px(bands, n_classes):
    model = build_unet(bands, n_classes, depth=4, base_filters=8, seed=1, dtype_policy="mixed_bfloat16",
                       mean=[100.0] * bands, std=[50.0] * bands)
    # eager: one step does not pay for tracing the graph (TrainModel runs compiled)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_loss("bce+jaccard"), metrics=[PixelIoU()],
                  run_eagerly=True)
    x, y = _batch(bands, n_classes)
    before = [np.array(w) for w in model.get_weights()]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0
    after = model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "no weight moved"
    out = keras.ops.convert_to_numpy(model(x, training=False))
    assert out.shape == (2, 32, 32, n_classes)
    assert out.dtype == np.float32  # sigmoid head stays float32 under mixed bfloat16
    assert ((out >= 0) & (out <= 1)).all()
    assert model.get_layer("enc0_conv0").compute_dtype == "bfloat16"


def test_same_seed_same_weights_other_seed_other_weights():
    a = build_unet(3, 1, depth=2, base_filters=4, seed=7).get_weights()
    keras.backend.clear_session()
    b = build_unet(3, 1, depth=2, base_filters=4, seed=7).get_weights()
    keras.backend.clear_session()
    c = build_unet(3, 1, depth=2, base_filters=4, seed=8).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert any(not np.array_equal(u, v) for u, v in zip(a, c))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_classes"):
        build_unet(3, 2)
    with pytest.raises(ValueError, match="input_bands"):
        build_unet(0, 1)
    with pytest.raises(ValueError, match="bands"):
        build_unet(3, 1, mean=[0, 0], std=[1, 1])


def test_standardize_uses_float32_and_zeroes_nodata():
    layer = Standardize(mean=[30000.0, 100.0], std=[10000.0, 10.0], nodata=0)
    x = np.array([[[[60000.0, 110.0], [60001.0, 110.0], [0.0, 0.0], [0.0, 120.0]]]], "float32")
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y[0, 0, 0], [3.0, 1.0], rtol=1e-6)
    assert y[0, 0, 1, 0] - y[0, 0, 0, 0] == pytest.approx(1e-4, rel=1e-2)  # uint16 steps survive (bf16: 0)
    np.testing.assert_array_equal(y[0, 0, 2], [0.0, 0.0])  # all bands nodata -> 0
    assert y[0, 0, 3, 1] == pytest.approx(2.0)  # one band 0 is a valid value
    assert layer.compute_dtype == "float32"


def test_info_travels_in_the_model():
    model = build_unet(8, 3, depth=2, base_filters=4, seed=3, mean=range(8), std=[2] * 8, nodata=0,
                       info={"train": {"epochs": 5}})
    info = model_info(model)
    assert info["arch"] == {"input_bands": 8, "n_classes": 3, "depth": 2, "base_filters": 4, "seed": 3,
                            "batchnorm": True, "bn_momentum": 0.9}
    assert info["classes"] == ["footprint", "boundary", "contact"]
    assert info["mean"] == list(map(float, range(8))) and info["nodata"] == 0.0
    assert info["train"] == {"epochs": 5}
    model.get_layer("standardize").update_info(best_epoch=4)
    assert model_info(model)["best_epoch"] == 4


def test_folded_batchnorm_matches_the_trained_network():
    model = build_unet(3, 3, depth=3, base_filters=8, seed=2, mean=[100] * 3, std=[50] * 3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=make_loss("bce"), run_eagerly=True)
    x, y = _batch(3, 3, size=48, n=4)
    for _ in range(3):  # moves the BatchNorm statistics away from their initial values
        model.train_on_batch(x, y)
    bn = model.get_layer("enc1_bn0")
    assert not np.allclose(keras.ops.convert_to_numpy(bn.moving_mean), 0)
    folded = inference_model(model, "float32")
    assert not any("bn" in layer.name for layer in folded.layers)
    run = lambda m: keras.ops.convert_to_numpy(m(x, training=False))  # noqa: E731 - eager, no tracing
    ref = run(model)
    np.testing.assert_allclose(run(folded), ref, atol=2e-5)
    np.testing.assert_allclose(run(rebuild(model, "float32")), ref, atol=1e-6)


def test_receptive_margin_bounds_the_reach_of_a_pixel():
    depth = 2
    r = receptive_margin(depth)
    model = inference_model(build_unet(1, 1, depth=depth, base_filters=4, seed=5), "float32")
    size = (2 * r + 24) // 4 * 4
    x = np.zeros((1, size, size, 1), "float32")
    run = lambda a: keras.ops.convert_to_numpy(model(a, training=False))[0, ..., 0]  # noqa: E731
    base = run(x)
    x[0, size // 2, size // 2, 0] = 1000.0  # one bright pixel in the middle
    moved = np.abs(run(x) - base) > 0
    rows, cols = np.nonzero(moved)
    reach = max(np.abs(rows - size // 2).max(), np.abs(cols - size // 2).max())
    assert 0 < reach <= r


def test_half_resolution_unet_reach_and_alignment():
    """input_scale=2: the U-Net runs on 2x2-averaged pixels; arch_margin bounds a pixel's reach
    and arch_alignment is the pooling grid of the full-resolution input."""
    from models.unet import arch_alignment, arch_margin, model_info

    model = inference_model(build_unet(1, 1, depth=2, base_filters=4, seed=5, input_scale=2), "float32")
    arch = model_info(model)["arch"]
    assert arch["input_scale"] == 2 and arch_alignment(arch) == 8
    _assert_reach_within_margin(model, arch_margin(arch), ((0, 0), (1, 1)))  # both phases of the 2x2 grid


def _assert_reach_within_margin(model, r: int, phases) -> None:
    """A bright pixel at each phase of the 2x2 grid changes the (full-resolution) output, and
    nothing farther than ``r`` pixels from it."""
    size = (2 * r + 40) // 8 * 8
    x = np.zeros((1, size, size, 1), "float32")
    run = lambda a: keras.ops.convert_to_numpy(model(a, training=False))[0, ..., 0]  # noqa: E731
    base = run(x)
    assert base.shape == (size, size)
    for dy, dx in phases:
        y = x.copy()
        y[0, size // 2 + dy, size // 2 + dx, 0] = 1000.0
        rows, cols = np.nonzero(np.abs(run(y) - base) > 0)
        reach = max(np.abs(rows - size // 2 - dy).max(), np.abs(cols - size // 2 - dx).max())
        assert 0 < reach <= r


def test_space_to_depth_and_back_is_the_identity():
    """fold: pixel blocks go into channels in (row, column, band) order, and come back exactly."""
    from models.unet import DepthToSpace, SpaceToDepth

    x = np.arange(2 * 6 * 8 * 3, dtype="float32").reshape(2, 6, 8, 3)
    folded = keras.ops.convert_to_numpy(SpaceToDepth(2)(x))
    assert folded.shape == (2, 3, 4, 12)
    np.testing.assert_array_equal(folded[0, 1, 2], np.concatenate([x[0, 2, 4], x[0, 2, 5], x[0, 3, 4], x[0, 3, 5]]))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(DepthToSpace(2)(folded)), x)


def test_folded_unet_reach_alignment_and_saving(tmp_path):
    """fold=2: the U-Net runs on 2x2 pixel blocks folded into channels; arch_margin bounds a
    pixel's reach in every phase of the block grid, the output is full resolution, and the saved
    model reloads to the same outputs."""
    from models.unet import arch_alignment, arch_margin, model_info

    model = inference_model(build_unet(1, 3, depth=2, base_filters=4, seed=5, fold=2), "float32")
    arch = model_info(model)["arch"]
    assert arch["fold"] == 2 and arch_alignment(arch) == 8
    _assert_reach_within_margin(model, arch_margin(arch), ((0, 0), (0, 1), (1, 0), (1, 1)))  # every phase
    run = lambda m, a: keras.ops.convert_to_numpy(m(a, training=False))[0, ..., 0]  # noqa: E731
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    y = np.random.default_rng(0).normal(size=(1, 32, 48, 1)).astype("float32")
    np.testing.assert_array_equal(run(again, y), run(model, y))
    with pytest.raises(ValueError, match="use one"):
        build_unet(1, 1, depth=2, base_filters=4, input_scale=2, fold=2)


def test_quantizing_in_the_network_equals_the_hosts_quantizing():
    """The predictor's uint8 output (QuantizeProbabilities, where the network runs) is exactly
    what the stitcher's own to_uint8 makes of float probabilities, .5 edges and clipping included."""
    from footprints.stitch import to_uint8
    from models.unet import QuantizeProbabilities, quantized

    rng = np.random.default_rng(3)
    p = np.concatenate([rng.random(5000), (np.arange(256) + 0.5) / 255, [-0.1, 0.0, 1.0, 1.2]]).astype("float32")
    p = p.reshape(1, 1, -1, 1)
    got = keras.ops.convert_to_numpy(QuantizeProbabilities()(p))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, to_uint8(p))
    model = build_unet(3, 3, depth=2, base_filters=4, seed=1)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = np.asarray(quantized(model).predict_on_batch(x))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, to_uint8(np.asarray(model.predict_on_batch(x))))


def test_the_eight_symmetries_are_distinct_and_undone_by_their_inverses():
    from models.unet import Dihedral

    x = np.arange(2 * 4 * 6 * 3, dtype="float32").reshape(2, 4, 6, 3)
    seen = []
    for k in range(8):
        y = keras.ops.convert_to_numpy(Dihedral(k)(x))
        assert y.shape == ((2, 6, 4, 3) if k & 4 else x.shape)
        assert not any(y.shape == s.shape and np.array_equal(y, s) for s in seen)
        seen.append(y)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(Dihedral(k, inverse=True)(y)), x)
    np.testing.assert_array_equal(seen[3][0, ..., 0], x[0, ::-1, ::-1, 0])
    np.testing.assert_array_equal(seen[4][0, ..., 0], x[0, ..., 0].T)
    # the numpy twin that the ONNX engines use around their session moves values the same way
    from models.unet import dihedral
    for k in range(8):
        np.testing.assert_array_equal(dihedral(x, k), seen[k])
        np.testing.assert_array_equal(dihedral(seen[k], k, inverse=True), x)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_test_time_augmentation_is_the_mean_over_mapped_back_symmetries(n):
    """test_time_augmented(model, n): each symmetry's prediction mapped back, then averaged, as
    computed here by hand with numpy; 1 is the model itself, anything else is refused."""
    from models.unet import test_time_augmented

    model = build_unet(3, 3, depth=2, base_filters=4, seed=4, batchnorm=False)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 48, 3)).astype("float32")
    run = lambda a: np.asarray(model.predict_on_batch(np.ascontiguousarray(a)))  # noqa: E731
    views = [lambda a: a, lambda a: a[:, :, ::-1], lambda a: a[:, ::-1], lambda a: a[:, ::-1, ::-1]]
    ks = [0, 1, 2, 3][: min(n, 4)]
    expect = [views[k](run(views[k](x))) for k in ks]
    if n == 8:
        t = lambda a: a.transpose(0, 2, 1, 3)  # noqa: E731
        expect += [views[k](t(run(t(views[k](x))))) for k in range(4)]
    got = np.asarray(test_time_augmented(model, n).predict_on_batch(x))
    np.testing.assert_allclose(got, np.mean(expect, axis=0), atol=1e-6)
    assert test_time_augmented(model, 1) is model
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        test_time_augmented(model, 3)
