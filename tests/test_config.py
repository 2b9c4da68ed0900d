"""Config validation at the edge: every mistake is exit 2 and one line naming the field."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from service.config import TEST_METRICS_BY_TASK, apply_overrides, flatten, load_config, validate
from service.errors import UserError
from tests.helpers import CONFIGS, assert_user_error, heavy_imports, kts, kts_probe

DEFAULT = CONFIGS / "digits_cnn.yaml"


def test_default_config_is_valid_and_typed():
    cfg = load_config(DEFAULT)
    assert cfg.name == "digits_cnn"
    assert cfg.model.type == "simple_cnn"
    assert cfg.model.options["filters"] == [32, 64]
    assert cfg.training.optimizer.name == "adam"
    assert cfg.experiment == "digits_cnn"


def test_override_is_type_checked_and_applied():
    cfg = load_config(DEFAULT, ["training.epochs=3", "model.filters=[8, 16]", "seed=7"])
    assert cfg.training.epochs == 3
    assert cfg.model.options["filters"] == [8, 16]
    assert cfg.seed == 7


def test_override_creates_nested_keys_from_plain_values():
    data = apply_overrides({"name": "x"}, ["training.optimizer.name=sgd"])
    assert data == {"name": "x", "training": {"optimizer": {"name": "sgd"}}}


def test_flatten_uses_dotted_keys():
    flat = flatten(load_config(DEFAULT).to_dict())
    assert flat["training.optimizer.learning_rate"] == pytest.approx(0.002)
    assert flat["data.split.train"] == pytest.approx(0.7)
    assert flat["model.type"] == "simple_cnn"


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["training.epoch=3"], ["unknown key `training.epoch`", "Did you mean `epochs`"]),
        (["training.epochs=abc"], ["`training.epochs`", "received 'abc'"]),
        (["training.epochs=0"], ["`training.epochs`", "received 0", "greater than or equal to 1"]),
        (["training.precision=fp8"], ["`training.precision`", "'fp8'", "mixed_float16"]),
        (["model.filterz=[1]"], ["`model.filterz`", "Did you mean `filters`"]),
        (["model.type=resnet9000"], ["Unknown model `resnet9000`", "simple_cnn"]),
        (["data.split.train=0.9"], ["`data.split`", "sum to 1"]),
        (["training=3"], ["`training`", "received 3"]),
        (["novalue"], ["`--set`", "'novalue'", "dotted.key=value"]),
        (["training.epochs.deep=1"], ["training.epochs", "not a section"]),
    ],
)
def test_bad_input_names_the_field(overrides, needles):
    with pytest.raises(UserError) as info:
        load_config(DEFAULT, overrides)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_missing_required_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"type": "simple_cnn"}}))
    with pytest.raises(UserError, match=r"c\.yaml: missing required key `name`"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: [unclosed", "invalid YAML at line 1"),
        ("- just\n- a list\n", "expected a mapping of sections"),
        ("", "expected a mapping of sections"),
    ],
)
def test_malformed_files(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="bad.yaml") as info:
        load_config(path)
    assert needle in str(info.value)


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_non_string_keys_rejected():
    with pytest.raises(UserError, match="keys must be strings"):
        validate({"name": "x", 3: "y"})


# ------------------------------------------------------------- via the CLI
def test_cli_validate_ok(tmp_path):
    result = kts(["validate", str(DEFAULT)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--set", "training.bogus=1"], ["unknown key `training.bogus`"]),
        (["--set", "training.batch_size=big"], ["`training.batch_size`", "'big'"]),
        (["--set", "oops"], ["`--set`", "'oops'"]),
    ],
)
def test_cli_bad_input_exit_2_one_line(tmp_path, args, needles):
    assert_user_error(kts(["validate", str(DEFAULT), *args], cwd=tmp_path), *needles)


def test_cli_missing_config_file(tmp_path):
    assert_user_error(kts(["run", "missing.yaml"], cwd=tmp_path), "missing.yaml", "not found")


def test_cli_unknown_option_is_one_line(tmp_path):
    assert_user_error(kts(["run", "--bogus"], cwd=tmp_path), "--bogus")


# ------------------------------------------------------------------ bless.metric
def test_unknown_bless_metric_is_refused_at_validation(tmp_path):
    result = kts_probe(
        ["validate", str(DEFAULT), "--set", "bless.metric=test_acuracy"], cwd=tmp_path
    )
    assert_user_error(result, "`bless.metric`", "'test_acuracy'", "Did you mean `test_accuracy`?")
    assert heavy_imports(result) == ""


def test_bless_metric_must_be_one_the_configured_task_reports():
    with pytest.raises(UserError, match=r"`bless.metric`: received 'test_accuracy'.*regression"):
        load_config(
            CONFIGS / "sunspots_gru.yaml", ["data.task=regression", "bless.metric=test_accuracy"]
        )
    load_config(CONFIGS / "digits_cnn.yaml", ["bless.enabled=false", "bless.metric=whatever"])


@pytest.mark.parametrize("task", sorted(TEST_METRICS_BY_TASK))
def test_bless_metric_table_is_what_evaluation_reports(task):
    """The validation table is pinned to `score` (test_loss comes from `evaluate`)."""
    from service.training.trainer import score

    rng = np.random.default_rng(0)
    if task in ("multiclass", "binary"):
        classes = 3 if task == "multiclass" else 2
        y, outputs = np.arange(30) % classes, rng.dirichlet(np.ones(classes), size=30)
    elif task == "multilabel":
        y, outputs = rng.integers(0, 2, size=(30, 4)), rng.random((30, 4))
    else:
        y, outputs = rng.random((30, 3)), rng.random((30, 3))
    reported = {"test_loss"} | {f"test_{k}" for k in score(task, y, outputs)}
    assert reported == set(TEST_METRICS_BY_TASK[task])


# ------------------------------------------------------------------ shape bounds
@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("name: x\nextra: " + "[" * 3000 + "]" * 3000 + "\n", ["invalid YAML: nested too deeply"]),
        ("name: x\nextra: " + "[" * 40 + "]" * 40 + "\n", ["nested more than 32 levels"]),
        (
            "name: x\nmodel: {type: mlp, units: [" + ",".join(["8"] * 5000) + "]}\n",
            ["`model.units`", "a list of 5000 items", "at most 1000"],
        ),
    ],
)
def test_config_nesting_and_list_lengths_are_bounded(tmp_path, text, needles):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = kts_probe(["validate", str(path)], cwd=tmp_path)
    assert_user_error(result, *needles)
    assert heavy_imports(result) == ""
