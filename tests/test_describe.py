"""`service.models.describe` and `kts describe`: shapes, parameters and FLOPs from the math."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from service.errors import UserError
from service.models import build
from service.models.describe import (
    CNN_ZOO,
    Comparison,
    Description,
    compare,
    describe,
    describe_model,
)
from tests.helpers import assert_user_error, kts, kts_probe

keras = pytest.importorskip("keras")


@functools.cache
def imagenet_zoo() -> Comparison:
    """`compare()` over the CNN zoo at 224x224x3, built once per test session.

    test_models_params.py reads its parameter counts too: building the ImageNet nets
    is the expensive part of both files.
    """
    return compare()


def zoo_row(name: str) -> Description:
    return next(d for d in imagenet_zoo().rows if d.model == name)


def _flops(description) -> dict[str, int | None]:
    return {row.name: row.flops for row in description.rows}


def test_conv_family_flops_are_the_hand_computed_values():
    layers = keras.layers
    x = keras.Input((10, 10, 3), name="image")
    a = layers.Conv2D(8, 3, name="conv")(x)  # -> 8x8x8
    outs = [
        layers.Conv2D(4, 3, strides=2, padding="same", name="strided")(a),
        layers.Conv2D(4, 3, dilation_rate=2, name="dilated")(a),
        layers.Conv2D(8, 3, groups=2, padding="same", name="grouped")(a),
        layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(a),
        layers.SeparableConv2D(6, 3, padding="same", name="separable")(a),
        layers.Conv2DTranspose(5, 3, strides=2, padding="same", name="transposed")(a),
        layers.BatchNormalization(name="bn")(a),
        layers.AveragePooling2D(2, name="avg")(a),
        layers.MaxPooling2D(2, name="max")(a),
    ]
    gap = layers.GlobalAveragePooling2D(name="gap")(a)
    dense = layers.Dense(10, name="dense")(gap)
    model = keras.Model(x, [*(layers.Flatten()(o) for o in outs), dense])
    flops = _flops(describe_model(model))
    macs = {
        "conv": 8 * 8 * 8 * (3 * 3 * 3),  # output positions x filters x kernel volume
        "strided": 4 * 4 * 4 * (3 * 3 * 8),  # stride 2, 'same': 4x4 outputs
        "dilated": 4 * 4 * 4 * (3 * 3 * 8),  # dilation widens the window to 5, same 9 taps
        "grouped": 8 * 8 * 8 * (3 * 3 * 8 // 2),  # each filter sees half the channels
        "depthwise": 8 * 8 * 16 * (3 * 3),  # one 3x3 per output channel
        "separable": 8 * 8 * 8 * 9 + 8 * 8 * 8 * 6,  # depthwise + 1x1 pointwise
        "transposed": 8 * 8 * 8 * (3 * 3 * 5),  # each input scatters a 3x3x5 patch
        "bn": 8 * 8 * 8,
        "avg": 4 * 4 * 8 * 4,
        "max": 0,
        "gap": 8 * 8 * 8,
        "dense": 8 * 10,
    }
    assert {k: flops[k] for k in macs} == {k: 2 * v for k, v in macs.items()}


def test_sequence_layer_flops_are_the_hand_computed_values():
    layers = keras.layers
    t, m, n = 5, 7, 6
    x = keras.Input((t, m), name="sequence")
    h = layers.Dense(8, name="dense_seq")(x)  # per step
    outs = [
        layers.SimpleRNN(n, name="simple")(x),
        layers.LSTM(n, name="lstm")(x),
        layers.GRU(n, name="gru")(x),
        layers.Bidirectional(layers.LSTM(n), name="bilstm")(x),
        layers.GlobalAveragePooling1D()(layers.Conv1D(4, 3, name="conv1d")(x)),
        layers.GlobalAveragePooling1D()(
            layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(h, h)
        ),
    ]
    flops = _flops(describe_model(keras.Model(x, outs)))
    macs = {
        "dense_seq": t * m * 8,
        "simple": t * n * (m + n),
        "lstm": t * 4 * n * (m + n),
        "gru": t * 3 * n * (m + n),
        "bilstm": 2 * t * 4 * n * (m + n),
        "conv1d": 3 * 4 * (3 * m),
        # Q, K, V projections + QK^T + AV per head + output projection
        "mha": 3 * (t * 8 * 2 * 4) + 2 * (2 * t * t * 4) + t * 2 * 4 * 8,
    }
    assert {k: flops[k] for k in macs} == {k: 2 * v for k, v in macs.items()}


def test_unknown_layer_math_is_reported_not_hidden():
    x = keras.Input((4,))
    y = keras.layers.Dense(3)(keras.layers.UnitNormalization()(x))
    model = keras.Model(x, keras.layers.Identity(name="mystery")(y))
    result = describe_model(model)
    assert _flops(result)["mystery"] is None
    assert result.unknown_flops == ("Identity",)
    assert "FLOPs not counted (unknown layer math): Identity" in result.to_text()


def _vgg16_macs() -> int:
    stages = [(224, [(3, 64), (64, 64)]), (112, [(64, 128), (128, 128)])]
    stages += [(56, [(128, 256), (256, 256), (256, 256)])]
    stages += [(28, [(256, 512), (512, 512), (512, 512)]), (14, [(512, 512)] * 3)]
    convs = sum(size * size * c_out * 9 * c_in for size, pairs in stages for c_in, c_out in pairs)
    return convs + 7 * 7 * 512 * 4096 + 4096 * 4096 + 4096 * 1000


def test_vgg16_totals():
    result = zoo_row("vgg16")
    assert result.input_shape == (224, 224, 3)
    assert result.total_params == 138_357_544
    assert result.total_flops == 2 * _vgg16_macs() == 30_940_528_640  # 15.47 G multiply-adds
    assert result.depth == 16
    assert _flops(result)["block1_conv1"] == 2 * 224 * 224 * 64 * 27


def test_depth_is_the_papers_figure():
    depths = {d.model: d.depth for d in imagenet_zoo().rows}
    assert depths == {
        "alexnet": 8,
        "vgg11": 11,
        "vgg16": 16,
        "vgg19": 19,
        "inception_v1": 22,
        "inception_v3": 48,
        "resnet18": 18,
        "resnet34": 34,
        "resnet50": 50,  # the shortcuts are shorter paths
        "resnet50v2": 50,
        "mobilenet": 28,  # depthwise and pointwise count separately
        "mobilenetv2": 53,
    }
    assert describe("lenet5").depth == 5


def test_compare_table_over_the_zoo():
    table = imagenet_zoo()
    assert [d.model for d in table.rows] == list(CNN_ZOO)
    assert {d.input_shape for d in table.rows} == {(224, 224, 3)}
    lines = table.to_text().splitlines()
    vgg16 = next(line for line in lines if line.startswith("vgg16 "))
    assert vgg16.split() == ["vgg16", "224x224x3", "138,357,544", "30.94", "16"]
    resnet50 = next(line for line in lines if line.startswith("resnet50 "))
    assert resnet50.split() == ["resnet50", "224x224x3", "25,636,712", "7.74", "50"]


def test_nested_models_are_expanded():
    from service.data.preprocess import with_normalization

    core = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    wrapped = with_normalization(core, np.ones((4, 32, 32, 1), "float32"), input_name="pixels")
    result = describe_model(wrapped)
    flops = _flops(result)
    assert flops["normalize"] == 2 * 32 * 32
    assert flops["lenet5/c1"] == 2 * 28 * 28 * 6 * 25
    assert result.total_params == 61_706 + 3  # Normalization's mean, variance, count
    assert result.trainable_params == 61_706
    assert result.depth == 5


def test_describe_defaults_to_the_papers_input():
    result = describe("lenet5")
    assert (result.input_shape, result.num_classes, result.total_params) == (
        (32, 32, 1),
        10,
        61_706,
    )


def test_describe_passes_options():
    result = describe("lenet5", options={"pooling": "max"})
    assert {row.name: row.kind for row in result.rows}["s2"] == "MaxPooling2D"


def test_describe_unknown_model_fails_before_building():
    with pytest.raises(UserError, match=r"Unknown model `resnet51`\. Did you mean `resnet50`"):
        describe("resnet51")


def test_compare_table():
    table = compare(["lenet5", "simple_cnn"], input_shape=(32, 32, 1), num_classes=10)
    text = table.to_text()
    assert "lenet5" in text
    assert "61,706" in text
    assert "32x32x1" in text
    rows = table.to_dict()["models"]
    assert [(r["model"], r["params"], r["depth"]) for r in rows][0] == ("lenet5", 61_706, 5)


# ------------------------------------------------------------------ CLI
def _kts_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    """`kts ARGV` through the real entry point, in this process (TensorFlow is loaded)."""
    from pipelines.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_kts_describe_vgg16(capsys):
    code, out, _ = _kts_in_process(["describe", "vgg16"], capsys)
    assert code == 0
    assert "Total params: 138,357,544" in out
    assert "block5_conv3 (Conv2D)" in out
    assert "Total FLOPs: 30,940,528,640" in out


def test_kts_describe_is_a_kts_command(tmp_path):
    result = kts(["describe", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in ("--input-shape", "--num-classes", "--json", "--compare", "--option"):
        assert flag in result.stdout


def test_kts_describe_json(capsys):
    code, out, _ = _kts_in_process(["describe", "lenet5", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["total_params"] == 61_706
    assert data["depth"] == 5
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert layers["c3"] == {
        "name": "c3",
        "type": "Conv2D",
        "output_shape": [None, 10, 10, 16],
        "params": 2_416,
        "flops": 2 * 10 * 10 * 16 * 150,
    }


def test_kts_describe_input_shape_classes_and_options(capsys):
    argv = ["describe", "resnet18", "--input-shape", "8,8,1", "--num-classes", "10"]
    code, out, _ = _kts_in_process([*argv, "-o", "pooling=max", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["input_shape"] == [8, 8, 1]
    assert [(x["name"], x["output_shape"]) for x in data["layers"][-3:]] == [
        ("max_pool", [None, 512]),
        ("logits", [None, 10]),
        ("predictions", [None, 10]),
    ]


def test_kts_describe_too_small_input_exits_2(capsys):
    code, out, err = _kts_in_process(["describe", "alexnet", "--input-shape", "32,32,3"], capsys)
    assert (code, out) == (2, "")
    assert err == (
        "kts: error: Invalid value for `input_shape`: received (32, 32, 3); expected height and "
        "width >= 67 for model `alexnet` (or set `model.resize_to: [67, 67]`).\n"
    )


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["describe", "vgg161"], ["Unknown model `vgg161`", "Did you mean `vgg16`"]),
        (["describe", "vgg16", "--input-shape", "224,x"], ["`--input-shape`", "'224,x'"]),
        (["describe", "vgg16", "-o", "alpha=2"], ["Unknown option `model.alpha`"]),
        (["describe", "mobilenet", "-o", "alpha=wide"], ["`model.alpha`", "'wide'"]),
        (["describe"], ["give either MODEL or --compare"]),
        (["describe", "vgg16", "--compare"], ["received both"]),
        (["describe", "vgg16", "--num-classes", "0"], ["--num-classes"]),
    ],
)
def test_kts_describe_bad_input_exits_2_without_loading_tensorflow(argv, needles):
    result = kts_probe(argv)
    assert_user_error(result, *needles)
    assert result.stdout.rstrip().endswith("HEAVY=")


def test_kts_describe_compare_prints_the_table(capsys, monkeypatch):
    from service.models import describe as zoo

    calls = []

    def cached(**kwargs):
        calls.append(kwargs)
        return imagenet_zoo()

    monkeypatch.setattr(zoo, "compare", cached)
    code, out, _ = _kts_in_process(["describe", "--compare"], capsys)
    assert code == 0
    assert calls == [{"input_shape": (224, 224, 3), "num_classes": 1000}]
    assert out == imagenet_zoo().to_text() + "\n"
    code, out, _ = _kts_in_process(["describe", "--compare", "--json"], capsys)
    assert json.loads(out)["models"][2] == {
        "model": "vgg16",
        "input_shape": [224, 224, 3],
        "num_classes": 1000,
        "params": 138_357_544,
        "flops": 30_940_528_640,
        "depth": 16,
    }
