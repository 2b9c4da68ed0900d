"""CNN for sentence classification (Kim, "Convolutional neural networks for sentence
classification", EMNLP 2014).

Word embeddings, parallel 1-D convolutions of several widths (3, 4, 5 words, 100
maps each), max-over-time pooling of each map, concatenation, dropout 0.5 and the
classifier.
"""

from __future__ import annotations

from service.errors import invalid_value
from service.models import blocks
from service.models.registry import register


@register("text_cnn")
def text_cnn(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int | None = 20000,
    embedding_dim: int = 128,
    kernel_sizes: tuple[int, ...] = (3, 4, 5),
    filters: int = 100,
    dropout: float = 0.5,
    task: blocks.Task = "multiclass",
):
    """Kim-style text CNN: embedding, parallel Conv1D + max-over-time pooling, classifier.

    Args:
        input_shape: ``(steps,)`` token ids (id 0 is padding), or ``(steps, features)``
            pre-computed vectors, or an image ``(height, width, channels)`` read row by
            row (layer ``rows_as_sequence``); only token ids are embedded.
        num_classes: output units (softmax for multiclass, float32).
        vocab_size: token ids are in ``[0, vocab_size)`` (used for token input only).
        embedding_dim: width of the word vectors (300 in the paper).
        kernel_sizes: window of each parallel conv, in tokens; each must fit in ``steps``.
        filters: feature maps per window size (100 in the paper).
        dropout: on the concatenated features, in ``[0, 1)``.
        task: output activation (see `mlp`).

    Layers: ``embedding``, ``conv_k{k}``, ``maxpool_k{k}``, ``concat``, ``dropout``,
    ``logits``, ``predictions``.
    """
    import keras

    blocks.check_rate("model.dropout", dropout)
    blocks.check_positive("model.kernel_sizes", kernel_sizes)
    blocks.check_positive("model.filters", filters)
    tokens = len(tuple(input_shape)) == 1
    inputs, x = blocks.sequence_input(
        input_shape,
        model="text_cnn",
        vocab_size=vocab_size if tokens else None,
        embedding_dim=embedding_dim,
    )
    steps = int(x.shape[1])
    if max(kernel_sizes) > steps:
        raise invalid_value(
            "model.kernel_sizes", tuple(kernel_sizes), f"windows of at most {steps} steps"
        )
    pooled = []
    for k in kernel_sizes:
        y = keras.layers.Conv1D(filters, k, activation="relu", name=f"conv_k{k}")(x)
        pooled.append(keras.layers.GlobalMaxPooling1D(name=f"maxpool_k{k}")(y))
    x = keras.layers.Concatenate(name="concat")(pooled) if len(pooled) > 1 else pooled[0]
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = blocks.classifier_head(x, num_classes, task=task, model="text_cnn")
    return keras.Model(inputs, outputs, name="text_cnn")
