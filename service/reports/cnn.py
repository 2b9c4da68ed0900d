"""Looking inside a CNN: first-layer filters, feature maps and Grad-CAM heat maps.

All functions take the model as trained and served (raw inputs; preprocessing layers
and nested models allowed) and raw input images; see `service.reports._graph` for how
inner layers are reached. Gradients use the TensorFlow backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import invalid_value
from service.reports._common import (
    NotApplicable,
    class_label,
    minmax,
    mosaic,
    new_figure,
    one_image,
    panel_grid,
    save,
    show_image,
)
from service.reports._graph import conv_layers, find_layer, output_layer, tap, walk_layers

_SQUASHING = ("softmax", "sigmoid")


def first_layer_filters(model: Any, path: str | Path, *, max_filters: int = 64) -> Path | None:
    """Draw the kernels of the first `Conv2D` layer, one small tile per output filter.

    What it is for: first-layer filters of a trained CNN look like edge, colour and
    blob detectors; noise-like filters suggest too little training or too high a
    learning rate.

    The kernel has shape (kernel_h, kernel_w, in_channels, filters). Tiles are laid
    out row by row, 8 per row, filter 0 top left. With 3 input channels a filter is
    an RGB tile (min-max scaled per filter); otherwise the tile is the mean over input
    channels on one diverging colour scale shared by all filters (red positive, blue
    negative), so magnitudes compare across filters.

    Args:
        model: a Keras model, nested models searched recursively.
        path: PNG file to write.
        max_filters: draw at most this many filters (the first ones).

    Returns:
        ``path``, or None when the model has no `Conv2D` layer.
    """
    import matplotlib

    convs = conv_layers(model, kinds=("Conv2D",))
    if not convs:
        return None
    layer = convs[0]
    kernel = np.asarray(layer.kernel.numpy(), dtype="float64")
    kh, kw, cin, cout = kernel.shape
    n = min(cout, max_filters)
    cols = min(8, n)
    rows = -(-n // cols)
    fig = new_figure(1.0 + 0.75 * cols, 1.0 + 0.75 * rows * kh / kw, layout=None)
    ax = fig.add_axes((0.06, 0.06, 0.74, 0.78))
    if cin == 3:
        ax.imshow(mosaic([minmax(kernel[..., i]) for i in range(n)], cols, gap_value=1.0))
    else:
        flat = kernel.mean(axis=2)
        scale = float(np.abs(flat[..., :n]).max()) or 1.0
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
        im = ax.imshow(
            mosaic([flat[..., i] for i in range(n)], cols), cmap=cmap, vmin=-scale, vmax=scale
        )
        fig.colorbar(im, cax=fig.add_axes((0.84, 0.1, 0.03, 0.7)), label="weight")
    ax.set_xticks([c * (kw + 1) + (kw - 1) / 2 for c in range(cols)], [str(c) for c in range(cols)])
    ax.set_yticks(
        [r * (kh + 1) + (kh - 1) / 2 for r in range(rows)], [str(r * cols) for r in range(rows)]
    )
    ax.tick_params(length=0, labelsize="x-small")
    note = "" if cin in (1, 3) else f", mean over {cin} input channels"
    ax.set_title(f"{layer.name}: {n} of {cout} filters, {kh}x{kw}x{cin}{note}", fontsize="small")
    return save(fig, path)


def _spatial_layer(model: Any, name: str) -> Any:
    candidates = [layer for layer in walk_layers(model) if len(layer.output.shape) == 4]
    return find_layer(model, name, candidates=candidates)


def default_feature_layers(model: Any, count: int = 3) -> list[Any]:
    """Up to ``count`` 2-D convolutions spread evenly from the first to the last."""
    convs = conv_layers(model)
    if not convs:
        return []
    picks = np.linspace(0, len(convs) - 1, min(count, len(convs))).round().astype(int)
    return [convs[i] for i in sorted(set(picks.tolist()))]


def feature_maps(
    model: Any,
    image: Any,
    path: str | Path,
    *,
    layer_names: Sequence[str] | None = None,
    max_channels: int = 8,
) -> Path:
    """Draw the activations of a few layers for one input image, one row per layer.

    What it is for: seeing what the network responds to, from edges in early layers to
    coarse, class-specific parts in late ones.

    Each row shows the ``max_channels`` channels with the largest mean absolute
    activation (in channel order, labelled below), each min-max scaled on its own
    (bright = strong); the input image is drawn on the left.

    Args:
        model: image model as served (raw inputs, nested models allowed).
        image: one raw input image, (H, W, C) or (1, H, W, C).
        path: PNG file to write.
        layer_names: layers to show (any layer with a (batch, h, w, channels) output,
            searched recursively); default up to 3 convolutions spread through the net.
        max_channels: channels per row.

    Returns:
        ``path``.

    Raises:
        NotApplicable: the model takes no images or has no 2-D convolution.
    """
    import matplotlib

    x = one_image(model, image)
    if layer_names is None:
        layers = default_feature_layers(model)
        if not layers:
            raise NotApplicable("model has no 2-D convolution layer")
    else:
        layers = [_spatial_layer(model, name) for name in layer_names]
    taps = tap(model, layers)
    outs = taps.model(x, training=False)
    maps = [np.asarray(outs[taps.position(lay, "output")][0], "float32") for lay in layers]

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    fig = new_figure(2.0 + 1.0 * max_channels, 0.6 + 1.2 * len(layers), layout=None)
    grid = fig.add_gridspec(
        len(layers), 2, width_ratios=(1, max_channels), left=0.02, right=0.98,
        top=1 - 0.35 / fig.get_figheight(), bottom=0.3 / fig.get_figheight(), wspace=0.08,
    )  # fmt: skip
    image_ax = fig.add_subplot(grid[0, 0])
    show_image(image_ax, x[0])
    image_ax.set_title("input", fontsize="small")
    for r, (layer, fmap) in enumerate(zip(layers, maps, strict=True)):
        h, w, ch = fmap.shape
        strength = np.abs(fmap).mean(axis=(0, 1))
        chosen = np.sort(np.argsort(-strength, kind="stable")[:max_channels])
        ax = fig.add_subplot(grid[r, 1])
        ax.imshow(mosaic([minmax(fmap[..., c]) for c in chosen], len(chosen)), cmap=cmap)
        ax.set_xticks(
            [i * (w + 1) + (w - 1) / 2 for i in range(len(chosen))], [f"ch {c}" for c in chosen]
        )
        ax.set_yticks([])
        ax.tick_params(length=0, labelsize="x-small")
        ax.set_title(f"{layer.name}: {h}x{w}x{ch}", fontsize="small", loc="left")
    return save(fig, path)


def _score_source(layer: Any) -> str:
    """How to get pre-squashing class scores (logits) from the output layer.

    ``"activation"``: a softmax/sigmoid `Activation` layer, logits are its input.
    ``"dense"``: a `Dense` with softmax/sigmoid, logits = input @ kernel + bias.
    ``"output"``: anything else; the output itself is used.
    """
    import keras

    name = getattr(getattr(layer, "activation", None), "__name__", "")
    if name not in _SQUASHING:
        return "output"
    if isinstance(layer, keras.layers.Activation):
        return "activation"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    return "output"


def _grad_cam_batch(
    model: Any, images: np.ndarray, *, layer_name: str | None, class_ids: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Grad-CAM for a batch: (heat (N, H, W) in [0, 1], class ids, their probabilities, layer)."""
    import tensorflow as tf

    if len(tuple(model.inputs[0].shape)) != 4:
        raise NotApplicable("model input is not an image (height, width, channels)")
    if layer_name is None:
        convs = conv_layers(model)
        if not convs:
            raise NotApplicable("model has no 2-D convolution layer")
        layer = convs[-1]
    else:
        layer = _spatial_layer(model, layer_name)
    head = output_layer(model)
    source = _score_source(head)
    taps = tap(model, [layer], inputs_of=[head] if source != "output" else [])

    x = tf.convert_to_tensor(np.asarray(images, dtype="float32"))
    with tf.GradientTape() as tape:
        outs = taps.model(x, training=False)
        probs = tf.cast(outs[0], tf.float32)
        fmap = outs[taps.position(layer, "output")]
        if source == "output":
            logits = probs
        else:
            z = tf.cast(outs[taps.position(head, "input")], tf.float32)
            if source == "dense":
                z = tf.matmul(z, tf.cast(head.kernel, tf.float32)) + (
                    tf.cast(head.bias, tf.float32) if head.use_bias else 0.0
                )
            logits = z
        single = probs.shape[-1] == 1
        p = probs.numpy()
        predicted = (p[:, 0] >= 0.5).astype(np.int64) if single else p.argmax(axis=-1)
        ids = predicted if class_ids is None else np.asarray(class_ids, dtype=np.int64)
        n_classes = 2 if single else int(p.shape[-1])
        if ids.shape != predicted.shape or ((ids < 0) | (ids >= n_classes)).any():
            raise invalid_value(
                "class_ids", ids.tolist(), f"{len(p)} ids in [0, {n_classes - 1}], one per image"
            )
        if single:
            # One sigmoid unit scores class 1; class 0's score is its negation.
            score = tf.where(tf.constant(ids == 1), logits[:, 0], -logits[:, 0])
        else:
            score = tf.gather(logits, tf.constant(ids), axis=1, batch_dims=1)
        total = tf.reduce_sum(score)  # rows are independent at inference
    grads = tf.cast(tape.gradient(total, fmap), tf.float32)
    fmap32 = tf.cast(fmap, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # alpha_k^c, eq. 1
    cam = tf.nn.relu(tf.reduce_sum(weights * fmap32, axis=-1))  # eq. 2, (N, h, w)
    height, width = int(x.shape[1]), int(x.shape[2])
    heat = tf.image.resize(cam[..., None], (height, width), method="bilinear")[..., 0].numpy()
    peak = heat.reshape(len(heat), -1).max(axis=1)
    heat = np.divide(
        heat, peak[:, None, None], out=np.zeros_like(heat), where=peak[:, None, None] > 0
    )
    chosen_p = np.where(ids == 1, p[:, 0], 1.0 - p[:, 0]) if single else p[np.arange(len(p)), ids]
    return np.clip(heat, 0.0, 1.0).astype("float32"), ids, chosen_p, layer.name


def grad_cam_heatmap(
    model: Any, image: Any, *, layer_name: str | None = None, class_id: int | None = None
) -> np.ndarray:
    """Grad-CAM heat map of one image (Selvaraju et al., "Grad-CAM", ICCV 2017).

    The weight of channel k is the spatial mean of d(score of the class)/d(activation
    k) at the chosen layer; the map is ReLU(sum_k weight_k * activation_k), upsampled
    bilinearly to the input size and divided by its maximum. The class score is the
    pre-softmax/sigmoid logit when the output layer allows it (as in the paper), else
    the output probability.

    Args:
        model: image classifier as served (raw inputs, nested models allowed).
        image: one raw input image, (H, W, C) or (1, H, W, C).
        layer_name: layer with a (batch, h, w, channels) output; default the last
            2-D convolution.
        class_id: class to explain; default the predicted class.

    Returns:
        float32 array (H, W) in [0, 1]; all zeros when no location raises the score.

    Raises:
        NotApplicable: the model takes no images or has no 2-D convolution.
    """
    x = one_image(model, image)
    heat, _, _, _ = _grad_cam_batch(
        model, x, layer_name=layer_name, class_ids=None if class_id is None else [class_id]
    )
    return heat[0]


def grad_cam(
    model: Any,
    images: Any,
    path: str | Path,
    *,
    layer_name: str | None = None,
    class_ids: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Overlay the Grad-CAM heat map (see `grad_cam_heatmap`) on each image.

    What it is for: checking that the model looks at the object, not at the
    background, a watermark or a border artefact.

    Args:
        model: image classifier as served (raw inputs, nested models allowed).
        images: raw input images, (N, H, W, C); keep N small (one panel each).
        path: PNG file to write.
        layer_name: as in `grad_cam_heatmap`.
        class_ids: class to explain per image; default each image's predicted class.
        class_names: names for the titles; default the class ids.

    Returns:
        ``path``.
    """
    if len(tuple(model.inputs[0].shape)) != 4:
        raise NotApplicable("model input is not an image (height, width, channels)")
    batch = np.asarray(images, dtype="float32")
    if batch.ndim != 4 or len(batch) == 0:
        raise invalid_value("images.shape", batch.shape, "(N, height, width, channels), N >= 1")
    heat, ids, probs, used = _grad_cam_batch(
        model, batch, layer_name=layer_name, class_ids=class_ids
    )
    fig, axes = panel_grid(len(batch), max_cols=4, width=2.6, height=2.7)
    verb = "pred" if class_ids is None else "class"
    im = None
    for i, ax in enumerate(axes[: len(batch)]):
        show_image(ax, batch[i])
        im = ax.imshow(heat[i], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
        ax.set_title(
            f"{verb} {class_label(class_names, int(ids[i]))} (p={probs[i]:.2f})", fontsize="small"
        )
    if im is not None:
        fig.colorbar(im, ax=axes.tolist(), shrink=0.7, label="Grad-CAM")
    fig.suptitle(f"Grad-CAM at {used}")
    return save(fig, path)
