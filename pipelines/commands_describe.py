"""`kts describe`: per-layer shapes, parameters and FLOPs of a zoo model, or a zoo table.

TensorFlow is imported only inside the command body, after the arguments are
checked, so bad input fails fast and ``kts --help`` stays light.
"""

from __future__ import annotations

import os

import click

from service.errors import invalid_value


def parse_shape(text: str, *, field: str = "--input-shape") -> tuple[int, ...]:
    """``"224,224,3"`` -> ``(224, 224, 3)``; anything else is a `UserError`."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise invalid_value(field, text, "comma-separated positive integers, e.g. 224,224,3")
    return tuple(int(p) for p in parts)


def parse_options(pairs: tuple[str, ...]) -> dict[str, object]:
    """``("alpha=0.5", "filters=[16, 32]")`` -> ``{"alpha": 0.5, "filters": [16, 32]}`` (YAML values)."""
    import yaml

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise invalid_value("--option", pair, "KEY=VALUE, e.g. alpha=0.5")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise invalid_value("--option", pair, "a YAML value after '='") from None
    return options


@click.command()
@click.argument("model", required=False)
@click.option(
    "--input-shape",
    metavar="H,W,C",
    help="Shape of one example (default: the model's reference input, e.g. 224,224,3).",
)
@click.option(
    "--num-classes",
    type=click.IntRange(min=1),
    help="Classifier size (default: the model's reference, 1000 for ImageNet nets).",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A model option as in the config's `model:` section, e.g. -o alpha=0.5 (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--compare",
    is_flag=True,
    help="One table over the CNN zoo at 224x224x3, 1000 classes (params, FLOPs, depth).",
)
def describe(
    model: str | None,
    input_shape: str | None,
    num_classes: int | None,
    options: tuple[str, ...],
    as_json: bool,
    compare: bool,
) -> None:
    """Per-layer output shape, parameters and FLOPs of MODEL, with totals.

    FLOPs are 2 x multiply-adds, counted from each layer's math. With --compare,
    one row per CNN of the zoo instead.
    """
    from service.models import describe as zoo
    from service.models import registry

    if compare == (model is not None):
        raise click.UsageError(
            f"give either MODEL or --compare (received {'both' if compare else 'neither'})"
        )
    shape = parse_shape(input_shape) if input_shape is not None else None
    parsed = parse_options(options)
    if compare:
        if parsed:
            raise invalid_value("--option", options[0], "no model options with --compare")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        table = zoo.compare(
            input_shape=shape or zoo.COMPARE_INPUT,
            num_classes=num_classes or zoo.COMPARE_CLASSES,
        )
        click.echo(table.to_json() if as_json else table.to_text())
        return
    assert model is not None
    registry.validate_options(model, parsed)  # unknown model / bad option: before TF loads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = zoo.describe(model, input_shape=shape, num_classes=num_classes, options=parsed)
    click.echo(result.to_json() if as_json else result.to_text())
