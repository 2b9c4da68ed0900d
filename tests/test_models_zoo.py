"""The model zoo as a whole: every registered model trains, saves, loads and serves.

One parametrized test walks `service.models.available()`; a model registered without
an entry in `SMALL` fails here, so new models cannot skip the round trip.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import UserError
from service.models import available, build, registry
from tests.helpers import CONFIGS, python_c

# The issue's model list: all of it must stay registered.
ISSUE_MODELS = {
    "mlp",
    "simple_cnn",
    "lenet5",
    "alexnet",
    "vgg11",
    "vgg16",
    "vgg19",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet50v2",
    "inception_v1",
    "inception_v3",
    "mobilenet",
    "mobilenetv2",
    "text_cnn",
    "conv_autoencoder",
    "simple_rnn",
    "lstm",
    "gru",
    "bert_tiny",
}
# name -> (small input shape, num_classes); None classes: the target is the input.
SMALL: dict[str, tuple[tuple[int, ...], int | None]] = {
    "mlp": ((8, 8, 1), 3),
    "simple_cnn": ((8, 8, 1), 3),
    "lenet5": ((32, 32, 1), 3),
    "alexnet": ((67, 67, 3), 3),
    "vgg11": ((32, 32, 3), 3),
    "vgg16": ((32, 32, 3), 3),
    "vgg19": ((32, 32, 3), 3),
    "resnet18": ((32, 32, 3), 3),
    "resnet34": ((32, 32, 3), 3),
    "resnet50": ((32, 32, 3), 3),
    "resnet50v2": ((32, 32, 3), 3),
    "inception_v1": ((32, 32, 3), 3),
    "inception_v3": ((75, 75, 3), 3),
    "mobilenet": ((32, 32, 3), 3),
    "mobilenetv2": ((32, 32, 3), 3),
    "text_cnn": ((12,), 3),
    "conv_autoencoder": ((8, 8, 1), None),
    "simple_rnn": ((8, 8, 1), 3),
    "lstm": ((8, 8, 1), 3),
    "gru": ((8, 8, 1), 3),
    "bert_tiny": ((12,), 3),
}
# Narrower fully connected heads for the round trip: same layers, a fifth of the bytes
# to write and read back twice.
SMALL_OPTIONS: dict[str, dict[str, int]] = {
    "alexnet": {"fc_units": 256},
    "vgg11": {"fc_units": 256},
    "vgg16": {"fc_units": 256},
    "vgg19": {"fc_units": 256},
}
# Deep graphs whose SavedModel tracing takes tens of seconds on two CPU cores.
SLOW = {"resnet34", "resnet50", "resnet50v2", "inception_v1", "inception_v3", "mobilenetv2"}


def _params():
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in available()
    ]


def _np(tensor) -> np.ndarray:
    """A model output as NumPy (`np.asarray` on a TF tensor warns under NumPy 2)."""
    from keras import ops

    return ops.convert_to_numpy(tensor)


def _batch(shape: tuple[int, ...], n: int = 2) -> np.ndarray:
    rng = np.random.default_rng(7)
    if len(shape) == 1:  # token ids, the tail padded with 0
        tokens = rng.integers(1, 50, size=(n, *shape)).astype("int32")
        tokens[:, -2:] = 0
        return tokens
    return rng.normal(size=(n, *shape)).astype("float32")


def test_every_issue_model_is_registered():
    assert ISSUE_MODELS <= set(available())


@pytest.mark.parametrize("name", available())
def test_every_model_has_a_small_spec(name):
    assert name in SMALL, f"add `{name}` to SMALL so the round trip covers it"


def test_importing_the_zoo_does_not_import_tensorflow():
    probe = (
        "import sys, service.models as m; m.validate_options('resnet18', {'pooling': 'max'}); "
        "print(len(m.available()), 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = python_c(probe, check=True)
    assert out.stdout.split() == [str(len(available())), "False", "False"]


@pytest.mark.parametrize("name", _params())
def test_train_save_load_and_serve_round_trip(name, tmp_path, keras_seed):
    """Forward pass, one training step, .keras and SavedModel round trips, same outputs."""
    import keras
    import tensorflow as tf

    shape, classes = SMALL[name]
    keras.backend.clear_session()
    model = build(name, input_shape=shape, num_classes=classes, **SMALL_OPTIONS.get(name, {}))
    x = _batch(shape)
    y = x if classes is None else np.array([0, classes - 1])

    # Eager: the graph-mode step is exercised by the pipeline runs; tracing a
    # training step of every deep net would cost minutes here.
    # Clipped: a batch of two at a 1x1 feature map gives batch norm near-zero
    # variances, and the raw gradient of such a step can blow the stem up.
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, clipnorm=1.0),
        loss="mse" if classes is None else "sparse_categorical_crossentropy",
        run_eagerly=True,
    )
    weights = [w.numpy().copy() for w in model.trainable_weights]
    loss = float(model.train_on_batch(x, y))
    assert np.isfinite(loss)
    changed = [
        not np.array_equal(a, w.numpy())
        for a, w in zip(weights, model.trainable_weights, strict=True)
    ]
    assert any(changed), "one training step left every weight unchanged"

    expected = _np(model(x, training=False))
    assert expected.dtype == np.float32
    if classes is not None:
        assert expected.shape == (2, classes)
        np.testing.assert_allclose(expected.sum(axis=-1), 1.0, rtol=1e-5)
    else:
        assert expected.shape == x.shape
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(_np(loaded(x, training=False)), expected, rtol=1e-5, atol=1e-6)

    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(_np(served.serve(tf.constant(x))), expected, rtol=1e-5, atol=1e-6)


# Models with their own kinds of layers (the classifiers share `classifier_head`; the
# autoencoder has its own output).
MIXED_PRECISION = [
    "mlp",
    "lenet5",  # average pooling
    "alexnet",  # LRN (a custom layer)
    "text_cnn",
    "conv_autoencoder",
    "gru",
    "bert_tiny",  # position embedding, padding mask, attention
]


@pytest.mark.parametrize("name", MIXED_PRECISION)
def test_output_is_float32_under_mixed_precision(name):
    import keras

    shape, classes = SMALL[name]
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build(name, input_shape=shape, num_classes=classes)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.outputs[0].dtype == "float32"
    # and the hidden layers really do compute in float16
    assert any(layer.compute_dtype == "float16" for layer in model.layers)


# --------------------------------------------------------------- options
def test_unknown_model_lists_a_close_name():
    with pytest.raises(UserError, match=r"Unknown model `vgg161`\. Did you mean `vgg16`\?"):
        build("vgg161", input_shape=(32, 32, 3), num_classes=3)


def test_options_are_type_checked_before_building():
    with pytest.raises(UserError, match=r"Invalid value for `model\.alpha`: received 'wide'"):
        registry.validate_options("mobilenet", {"alpha": "wide"})
    with pytest.raises(UserError, match=r"Invalid value for `model\.depth`: received 17"):
        registry.validate_options("resnet50", {"depth": 17})
    with pytest.raises(UserError, match=r"Unknown option `model\.dropuot`.*Did you mean `dropout`"):
        registry.validate_options("vgg16", {"dropuot": 0.1})


def test_yaml_lists_become_tuples():
    assert registry.validate_options("lenet5", {"resize_to": [32, 32]}) == {"resize_to": (32, 32)}


@pytest.mark.parametrize(
    ("name", "shape", "options", "message"),
    [
        ("alexnet", (32, 32, 3), {}, r"height and width >= 67 for model `alexnet`.*resize_to"),
        ("vgg16", (8, 8, 1), {}, r"height and width >= 32 for model `vgg16`"),
        ("inception_v3", (64, 64, 3), {}, r">= 75 for model `inception_v3`"),
        ("lenet5", (8, 8, 1), {}, r">= 16 for model `lenet5`"),
        ("vgg16", (64, 64, 3), {"resize_to": (8, 8)}, r"`model\.resize_to`: received \(8, 8\)"),
        ("resnet18", (32, 32), {}, r"`input_shape`: received \(32, 32\); expected \(height"),
        ("mobilenet", (32, 32, 3), {"alpha": 0.0}, r"`model\.alpha`: received 0\.0; expected > 0"),
        ("vgg16", (32, 32, 3), {"pooling": "maxx"}, r"`model\.pooling`: received 'maxx'"),
        ("vgg16", (32, 32, 3), {"dropout": 1.0}, r"`model\.dropout`: received 1\.0"),
        ("text_cnn", (4,), {"kernel_sizes": (3, 5)}, r"`model\.kernel_sizes`.*at most 4 steps"),
        (
            "bert_tiny",
            (8,),
            {"num_heads": 3},
            r"`model\.num_heads`: received 3; expected a divisor",
        ),
        (
            "lstm",
            (8, 8, 1),
            {"vocab_size": 100},
            r"`model\.vocab_size`: received 100; expected null",
        ),
        ("lstm", (8,), {}, r"`model\.vocab_size`: received None; expected a vocabulary size"),
        ("mlp", (8,), {"task": "ranking"}, r"`model\.task`: received 'ranking'"),
        ("conv_autoencoder", (6, 6, 1), {}, r"divisible by 4"),
    ],
)
def test_bad_input_is_a_user_error_naming_the_field(name, shape, options, message):
    with pytest.raises(UserError, match=message):
        build(name, input_shape=shape, num_classes=SMALL[name][1], **options)


def test_autoencoder_refuses_a_classifier_head():
    with pytest.raises(UserError, match=r"`num_classes`: received 10; expected null"):
        build("conv_autoencoder", input_shape=(8, 8, 1), num_classes=10)


# ----------------------------------------------------- behaviour by family
def test_small_inputs_work_for_the_small_nets():
    lenet = build("lenet5", input_shape=(8, 8, 1), num_classes=10, padding="same")
    assert lenet.get_layer("c5").output.shape[1:] == (1, 1, 120)
    resized = build("vgg11", input_shape=(8, 8, 1), num_classes=10, resize_to=(32, 32))
    assert resized.get_layer("resize").output.shape[1:] == (32, 32, 1)
    assert resized.get_layer("block5_pool").output.shape[1:] == (1, 1, 512)


def test_rnn_reads_image_rows_as_a_sequence():
    model = build("lstm", input_shape=(8, 8, 1), num_classes=10)
    assert model.get_layer("rows_as_sequence").output.shape[1:] == (8, 8)
    image = _batch((8, 8, 1), n=1)
    rows = image.reshape(1, 8, 8)
    seq_model = build("lstm", input_shape=(8, 8), num_classes=10)
    seq_model.set_weights(model.get_weights())
    np.testing.assert_allclose(_np(model(image)), _np(seq_model(rows)), rtol=1e-6)


def test_rnn_sequence_to_sequence_and_bidirectional_shapes():
    model = build(
        "gru",
        input_shape=(6, 4),
        num_classes=2,
        output="sequence_to_sequence",
        bidirectional=True,
        num_layers=2,
        task="regression",
    )
    assert model.output.shape == (None, 6, 2)
    assert model.get_layer("bidirectional2").output.shape == (None, 6, 32 * 2 * 2)
    assert model.get_layer("predictions").activation.__name__ == "linear"


@pytest.mark.parametrize("name", ["lstm", "bert_tiny"])
def test_padding_tokens_are_masked(name):
    """Output for [a, b, c, 0, 0] equals the output for [a, b, c]: padding is skipped."""
    options = {"vocab_size": 50, "dropout": 0.0}
    if name == "bert_tiny":
        options["max_length"] = 5
    padded = build(name, input_shape=(5,), num_classes=3, **options)
    short = build(name, input_shape=(3,), num_classes=3, **options)
    short.set_weights(padded.get_weights())
    tokens = np.array([[5, 6, 7]], dtype="int32")
    with_padding = np.pad(tokens, ((0, 0), (0, 2)))
    np.testing.assert_allclose(_np(padded(with_padding)), _np(short(tokens)), rtol=1e-5, atol=1e-6)


def test_bert_tiny_reads_images_through_an_input_projection():
    model = build("bert_tiny", input_shape=(8, 8, 1), num_classes=10)
    assert model.get_layer("input_projection").output.shape == (None, 8, 128)
    assert model.get_layer("cls_token").output.shape == (None, 128)


@pytest.mark.parametrize(
    ("task", "units", "activation"),
    [
        ("multiclass", 4, "softmax"),
        ("binary", 1, "sigmoid"),
        ("multilabel", 4, "sigmoid"),
        ("regression", 4, "linear"),
    ],
)
def test_mlp_output_activation_follows_the_task(task, units, activation):
    model = build("mlp", input_shape=(8,), num_classes=4, task=task)
    assert model.output.shape == (None, units)
    assert model.get_layer("predictions").activation.__name__ == activation


@pytest.mark.parametrize(
    "activation", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu"]
)
def test_mlp_hidden_activations(activation):
    model = build("mlp", input_shape=(8,), num_classes=3, activation=activation, dropout=0.2)
    assert model.get_layer(f"dense1_{activation}").activation.__name__ == activation
    dropout = model.get_layer("dense1_dropout")
    assert type(dropout).__name__ == ("AlphaDropout" if activation == "selu" else "Dropout")


def test_mlp_l1_l2_penalties_enter_the_loss():
    model = build("mlp", input_shape=(4,), num_classes=2, units=(3,), l1=0.5, l2=0.25)
    model(np.zeros((1, 4), "float32"))
    kernels = [model.get_layer("dense1").kernel, model.get_layer("logits").kernel]
    expected = sum(
        0.5 * np.abs(k.numpy()).sum() + 0.25 * np.square(k.numpy()).sum() for k in kernels
    )
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_inception_v1_aux_heads_add_two_outputs():
    model = build("inception_v1", input_shape=(96, 96, 3), num_classes=5, aux_heads=True)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 5)] * 3
    assert model.get_layer("aux1_predictions").dtype_policy.compute_dtype == "float32"


def test_l2_pooling_model_round_trips_through_keras_format(tmp_path):
    import keras

    model = build("lenet5", input_shape=(32, 32, 1), num_classes=3, pooling="l2")
    x = _batch((32, 32, 1))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("s2")).__name__ == "L2Pooling2D"
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), rtol=1e-6)


# ------------------------------------------------------------- configs
@pytest.mark.parametrize("config", ["digits_lenet.yaml", "digits_rnn.yaml", "digits_resnet.yaml"])
def test_example_configs_validate_and_build_on_digits(config):
    from service.config import load_config

    cfg = load_config(CONFIGS / config)
    model = build(cfg.model.type, input_shape=(8, 8, 1), num_classes=10, **cfg.model.options)
    assert model.output.shape == (None, 10)
