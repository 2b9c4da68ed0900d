"""Recurrent nets: SimpleRNN (Elman, "Finding structure in time", 1990), LSTM
(Hochreiter & Schmidhuber, "Long short-term memory", 1997) and GRU (Cho et al.,
"Learning phrase representations using RNN encoder-decoder", 2014), from one
builder with the cell as data.

Parameter counts per layer, for input width m and n units (Keras' defaults):
SimpleRNN n(m+n+1), LSTM 4n(m+n+1), GRU 3n(m+n+2) (``reset_after=True`` keeps two
bias vectors); a bidirectional layer has twice that, and a stacked layer's m is the
width of the layer below (2n when that one is bidirectional).
"""

from __future__ import annotations

from typing import Literal

from service.errors import invalid_value
from service.models import blocks
from service.models.registry import register

CELLS = {"simple_rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
PRESETS = {"simple_rnn": {"cell": "simple_rnn"}, "lstm": {"cell": "lstm"}, "gru": {"cell": "gru"}}


def recurrent(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    cell: Literal["simple_rnn", "lstm", "gru"] = "lstm",
    units: int = 64,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    vocab_size: int | None = None,
    embedding_dim: int = 64,
    mask_zero: bool = True,
    output: Literal["sequence_to_one", "sequence_to_sequence"] = "sequence_to_one",
    task: blocks.Task = "multiclass",
):
    """Stacked (bi)directional SimpleRNN / LSTM / GRU with a per-sequence or per-step head.

    Args:
        input_shape: one of
            ``(steps,)``: integer token ids; needs ``vocab_size`` (an ``embedding`` layer),
            ``(steps, features)``: real-valued sequences (e.g. a time series),
            ``(height, width, channels)``: an image read top to bottom, one row per
            step: the layer ``rows_as_sequence`` reshapes it to
            ``(height, width * channels)``; this is how the 8x8 digits feed an LSTM.
        num_classes: output units per sequence (or per step).
        cell: ``simple_rnn``, ``lstm`` or ``gru`` (set by the presets of those names).
        units: state size n of every recurrent layer.
        num_layers: stacked recurrent layers (all but the last return sequences).
        bidirectional: read each sequence both ways and concatenate (2n features).
        dropout: on each layer's inputs, in ``[0, 1)``.
        recurrent_dropout: on the recurrent state, in ``[0, 1)`` (disables cuDNN kernels).
        vocab_size: token ids are in ``[0, vocab_size)``; only for ``(steps,)`` input.
        embedding_dim: word-vector width for token input.
        mask_zero: token id 0 is padding, skipped by the recurrent layers.
        output: ``sequence_to_one`` (classify / regress the sequence from the last
            state) or ``sequence_to_sequence`` (one prediction per step, e.g.
            tagging or forecasting).
        task: output activation: multiclass -> softmax, binary / multilabel ->
            sigmoid, regression -> linear (float32).

    Layers: ``embedding`` | ``rows_as_sequence``, ``{cell}{i}`` (wrapped in
    ``bidirectional{i}``), ``logits``, ``predictions``.
    """
    import keras

    blocks.check_positive("model.units", units)
    blocks.check_positive("model.num_layers", num_layers)
    blocks.check_rate("model.dropout", dropout)
    blocks.check_rate("model.recurrent_dropout", recurrent_dropout)
    if len(tuple(input_shape)) != 1 and vocab_size is not None:
        raise invalid_value(
            "model.vocab_size",
            vocab_size,
            f"null: input_shape {tuple(input_shape)} is not token ids (that is (steps,))",
        )
    inputs, x = blocks.sequence_input(
        input_shape,
        model=cell,
        vocab_size=vocab_size,
        embedding_dim=embedding_dim,
        mask_zero=mask_zero,
    )
    layer_cls = getattr(keras.layers, CELLS[cell])
    per_step = output == "sequence_to_sequence"
    for i in range(1, num_layers + 1):
        layer = layer_cls(
            units,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            return_sequences=per_step or i < num_layers,
            name=f"{cell}{i}",
        )
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bidirectional{i}")
        x = layer(x)
    outputs = blocks.classifier_head(x, num_classes, task=task, model=cell)
    return keras.Model(inputs, outputs, name=cell)


for _name, _defaults in PRESETS.items():
    register(_name, **_defaults)(recurrent)
