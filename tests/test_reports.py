"""Report pictures and the model card, on small models trained for a few epochs here.

Models are wrapped exactly as the pipeline serves them: ``Input -> Normalization ->
inner functional model`` (`service.data.preprocess.with_normalization`), so every
picture is checked on a nested model.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from service import reports
from service.errors import UserError

CNN_PICTURES = ("first_layer_filters.png", "feature_maps.png", "grad_cam.png")


def assert_png(path: Path) -> np.ndarray:
    """The file is a PNG that Pillow opens and it is not blank; returns grey pixels."""
    from PIL import Image

    assert path.is_file(), path
    with Image.open(path) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("L"), dtype="float64")
    assert min(pixels.shape) > 50, pixels.shape
    assert pixels.var() > 0, f"{path} is blank"
    return pixels


def _wrap(core, x_train):
    from service.data.preprocess import with_normalization

    return with_normalization(core, x_train, input_name="inputs")


@pytest.fixture(scope="module")
def digits_cnn():
    """A tiny CNN on sklearn digits (8x8x1, raw pixels 0..16), trained 2 epochs."""
    import keras
    from keras import layers
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(1234)
    digits = load_digits()
    x = digits.images[..., None].astype("float32")
    y = digits.target.astype("int64")
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    inputs = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(8, 3, padding="same", name="block1_conv")(inputs)
    h = layers.Activation("relu", name="block1_act")(h)
    h = layers.MaxPooling2D(2, name="block1_pool")(h)
    h = layers.Conv2D(16, 3, padding="same", name="block2_conv")(h)
    h = layers.Activation("relu", name="block2_act")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(32, activation="relu", name="head_dense")(h)
    h = layers.Dense(10, name="logits")(h)
    outputs = layers.Activation("softmax", name="predictions")(h)
    model = _wrap(keras.Model(inputs, outputs, name="tiny_cnn"), x_train)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x_train, y_train, epochs=2, batch_size=64, validation_split=0.2, verbose=0
    ).history
    probs = np.asarray(model(x_test, training=False))
    return {
        "model": model,
        "history": history,
        "x_test": x_test,
        "y_test": y_test,
        "probs": probs,
        "names": [str(i) for i in range(10)],
    }


@pytest.fixture(scope="module")
def cancer_mlp():
    """A tiny MLP on sklearn breast_cancer (30 features), one sigmoid unit, 2 epochs."""
    import keras
    from keras import layers
    from sklearn.datasets import load_breast_cancer

    keras.utils.set_random_seed(1234)
    data = load_breast_cancer()
    x = data.data.astype("float32")
    y = data.target.astype("int64")
    x_train, y_train, x_test, y_test = x[:450], y[:450], x[450:], y[450:]

    inputs = keras.Input((30,), name="features")
    h = layers.Dense(16, activation="relu", name="hidden")(inputs)
    outputs = layers.Dense(1, activation="sigmoid", name="predictions")(h)
    model = _wrap(keras.Model(inputs, outputs, name="tiny_mlp"), x_train)
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x_train, y_train, epochs=2, batch_size=32, validation_split=0.2, verbose=0
    ).history
    probs = np.asarray(model(x_test, training=False))
    return {
        "model": model,
        "history": history,
        "x_test": x_test,
        "y_test": y_test,
        "probs": probs,
        "names": list(data.target_names),
    }


def _quadrant_data(n: int, rng: np.random.Generator):
    """16x16 noise images with stripes in every quadrant; only the top-left's matter.

    Class 0: horizontal stripes top-left, class 1: vertical. The other three quadrants
    get stripes of a random orientation, so every quadrant carries the same energy and
    only the top-left one carries the class.
    """
    x = rng.normal(0.0, 0.5, (n, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 2, n)
    horizontal = np.zeros((8, 8), "float32")
    horizontal[::2] = 1.0
    patterns = (horizontal, horizontal.T)
    for i in range(n):
        for q, (r, c) in enumerate(((0, 0), (0, 8), (8, 0), (8, 8))):
            orientation = y[i] if q == 0 else rng.integers(0, 2)
            x[i, r : r + 8, c : c + 8, 0] += patterns[orientation]
    return x, y


@pytest.fixture(scope="module")
def quadrant_cnn():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = _quadrant_data(1000, rng)
    x_test, y_test = _quadrant_data(32, rng)
    inputs = keras.Input((16, 16, 1), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = layers.MaxPooling2D(2, name="pool1")(h)
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(2, name="logits")(h)
    outputs = layers.Activation("softmax", name="predictions")(h)
    model = _wrap(keras.Model(inputs, outputs, name="quadrant_cnn"), x)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    accuracy = float((np.asarray(model(x_test, training=False)).argmax(-1) == y_test).mean())
    assert accuracy >= 0.9, f"quadrant CNN did not learn the task ({accuracy})"
    return model, x_test


# --------------------------------------------------------------- graph taps


def test_tap_flat_model_reproduces_nested_model(digits_cnn):
    import keras

    from service.reports._graph import conv_layers, tap, walk_layers

    model, x = digits_cnn["model"], digits_cnn["x_test"][:16]
    convs = conv_layers(model)
    assert [c.name for c in convs] == ["block1_conv", "block2_conv"]
    assert "normalize" in [layer.name for layer in walk_layers(model)]
    inner = model.get_layer("tiny_cnn")
    logits = inner.get_layer("logits")
    taps = tap(model, convs, inputs_of=[logits])
    outs = taps.model(x, training=False)
    np.testing.assert_allclose(outs[0], model(x, training=False), atol=1e-5)
    assert tuple(outs[taps.position(convs[1], "output")].shape) == (16, 4, 4, 16)
    # The tapped tensor is what the inner model computes on normalized input.
    head = keras.Model(inner.inputs, inner.get_layer("head_dense").output)
    expected = head(model.get_layer("normalize")(x), training=False)
    np.testing.assert_allclose(outs[taps.position(logits, "input")], expected, atol=1e-5)

    # Layers after the nested model and a second level of nesting are traced too.
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, keras.layers.Rescaling(2.0, name="twice")(model(inputs)))
    taps = tap(outer, [convs[0]])
    outs = taps.model(x, training=False)
    np.testing.assert_allclose(outs[0], 2.0 * model(x, training=False), atol=1e-5)
    assert tuple(outs[taps.position(convs[0], "output")].shape) == (16, 8, 8, 8)


# --------------------------------------------------------------- learning curves


def _vertical_lines_at(ax, x: float) -> list:
    return [
        line
        for line in ax.get_lines()
        if len(line.get_xdata()) == 2 and np.allclose(np.asarray(line.get_xdata(), float), x)
    ]


def test_learning_curves_marks_best_epoch_in_every_panel(digits_cnn, tmp_path):
    from service.reports.curves import _learning_curves_figure

    history = digits_cnn["history"]
    path = reports.learning_curves(history, tmp_path / "lc.png", best_epoch=1)
    assert path == tmp_path / "lc.png"
    assert_png(path)

    fig, best = _learning_curves_figure(history, best_epoch=1)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert sorted(ax.get_title() for ax in axes) == ["accuracy", "loss"]
    for ax in axes:
        assert _vertical_lines_at(ax, 1.0), f"no best-epoch line in panel {ax.get_title()}"
        assert not _vertical_lines_at(ax, 0.0)
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == ["train", "validation", "best epoch 1"]
    assert best == 1


def test_learning_curves_infers_best_epoch_from_val_loss(tmp_path):
    from service.reports.curves import _learning_curves_figure

    history = {"loss": [1.0, 0.6, 0.4, 0.3], "val_loss": [0.9, 0.5, 0.45, 0.7], "mae": [3, 2, 1, 1]}
    fig, best = _learning_curves_figure(history, best_epoch=None)
    assert best == 2
    assert all(_vertical_lines_at(ax, 2.0) for ax in fig.axes if ax.get_title())
    assert_png(reports.learning_curves(history, tmp_path / "lc.png", best_epoch=None))


def test_learning_curves_rejects_bad_input(tmp_path):
    with pytest.raises(
        UserError, match=r"`best_epoch`: received 7; expected an epoch index in \[0, 2\]"
    ):
        reports.learning_curves({"loss": [3.0, 2.0, 1.0]}, tmp_path / "x.png", best_epoch=7)
    with pytest.raises(UserError, match=r"`history`"):
        reports.learning_curves({}, tmp_path / "x.png", best_epoch=None)
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------- confusion matrix


def test_confusion_matrix_counts_equal_sklearn(digits_cnn, tmp_path):
    from sklearn.metrics import confusion_matrix as sk_confusion

    from service.reports.curves import _confusion_matrix_figure

    y, probs, names = digits_cnn["y_test"], digits_cnn["probs"], digits_cnn["names"]
    expected = sk_confusion(y, probs.argmax(-1), labels=range(10))
    assert expected.trace() > 0.5 * len(y), "the CNN should be better than chance"
    assert_png(reports.confusion_matrix(y, probs, names, tmp_path / "cm.png"))

    fig, counts = _confusion_matrix_figure(y, probs, names)
    np.testing.assert_array_equal(counts, expected)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    count_ax, norm_ax = panels["counts"], panels["row-normalized (recall)"]
    np.testing.assert_array_equal(count_ax.images[0].get_array(), expected)
    drawn = np.array([int(t.get_text()) for t in count_ax.texts]).reshape(10, 10)
    np.testing.assert_array_equal(drawn, expected)
    normalized = np.asarray(norm_ax.images[0].get_array())
    np.testing.assert_allclose(normalized, expected / expected.sum(1, keepdims=True))


def test_confusion_matrix_binary_probabilities_and_errors(cancer_mlp, tmp_path):
    from sklearn.metrics import confusion_matrix as sk_confusion

    from service.reports.curves import confusion_counts

    y, probs = cancer_mlp["y_test"], cancer_mlp["probs"]
    np.testing.assert_array_equal(
        confusion_counts(y, probs, 2), sk_confusion(y, (probs[:, 0] >= 0.5).astype(int))
    )
    assert_png(reports.confusion_matrix(y, probs, cancer_mlp["names"], tmp_path / "cm.png"))
    with pytest.raises(UserError, match=r"`y_pred`: received 3; expected class ids in \[0, 1\]"):
        reports.confusion_matrix([0, 1], [0, 3], ["a", "b"], tmp_path / "bad.png")


# --------------------------------------------------------------- CNN pictures


def test_first_layer_filters(digits_cnn, cancer_mlp, tmp_path):
    path = reports.first_layer_filters(digits_cnn["model"], tmp_path / "filters.png")
    assert path == tmp_path / "filters.png"
    assert_png(path)
    assert reports.first_layer_filters(cancer_mlp["model"], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_feature_maps_default_and_named_layers(digits_cnn, cancer_mlp, tmp_path):
    model, image = digits_cnn["model"], digits_cnn["x_test"][0]
    assert_png(reports.feature_maps(model, image, tmp_path / "fm.png"))
    assert_png(
        reports.feature_maps(
            model, image[None], tmp_path / "fm2.png", layer_names=["block1_act"], max_channels=4
        )
    )
    with pytest.raises(
        UserError, match=r"`layer_name`: received 'conv9'; expected one of .*'block2_conv'"
    ):
        reports.feature_maps(model, image, tmp_path / "x.png", layer_names=["conv9"])
    with pytest.raises(UserError, match=r"`image.shape`: received \(9, 9, 1\)"):
        reports.feature_maps(model, np.zeros((9, 9, 1)), tmp_path / "x.png")
    with pytest.raises(reports.NotApplicable, match=r"not \(height, width, channels\)"):
        reports.feature_maps(cancer_mlp["model"], cancer_mlp["x_test"][0], tmp_path / "x.png")


def test_grad_cam_heatmap_shape_range_and_class_dependence(digits_cnn):
    model, image = digits_cnn["model"], digits_cnn["x_test"][3]
    heat = reports.grad_cam_heatmap(model, image)
    assert heat.shape == (8, 8)
    assert heat.dtype == np.float32
    assert heat.min() >= 0.0
    assert heat.max() == pytest.approx(1.0)
    assert heat.std() > 0.01, "heat map is constant"
    predicted = int(digits_cnn["probs"][3].argmax())
    np.testing.assert_allclose(reports.grad_cam_heatmap(model, image, class_id=predicted), heat)
    other = reports.grad_cam_heatmap(model, image, class_id=(predicted + 5) % 10)
    assert not np.allclose(other, heat), "Grad-CAM must depend on the explained class"
    early = reports.grad_cam_heatmap(model, image, layer_name="block1_conv")
    assert early.shape == (8, 8)
    assert not np.allclose(early, heat)
    with pytest.raises(UserError, match=r"`class_ids`: received \[10\]"):
        reports.grad_cam_heatmap(model, image, class_id=10)
    with pytest.raises(UserError, match=r"`layer_name`: received 'head_dense'"):
        reports.grad_cam_heatmap(model, image, layer_name="head_dense")


def test_grad_cam_scores_logits_whether_softmax_is_fused_or_separate():
    """A Dense(softmax) head and Dense + Activation(softmax) with the same weights agree.

    Grad-CAM differentiates the pre-softmax score; for a fused head that is rebuilt
    from the Dense kernel, for a separate Activation it is the Activation's input.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 1))
    conv = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")
    flatten = layers.Flatten(name="flatten")
    fused = layers.Dense(3, activation="softmax", name="fused")
    linear = layers.Dense(3, name="linear")
    features = flatten(conv(inputs))
    fused_model = keras.Model(inputs, fused(features))
    split_model = keras.Model(
        inputs, layers.Activation("softmax", name="predictions")(linear(features))
    )
    linear.set_weights(fused.get_weights())
    image = np.random.default_rng(1).normal(size=(8, 8, 1)).astype("float32")
    maps = []
    for class_id in range(3):
        a = reports.grad_cam_heatmap(fused_model, image, class_id=class_id)
        b = reports.grad_cam_heatmap(split_model, image, class_id=class_id)
        np.testing.assert_allclose(a, b, atol=1e-5)
        maps.append(a)
    assert not np.allclose(maps[0], maps[1])


def test_grad_cam_finds_the_region_that_carries_the_class(quadrant_cnn):
    """Only the top-left quadrant decides the class; Grad-CAM must point there.

    Every quadrant has the same stripe energy, so a map that ignores gradients (plain
    activations) scores about 1 on the ratio below. Grad-CAM is class-discriminative:
    for the predicted class the top-left is hotter than the rest, and for the other
    class (whose evidence is absent from the top-left) it is colder.
    """
    from service.reports.cnn import _grad_cam_batch

    model, x = quadrant_cnn
    heat, predicted, _, layer = _grad_cam_batch(model, x, layer_name=None, class_ids=None)
    assert layer == "conv2"
    counter, *_ = _grad_cam_batch(model, x, layer_name=None, class_ids=1 - predicted)

    def top_left_ratio(h: np.ndarray) -> float:
        top_left = h[:, :8, :8].mean()
        rest = (h.sum() - h[:, :8, :8].sum()) / (h.size - h[:, :8, :8].size)
        return float(top_left / rest)

    assert top_left_ratio(heat) > 1.3
    assert top_left_ratio(counter) < 1.0
    single = reports.grad_cam_heatmap(model, x[0])
    np.testing.assert_allclose(single, heat[0], atol=1e-5)


def test_grad_cam_picture(digits_cnn, cancer_mlp, tmp_path):
    x = digits_cnn["x_test"][:3]
    path = reports.grad_cam(
        digits_cnn["model"], x, tmp_path / "gc.png", class_names=digits_cnn["names"]
    )
    assert_png(path)
    with pytest.raises(reports.NotApplicable, match=r"not an image"):
        reports.grad_cam(cancer_mlp["model"], np.zeros((2, 4, 4, 1)), tmp_path / "x.png")
    with pytest.raises(UserError, match=r"`images.shape`: received \(8, 8, 1\)"):
        reports.grad_cam(digits_cnn["model"], x[0], tmp_path / "x.png")


# --------------------------------------------------------------- projection


@pytest.mark.parametrize("fixture", ["digits_cnn", "cancer_mlp"])
def test_projection_cnn_and_mlp(fixture, request, tmp_path):
    from service.reports.projection import penultimate_features

    case = request.getfixturevalue(fixture)
    feats, layer = penultimate_features(case["model"], case["x_test"][:20])
    expected = {"digits_cnn": (32, "logits"), "cancer_mlp": (16, "predictions")}[fixture]
    assert (feats.shape, layer) == ((20, expected[0]), expected[1])
    task = "multiclass" if fixture == "digits_cnn" else "binary"
    path = reports.projection(
        case["model"], case["x_test"], case["y_test"], case["names"], tmp_path / "p.png", task=task
    )
    assert_png(path)


def test_projection_regression_and_errors(cancer_mlp, tmp_path):
    x = cancer_mlp["x_test"]
    target = x[:, 0] * 0.5
    assert_png(
        reports.projection(
            cancer_mlp["model"], x, target, None, tmp_path / "r.png", task="regression"
        )
    )
    with pytest.raises(UserError, match=r"`task`: received 'clustering'"):
        reports.projection(
            cancer_mlp["model"], x, target, None, tmp_path / "r.png", task="clustering"
        )


# --------------------------------------------------------------- model card


def _links(card: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card)


def test_model_card_tables_links_and_layers(tmp_path):
    path = reports.model_card(
        tmp_path / "card" / "model_card.md",
        name="digits-cnn",
        data={"source": "sklearn digits", "rows": 1797},
        split={"train": 1149, "val": 288, "test": 360, "class_counts": {"0": 36, "1": 37}},
        metrics={"test_accuracy": 0.973333, "test_loss": 0.08123, "tiny": 2.5e-6},
        params={"training.optimizer.name": "adam", "note": "a|b"},
        images=["learning_curves.png", str(tmp_path / "card" / "grad_cam.png")],
        layer_table="layer   params\nconv    80",
        skipped={"feature_maps.png": "model has no 2-D convolution layer"},
    )
    card = path.read_text()
    assert card.startswith("# Model card: digits-cnn")
    for text in ("| test_accuracy | 0.9733 |", "| test_loss | 0.0812 |", "| tiny | 2.5e-06 |"):
        assert text in card
    assert "| split.class_counts.0 | 36 |" not in card
    assert "| class_counts.0 | 36 |" in card
    assert "a\\|b" in card
    assert "```text\nlayer   params\nconv    80\n```" in card
    assert _links(card) == ["learning_curves.png", "grad_cam.png"]
    assert "- feature_maps.png: model has no 2-D convolution layer" in card
    with pytest.raises(UserError, match=r"`name`: received ''"):
        reports.model_card(
            tmp_path / "x.md",
            name="",
            data={},
            split={},
            metrics={},
            params={},
            images=[],
            layer_table=None,
        )


# --------------------------------------------------------------- write_all


def test_write_all_cnn_writes_every_picture_and_links_them(digits_cnn, tmp_path):
    case = digits_cnn
    metrics = {"test_accuracy": float((case["probs"].argmax(-1) == case["y_test"]).mean())}
    paths = reports.write_all(
        case["model"],
        history=case["history"],
        best_epoch=1,
        x_test=case["x_test"],
        y_test=case["y_test"],
        y_pred=case["probs"],
        class_names=case["names"],
        task="multiclass",
        out_dir=tmp_path / "reports",
        card_info={
            "name": "tiny-cnn",
            "metrics": metrics,
            "params": {"epochs": 2},
            "layer_table": "t",
        },
    )
    names = [p.name for p in paths]
    assert names == [
        "learning_curves.png",
        "confusion_matrix.png",
        "first_layer_filters.png",
        "feature_maps.png",
        "grad_cam.png",
        "projection.png",
        "model_card.md",
    ]
    for p in paths[:-1]:
        assert_png(p)
    card = paths[-1].read_text()
    assert _links(card) == names[:-1]
    assert all((tmp_path / "reports" / link).is_file() for link in _links(card))
    assert f"| test_accuracy | {metrics['test_accuracy']:.4f} |" in card
    assert "Not drawn" not in card


def test_write_all_mlp_skips_cnn_pictures_with_reasons(cancer_mlp, tmp_path):
    case = cancer_mlp
    paths = reports.write_all(
        case["model"],
        history=case["history"],
        best_epoch=None,
        x_test=case["x_test"],
        y_test=case["y_test"],
        y_pred=case["probs"],
        class_names=case["names"],
        task="binary",
        out_dir=tmp_path,
        card_info={"metrics": {"test_accuracy": 0.9}},
    )
    assert [p.name for p in paths] == [
        "learning_curves.png",
        "confusion_matrix.png",
        "projection.png",
        "model_card.md",
    ]
    for p in paths[:-1]:
        assert_png(p)
    card = paths[-1].read_text()
    assert card.startswith("# Model card: tiny_mlp")
    assert _links(card) == ["learning_curves.png", "confusion_matrix.png", "projection.png"]
    assert "- first_layer_filters.png: model has no Conv2D layer" in card
    assert re.search(r"- feature_maps\.png: model input has shape \(30,\), not \(height", card)
    assert "- grad_cam.png: model input is not an image" in card
    assert not any((tmp_path / name).exists() for name in CNN_PICTURES)


def test_write_all_regression_and_failures(cancer_mlp, tmp_path, monkeypatch):
    case = cancer_mlp
    kwargs = dict(
        history=None,
        best_epoch=None,
        x_test=case["x_test"],
        y_test=case["x_test"][:, 0],
        y_pred=case["probs"],
        class_names=None,
        task="regression",
        card_info={},
    )
    paths = reports.write_all(case["model"], out_dir=tmp_path / "r", **kwargs)
    assert [p.name for p in paths] == ["projection.png", "model_card.md"]
    card = paths[-1].read_text()
    assert "- learning_curves.png: no training history given" in card
    assert "- confusion_matrix.png: task 'regression' is not single-label classification" in card

    # An unexpected failure is raised in strict mode (KTS_STRICT=1, set for the test
    # suite), listed otherwise.
    bad = dict(kwargs, history={"loss": [1.0, 0.5]}, best_epoch=5)
    with pytest.raises(UserError, match=r"`best_epoch`: received 5"):
        reports.write_all(case["model"], out_dir=tmp_path / "s", **bad)
    paths = reports.write_all(case["model"], out_dir=tmp_path / "t", strict=False, **bad)
    assert (
        "- learning_curves.png: failed: UserError: Invalid value for `best_epoch`"
        in paths[-1].read_text()
    )
    monkeypatch.setenv("KTS_STRICT", "0")
    paths = reports.write_all(case["model"], out_dir=tmp_path / "v", **bad)
    assert "- learning_curves.png: failed: UserError" in paths[-1].read_text()
    with pytest.raises(UserError, match=r"`card_info key`: received 'metric'"):
        reports.write_all(
            case["model"], out_dir=tmp_path / "u", **dict(kwargs, card_info={"metric": {}})
        )
