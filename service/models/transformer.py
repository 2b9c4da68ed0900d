"""A small BERT-style Transformer encoder (Devlin et al., "BERT: Pre-training of deep
bidirectional transformers for language understanding", NAACL 2019; the encoder of
Vaswani et al., "Attention is all you need", NeurIPS 2017). The default size is
BERT-Tiny (Turc et al., "Well-read students learn better", 2019): 2 layers, hidden
128, 2 heads, feed-forward 512.

Token + learned position embeddings, N post-layer-norm encoder blocks (multi-head
self-attention and a GELU feed-forward net, each wrapped in dropout, a residual
connection and layer norm), a tanh "pooler" on the first ([CLS]) position and the
classifier. Segment (token type) embeddings are left out: inputs are single sequences.
"""

from __future__ import annotations

from service.errors import invalid_value
from service.models import blocks
from service.models.registry import register

LAYER_NORM_EPSILON = 1e-12  # BERT's


@register("bert_tiny")
def bert_tiny(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab_size: int | None = 30522,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int | None = None,
    dropout: float = 0.1,
    max_length: int | None = None,
    task: blocks.Task = "multiclass",
):
    """BERT-style encoder classifier; defaults are BERT-Tiny (L=2, H=128, A=2).

    Args:
        input_shape: ``(steps,)`` token ids (id 0 is padding and is masked out of
            attention; the first token plays [CLS]), or ``(steps, features)`` /
            ``(height, width, channels)`` real-valued input, projected to
            ``hidden_size`` by the Dense layer ``input_projection`` (an image is read
            one row per step).
        num_classes: output units (softmax for multiclass, float32).
        vocab_size: token ids are in ``[0, vocab_size)`` (BERT's WordPiece: 30522);
            used for token input only.
        hidden_size: width of every position's representation.
        num_layers: encoder blocks.
        num_heads: attention heads; must divide ``hidden_size``.
        intermediate_size: feed-forward width (default ``4 * hidden_size``).
        dropout: on embeddings, attention weights and outputs, in ``[0, 1)``.
        max_length: positions the position embedding covers (default: ``steps``).
        task: output activation (see `mlp`).

    Layers: ``token_embedding`` + ``padding_mask`` | ``input_projection``,
    ``position_embedding``,
    ``embeddings_norm``, ``encoder{i}_attention``, ``encoder{i}_attention_norm``,
    ``encoder{i}_ffn1``/``_ffn2``/``_ffn_norm``, ``cls_token``, ``pooler``, ``logits``,
    ``predictions``.
    """
    import keras

    from service.models.layers import PaddingMask, PositionEmbedding, SelectToken

    layers = keras.layers
    for field, value in (
        ("model.hidden_size", hidden_size),
        ("model.num_layers", num_layers),
        ("model.num_heads", num_heads),
    ):
        blocks.check_positive(field, value)
    blocks.check_rate("model.dropout", dropout)
    if hidden_size % num_heads:
        raise invalid_value(
            "model.num_heads", num_heads, f"a divisor of hidden_size ({hidden_size})"
        )
    ffn = intermediate_size or 4 * hidden_size
    tokens = len(tuple(input_shape)) == 1
    inputs, x = blocks.sequence_input(
        input_shape,
        model="bert_tiny",
        vocab_size=vocab_size if tokens else None,
        embedding_dim=hidden_size,
        embedding_name="token_embedding",
    )
    mask = PaddingMask(0, name="padding_mask")(inputs) if tokens else None
    if not tokens:
        x = layers.Dense(hidden_size, name="input_projection")(x)
    steps = int(x.shape[1])
    length = max_length or steps
    if length < steps:
        raise invalid_value("model.max_length", max_length, f">= the input's {steps} steps")
    positions = PositionEmbedding(length, name="position_embedding")(x)
    x = layers.Add(name="embeddings")([x, positions])
    x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="embeddings_norm")(x)
    x = layers.Dropout(dropout, name="embeddings_dropout")(x)
    for i in range(1, num_layers + 1):
        name = f"encoder{i}"
        attention = layers.MultiHeadAttention(
            num_heads, hidden_size // num_heads, dropout=dropout, name=f"{name}_attention"
        )(x, x, attention_mask=mask)
        attention = layers.Dropout(dropout, name=f"{name}_attention_dropout")(attention)
        x = layers.Add(name=f"{name}_attention_add")([x, attention])
        x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_attention_norm")(x)
        y = layers.Dense(ffn, activation="gelu", name=f"{name}_ffn1")(x)
        y = layers.Dense(hidden_size, name=f"{name}_ffn2")(y)
        y = layers.Dropout(dropout, name=f"{name}_ffn_dropout")(y)
        x = layers.Add(name=f"{name}_ffn_add")([x, y])
        x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_ffn_norm")(x)
    x = SelectToken(0, name="cls_token")(x)
    x = layers.Dense(hidden_size, activation="tanh", name="pooler")(x)
    x = layers.Dropout(dropout, name="pooler_dropout")(x)
    outputs = blocks.classifier_head(x, num_classes, task=task, model="bert_tiny")
    return keras.Model(inputs, outputs, name="bert_tiny")
