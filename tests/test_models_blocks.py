"""The building blocks in service.models.blocks and the custom layers, one by one."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import UserError
from service.models import blocks
from service.models.blocks import Conv, Pool, Split

keras = pytest.importorskip("keras")


def _np(tensor) -> np.ndarray:
    """A model output as NumPy (`np.asarray` on a TF tensor warns under NumPy 2)."""
    return keras.ops.convert_to_numpy(tensor)


def _model(fn, shape):
    """A model around one block: ``fn(x) -> y`` on an input of ``shape``."""
    keras.backend.clear_session()
    inputs = keras.Input(shape=shape)
    return keras.Model(inputs, fn(inputs))


def _count(model, prefix):
    return sum(layer.count_params() for layer in model.layers if layer.name.startswith(prefix))


# ---------------------------------------------------------------- conv
@pytest.mark.parametrize(
    ("size", "kernel", "strides", "padding", "dilation", "expected"),
    [
        (227, 11, 4, "valid", 1, 55),  # AlexNet conv1: (227 - 11) / 4 + 1
        (32, 5, 1, "valid", 1, 28),  # LeNet C1
        (224, 7, 2, 3, 1, 112),  # ResNet stem: (224 - 7 + 2*3) / 2 + 1
        (27, 5, 1, 2, 1, 27),  # AlexNet conv2, zero padding 2 keeps the size
        (10, 3, 1, "valid", 2, 6),  # dilation 2: effective kernel 5
        (15, 3, 2, "same", 1, 8),  # ceil(15 / 2)
    ],
)
def test_conv_output_size_matches_keras(size, kernel, strides, padding, dilation, expected):
    assert (
        blocks.conv_output_size(
            size, kernel, strides=strides, padding=padding, dilation_rate=dilation
        )
        == expected
    )
    model = _model(
        lambda x: blocks.conv_block(
            x,
            4,
            kernel,
            strides=strides,
            padding=padding,
            dilation_rate=dilation,
            batch_norm=False,
            name="c",
        ),
        (size, size, 2),
    )
    assert model.output.shape[1:3] == (expected, expected)
    assert ("c_pad" in [layer.name for layer in model.layers]) == isinstance(padding, int)


def test_conv_block_parameter_sharing_and_batch_norm():
    # one 3x3x4 kernel per filter, shared over all positions: 3*3*4*8 (+ 8 biases)
    plain = _model(lambda x: blocks.conv_block(x, 8, 3, batch_norm=False, name="c"), (16, 16, 4))
    assert plain.get_layer("c_conv").count_params() == 3 * 3 * 4 * 8 + 8
    # with batch norm the conv drops its bias; BN has gamma, beta, moving mean and variance
    bn = _model(lambda x: blocks.conv_block(x, 8, 3, name="c"), (16, 16, 4))
    assert bn.get_layer("c_conv").count_params() == 3 * 3 * 4 * 8
    assert bn.get_layer("c_bn").count_params() == 4 * 8
    assert bn.get_layer("c_relu").activation.__name__ == "relu"


def test_conv_block_rejects_unknown_padding():
    with pytest.raises(UserError, match=r"Invalid value for `c\.padding`: received 'full'"):
        _model(lambda x: blocks.conv_block(x, 8, 3, padding="full", name="c"), (8, 8, 1))


def test_group_conv_splits_channels_into_independent_groups():
    model = _model(
        lambda x: blocks.group_conv(x, 8, 3, groups=2, batch_norm=False, name="g"), (6, 6, 4)
    )
    # each group: 3x3 kernels over 2 of the 4 channels, 4 filters -> half the weights
    assert model.get_layer("g_conv").count_params() == 3 * 3 * (4 // 2) * 8 + 8
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 4)).astype("float32")
    x2 = x.copy()
    x2[..., 2:] += 1.0  # change only the second group's input channels
    y, y2 = _np(model(x)), _np(model(x2))
    np.testing.assert_allclose(y[..., :4], y2[..., :4], rtol=1e-6)  # first group unchanged
    assert not np.allclose(y[..., 4:], y2[..., 4:])


def test_group_conv_needs_a_divisor_of_the_channels():
    with pytest.raises(UserError, match=r"`groups`: received 3; expected a divisor"):
        _model(lambda x: blocks.group_conv(x, 8, 3, groups=3, name="g"), (6, 6, 4))


def test_spatially_separable_conv_is_n_by_1_then_1_by_n():
    n, c_in, f = 5, 3, 4
    model = _model(
        lambda x: blocks.spatially_separable_conv(
            x, f, n, batch_norm=False, activation_fn=None, name="s"
        ),
        (9, 9, c_in),
    )
    assert model.get_layer("s_nx1").kernel.shape == (n, 1, c_in, f)
    assert model.get_layer("s_1xn").kernel.shape == (1, n, f, f)
    assert _count(model, "s_") == n * c_in * f + n * f * f + f  # vs n*n*c_in*f for a full conv
    # the receptive field is still n x n: an impulse spreads over exactly a 5x5 patch
    impulse = np.zeros((1, 9, 9, c_in), "float32")
    impulse[0, 4, 4, :] = 1.0
    for layer in (model.get_layer("s_nx1"), model.get_layer("s_1xn")):
        layer.kernel.assign(np.ones(layer.kernel.shape, "float32"))
    reach = np.abs(_np(model(impulse))[0, ..., 0]) > 0
    rows, cols = np.nonzero(reach)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 6, 2, 6)


def test_depthwise_separable_conv_weights():
    k, c_in, m, f = 3, 8, 2, 16
    model = _model(
        lambda x: blocks.depthwise_separable_conv(
            x, f, k, depth_multiplier=m, batch_norm=False, name="d"
        ),
        (10, 10, c_in),
    )
    assert model.get_layer("d_dw").count_params() == k * k * c_in * m + c_in * m
    assert model.get_layer("d_pw_conv").count_params() == c_in * m * f + f
    assert model.output.shape[1:] == (10, 10, f)


def test_transposed_conv_upsamples():
    same = _model(lambda x: blocks.transposed_conv_block(x, 6, 3, strides=2, name="t"), (7, 7, 4))
    assert same.output.shape[1:] == (14, 14, 6)  # W * S
    valid = _model(
        lambda x: blocks.transposed_conv_block(x, 6, 3, strides=2, padding="valid", name="t"),
        (7, 7, 4),
    )
    assert valid.output.shape[1:] == (15, 15, 6)  # (W - 1) * S + K
    assert valid.get_layer("t_tconv").count_params() == 3 * 3 * 4 * 6


# ------------------------------------------------------------- pooling
def test_l2_pooling_is_the_root_of_the_sum_of_squares():
    x = np.arange(1, 17, dtype="float32").reshape(1, 4, 4, 1)
    model = _model(lambda t: blocks.pooling(t, "l2", pool_size=2, name="p"), (4, 4, 1))
    got = _np(model(x))[0, ..., 0]
    windows = x[0, ..., 0].reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
    np.testing.assert_allclose(got, np.sqrt((windows**2).sum(-1)), rtol=1e-6)


def test_l2_pooling_same_padding_pads_with_zeros_like_tensorflow():
    x = np.random.default_rng(1).normal(size=(1, 5, 5, 2)).astype("float32")
    model = _model(
        lambda t: blocks.pooling(t, "l2", pool_size=3, strides=2, padding="same", name="p"),
        (5, 5, 2),
    )
    got = _np(model(x))
    assert got.shape == (1, 3, 3, 2)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # total pad 2 at size 5, stride 2
    expected = np.stack(
        [
            [
                np.sqrt((padded[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] ** 2).sum((0, 1)))
                for j in range(3)
            ]
            for i in range(3)
        ]
    )
    np.testing.assert_allclose(got[0], expected, rtol=1e-5)


@pytest.mark.parametrize(("kind", "reduce"), [("max", np.max), ("avg", np.mean)])
def test_max_and_average_pooling(kind, reduce):
    x = np.random.default_rng(2).normal(size=(1, 4, 4, 1)).astype("float32")
    model = _model(lambda t: blocks.pooling(t, kind, pool_size=2, name="p"), (4, 4, 1))
    windows = x[0, ..., 0].reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
    np.testing.assert_allclose(_np(model(x))[0, ..., 0], reduce(windows, -1), rtol=1e-6)


def test_pooling_kind_is_checked():
    with pytest.raises(
        UserError,
        match=r"Invalid value for `pooling`: received 'maxx'; expected one of 'max', 'avg', 'l2'\.",
    ):
        _model(lambda t: blocks.pooling(t, "maxx", name="p"), (4, 4, 1))


def test_l2_pooling_config_round_trip():
    from service.models.layers import L2Pooling2D

    layer = L2Pooling2D(3, strides=2, padding="same", name="p")
    clone = L2Pooling2D.from_config(layer.get_config())
    assert (clone.pool_size, clone.strides, clone.padding) == ((3, 3), (2, 2), "same")


def test_local_response_normalization_matches_tensorflow():
    import tensorflow as tf

    from service.models.layers import LocalResponseNormalization

    x = np.random.default_rng(3).normal(size=(2, 3, 3, 7)).astype("float32") * 10
    got = _np(LocalResponseNormalization(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)(x))
    expected = tf.nn.local_response_normalization(
        x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75
    )
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5)


# ------------------------------------------------------------- residual
@pytest.mark.parametrize(
    ("kind", "version", "strides", "c_in", "projects"),
    [
        ("basic", 1, 1, 8, False),
        ("basic", 1, 2, 8, True),  # stride changes the shape: 1x1 projection
        ("bottleneck", 1, 1, 8, True),  # 8 -> 4 * 8 channels
        ("bottleneck", 1, 1, 32, False),
        ("bottleneck", 2, 2, 32, False),  # v2: identity + 1x1 max pool stride 2
        ("basic", 2, 1, 4, True),
    ],
)
def test_residual_block_shortcuts(kind, version, strides, c_in, projects):
    model = _model(
        lambda x: blocks.residual_block(
            x, 8, kind=kind, version=version, strides=strides, name="r"
        ),
        (8, 8, c_in),
    )
    names = [layer.name for layer in model.layers]
    assert ("r_0_conv" in names) == projects
    out_channels = 32 if kind == "bottleneck" else 8
    assert model.output.shape[1:] == (8 // strides, 8 // strides, out_channels)


def test_basic_block_parameter_count():
    model = _model(lambda x: blocks.residual_block(x, 64, kind="basic", name="r"), (8, 8, 64))
    # two 3x3 convs with biases and two batch norms with moving statistics
    assert model.count_params() == 2 * (3 * 3 * 64 * 64 + 64) + 2 * 4 * 64


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_v2_block_is_the_identity_when_its_residual_branch_is_zero(kind):
    c = 8 if kind == "basic" else 32
    model = _model(lambda x: blocks.residual_block(x, 8, kind=kind, version=2, name="r"), (6, 6, c))
    last = model.get_layer("r_2_conv" if kind == "basic" else "r_3_conv")
    last.kernel.assign(np.zeros(last.kernel.shape, "float32"))
    last.bias.assign(np.zeros(last.bias.shape, "float32"))
    x = np.random.default_rng(4).normal(size=(2, 6, 6, c)).astype("float32")
    np.testing.assert_allclose(_np(model(x)), x, rtol=1e-6)


def test_v1_block_adds_the_shortcut_before_the_relu():
    model = _model(lambda x: blocks.residual_block(x, 8, kind="basic", name="r"), (6, 6, 8))
    bn = model.get_layer("r_2_bn")
    bn.gamma.assign(np.zeros(8, "float32"))
    bn.beta.assign(np.zeros(8, "float32"))
    x = np.random.default_rng(5).normal(size=(2, 6, 6, 8)).astype("float32")
    np.testing.assert_allclose(_np(model(x)), np.maximum(x, 0), rtol=1e-6)


# ------------------------------------------------------- inception/mobile
def test_googlenet_inception_3a():
    from service.models.inception import googlenet_module

    model = _model(
        lambda x: blocks.inception_module(
            x, googlenet_module(64, 96, 128, 16, 32, 32), name="m", conv={"batch_norm": False}
        ),
        (28, 28, 192),
    )
    assert model.output.shape[1:] == (28, 28, 64 + 128 + 32 + 32)
    c = 192
    expected = (
        (c + 1) * 64
        + (c + 1) * 96
        + (9 * 96 + 1) * 128
        + (c + 1) * 16
        + (25 * 16 + 1) * 32
        + (c + 1) * 32
    )
    assert model.count_params() == expected


def test_inception_split_branches_are_concatenated():
    split = Split(((Conv(5, (1, 3)),), (Conv(7, (3, 1)),)))
    model = _model(
        lambda x: blocks.inception_module(
            x, [[Conv(4)], [Conv(6), split], [Pool("avg", 3, 1), Conv(2)]], name="m"
        ),
        (9, 9, 3),
    )
    assert model.output.shape[1:] == (9, 9, 4 + 12 + 2)
    assert model.get_layer("m_b2_2_concat").output.shape[-1] == 12


@pytest.mark.parametrize(
    ("c_in", "strides", "adds"), [(16, 1, True), (8, 1, False), (16, 2, False)]
)
def test_inverted_residual_skip_only_when_shapes_match(c_in, strides, adds):
    model = _model(
        lambda x: blocks.inverted_residual(x, 16, expansion=6, strides=strides, name="b"),
        (8, 8, c_in),
    )
    names = [layer.name for layer in model.layers]
    assert ("b_add" in names) == adds
    e = 6 * c_in
    weights = c_in * e + 9 * e + e * 16  # expand 1x1, depthwise 3x3, project 1x1 (no biases)
    assert model.count_params() == weights + 4 * (e + e + 16)  # three batch norms


# ------------------------------------------------------------- ends
def test_image_input_too_small_suggests_resizing():
    with pytest.raises(UserError, match=r"received \(8, 8, 1\); expected height and width >= 32"):
        blocks.image_input((8, 8, 1), model="m", min_size=32)
    inputs, x = blocks.image_input((8, 8, 1), model="m", resize_to=(32, 32), min_size=32)
    assert x.shape[1:] == (32, 32, 1)


def test_sequence_input_kinds():
    _, tokens = blocks.sequence_input((5,), model="m", vocab_size=10, embedding_dim=4)
    assert tokens.shape[1:] == (5, 4)
    _, rows = blocks.sequence_input((8, 8, 2), model="m")
    assert rows.shape[1:] == (8, 16)
    with pytest.raises(UserError, match=r"`input_shape`: received \(1, 2, 3, 4\)"):
        blocks.sequence_input((1, 2, 3, 4), model="m")


def test_classifier_head_is_float32_under_mixed_precision():
    keras.backend.clear_session()  # clears the policy too: set it after
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((5,))
        outputs = blocks.classifier_head(keras.layers.Dense(4)(inputs), 3, model="m")
        model = keras.Model(inputs, outputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("logits").compute_dtype == "float16"
    assert model.output.dtype == "float32"
    probs = _np(model(np.ones((2, 5), "float32")))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
