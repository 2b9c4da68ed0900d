"""The model zoo: `build(name, input_shape=..., num_classes=..., **options)`.

Importing this package registers every family but imports no TensorFlow: each
builder imports Keras inside its body.
"""

from service.models import simple_cnn  # noqa: F401  (registers the family)
from service.models.registry import (
    available,
    build,
    entry,
    option_names,
    register,
    validate_options,
)

__all__ = ["available", "build", "entry", "option_names", "register", "validate_options"]
