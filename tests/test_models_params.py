"""Exact parameter counts: the cheapest proof that `vgg16` is VGG-16.

The keras.applications nets are built here too (``weights=None``: nothing is
downloaded) and compared with ours, and with the published figure. No forward pass
runs at 224x224: building is enough to count.
"""

from __future__ import annotations

import pytest

from service.models import build
from tests.test_describe import zoo_row

keras = pytest.importorskip("keras")

# ours, keras.applications constructor, input shape, published count
APPLICATIONS = [
    ("vgg16", "VGG16", (224, 224, 3), 138_357_544),
    ("vgg19", "VGG19", (224, 224, 3), 143_667_240),
    ("resnet50", "ResNet50", (224, 224, 3), 25_636_712),
    ("resnet50v2", "ResNet50V2", (224, 224, 3), 25_613_800),
    ("inception_v3", "InceptionV3", (299, 299, 3), 23_851_784),
    ("mobilenet", "MobileNet", (224, 224, 3), 4_253_864),
    ("mobilenetv2", "MobileNetV2", (224, 224, 3), 3_538_984),
]


def _params(name, shape, classes=1000, **options) -> int:
    keras.backend.clear_session()
    model = build(name, input_shape=shape, num_classes=classes, **options)
    try:
        return model.count_params()
    finally:
        del model
        keras.backend.clear_session()


@pytest.mark.parametrize(("name", "app", "shape", "published"), APPLICATIONS)
def test_parameter_count_equals_keras_applications(name, app, shape, published):
    reference = getattr(keras.applications, app)(weights=None, input_shape=shape)
    try:
        expected = reference.count_params()
    finally:
        del reference
        keras.backend.clear_session()
    assert expected == published
    if shape == (224, 224, 3):  # built once for the describe tests' zoo table
        assert zoo_row(name).total_params == expected
    else:
        assert _params(name, shape) == expected


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, 62_378_344),  # single tower; LRN has no parameters
        ({"towers": 2}, 60_965_224),  # conv2/4/5 grouped as on the paper's two GPUs
    ],
)
def test_alexnet_at_227(options, expected):
    assert _params("alexnet", (227, 227, 3), **options) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet18", 11_703_912), ("resnet34", 21_823_208), ("vgg11", 132_863_336)],
)
def test_published_parameter_counts_at_224(name, expected):
    assert zoo_row(name).total_params == expected


def test_resnet18_is_torchvision_plus_conv_biases_and_bn_statistics():
    # global average pooling: the count does not depend on the input size
    model = build("resnet18", input_shape=(32, 32, 3), num_classes=1000)
    assert model.count_params() == 11_703_912
    conv_biases = sum(
        layer.bias.shape[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias
    )
    bn_statistics = sum(
        2 * layer.gamma.shape[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert model.count_params() - conv_biases - bn_statistics == 11_689_512  # torchvision


def test_lenet5_layer_by_layer():
    model = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    counts = {layer.name: layer.count_params() for layer in model.layers if layer.count_params()}
    assert counts == {
        "c1": 6 * (5 * 5 * 1 + 1),  # 156
        "c3": 16 * (5 * 5 * 6 + 1),  # 2,416: every C3 map sees all six S2 maps
        "c5": 120 * (5 * 5 * 16 + 1),  # 48,120
        "f6": 84 * (120 + 1),  # 10,164
        "logits": 10 * (84 + 1),  # 850
    }
    assert model.count_params() == 61_706
    shapes = [model.get_layer(n).output.shape[1:] for n in ("c1", "s2", "c3", "s4", "c5")]
    assert shapes == [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (1, 1, 120)]


# ----------------------------------------------------------------- RNNs
def _rnn_formula(cell: str, m: int, n: int) -> int:
    return {
        "simple_rnn": n * (m + n + 1),
        "lstm": 4 * n * (m + n + 1),
        "gru": 3 * n * (m + n + 2),  # reset_after=True: separate input and recurrent biases
    }[cell]


@pytest.mark.parametrize(
    ("cell", "keras_cls"), [("simple_rnn", "SimpleRNN"), ("lstm", "LSTM"), ("gru", "GRU")]
)
@pytest.mark.parametrize(("m", "n"), [(7, 5), (16, 32)])
def test_recurrent_layer_matches_the_formula(cell, keras_cls, m, n):
    layer = getattr(keras.layers, keras_cls)(n)
    layer.build((None, 9, m))
    assert layer.count_params() == _rnn_formula(cell, m, n)


@pytest.mark.parametrize("cell", ["simple_rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_recurrent_model_counts(cell, bidirectional):
    m, n, classes = 8, 6, 10
    model = build(
        cell,
        input_shape=(8, 8, 1),
        num_classes=classes,
        units=n,
        num_layers=2,
        bidirectional=bidirectional,
    )
    ways = 2 if bidirectional else 1
    first = ways * _rnn_formula(cell, m, n)
    second = ways * _rnn_formula(cell, ways * n, n)  # input of layer 2 = output of layer 1
    wrapper = "bidirectional{}" if bidirectional else cell + "{}"
    assert model.get_layer(wrapper.format(1)).count_params() == first
    assert model.get_layer(wrapper.format(2)).count_params() == second
    assert model.count_params() == first + second + classes * (ways * n + 1)


def test_embedding_rnn_counts():
    model = build("lstm", input_shape=(20,), num_classes=2, vocab_size=100, embedding_dim=16)
    assert model.get_layer("embedding").count_params() == 100 * 16
    assert model.get_layer("lstm1").count_params() == 4 * 64 * (16 + 64 + 1)


# ------------------------------------------------------- dense & text
def test_mlp_counts():
    model = build("mlp", input_shape=(8, 8, 1), num_classes=10, units=(32, 16))
    assert model.count_params() == (64 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)
    bn = build("mlp", input_shape=(64,), num_classes=10, units=(32,), batch_norm=True)
    assert bn.count_params() == 64 * 32 + 4 * 32 + (32 * 10 + 10)  # BN replaces the bias


def test_text_cnn_counts():
    model = build("text_cnn", input_shape=(50,), num_classes=2, vocab_size=1000, embedding_dim=32)
    convs = sum(100 * (k * 32 + 1) for k in (3, 4, 5))
    assert model.count_params() == 1000 * 32 + convs + (300 * 2 + 2)


def test_bert_tiny_counts():
    v, t, h, layers, ffn, classes = 30522, 128, 128, 2, 512, 2
    model = build("bert_tiny", input_shape=(t,), num_classes=classes)
    embeddings = v * h + t * h + 2 * h
    block = 4 * (h * h + h) + 2 * h + (h * ffn + ffn) + (ffn * h + h) + 2 * h
    assert model.count_params() == embeddings + layers * block + (h * h + h) + (
        h * classes + classes
    )
