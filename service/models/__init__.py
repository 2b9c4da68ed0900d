"""The model zoo: `build(name, input_shape=..., num_classes=..., **options)`.

Importing this package registers every family but imports no TensorFlow: each
builder imports Keras inside its body. Families (one module each, presets as data):

- dense: ``mlp``
- CNNs: ``simple_cnn``, ``lenet5``, ``alexnet``, ``vgg11/16/19``,
  ``resnet18/34/50``, ``resnet50v2``, ``inception_v1``, ``inception_v3``,
  ``mobilenet``, ``mobilenetv2``, ``text_cnn``, ``conv_autoencoder``
- RNNs: ``simple_rnn``, ``lstm``, ``gru``; Transformer: ``bert_tiny``

Shared building blocks live in `service.models.blocks`, custom Keras layers in
`service.models.layers` (imported by builders only), and `service.models.describe`
reports per-layer shapes, parameters and FLOPs.
"""

from service.models import (  # noqa: F401  (each import registers its family)
    alexnet,
    autoencoder,
    dense,
    inception,
    lenet,
    mobilenet,
    resnet,
    rnn,
    simple_cnn,
    text_cnn,
    transformer,
    vgg,
)
from service.models.registry import (
    available,
    build,
    entry,
    option_names,
    register,
    validate_options,
)

__all__ = ["available", "build", "entry", "option_names", "register", "validate_options"]
