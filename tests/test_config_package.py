"""The config package's seams: vocabularies spelled once, one dotted-key setter, the
tuning space checked once per load (not per trial)."""

from __future__ import annotations

import pytest

from service import vocab
from service.config import checks, load_config, set_key, validate, with_values
from service.errors import UserError
from tests.helpers import CONFIGS

TUNED = CONFIGS / "digits_cnn_tuned.yaml"


# ------------------------------------------------------------------ vocabularies
def test_loss_tables_cover_the_loss_vocabulary():
    assert set(vocab.LOSS_ACTIVATIONS) == set(vocab.LOSSES)
    assert set(vocab.LOSSES_BY_TASK) == set(vocab.DEFAULT_LOSS) == set(vocab.TASKS)
    for task, losses in vocab.LOSSES_BY_TASK.items():
        assert set(losses) <= set(vocab.LOSSES)
        assert vocab.DEFAULT_LOSS[task] in losses
    assert set(vocab.TEST_METRICS_BY_TASK) == set(vocab.TASKS)


def test_implementations_cover_their_vocabularies():
    from service.models import blocks
    from service.reports import _common
    from service.training import optimizers

    assert set(optimizers._CLASS) == set(optimizers._ACCEPTS) == set(vocab.OPTIMIZERS)
    assert blocks.TASKS == vocab.HEAD_TASKS
    assert _common.TASKS == vocab.TASKS
    assert set(vocab.SOURCES) == set(vocab.BUILTIN_SOURCES) | set(vocab.FILE_SOURCES)


def test_serving_keeps_a_copy_of_the_tasks_that_matches():
    """`serving/` imports nothing of ours, so it spells the tasks itself: pinned here."""
    from serving import export

    assert tuple(export.TASKS) == vocab.TASKS


@pytest.mark.parametrize("kind", vocab.SCHEDULES)
def test_every_schedule_name_builds(kind):
    from service.config import ScheduleConfig
    from service.training.schedules import make_schedule

    extra = {"boundaries": [10], "values": [1.0, 0.1]} if kind == "piecewise" else {}
    cfg = ScheduleConfig(type=kind, **extra)
    schedule = make_schedule(cfg, base_lr=0.01, total_steps=100)
    assert float(schedule if kind == "constant" else schedule(0)) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("key", "vocabulary"),
    [
        ("data.source", vocab.SOURCES),
        ("training.loss", ("auto", *vocab.LOSSES)),
        ("training.optimizer.name", vocab.OPTIMIZERS),
        ("training.schedule.type", vocab.SCHEDULES),
        ("tuning.tuner", vocab.TUNERS),
        ("data.task", ("auto", *vocab.TASKS)),
    ],
)
def test_error_text_lists_the_vocabulary(key, vocabulary):
    with pytest.raises(UserError) as info:
        load_config(TUNED, [f"{key}=nonsense"])
    listed = ", ".join(repr(v) for v in vocabulary[:-1]) + f" or {vocabulary[-1]!r}"
    assert f"`{key}`: received 'nonsense'; Input should be {listed}" in str(info.value)


# ------------------------------------------------------------------ dotted keys
def test_set_key_creates_sections_and_refuses_to_descend_into_a_value():
    data: dict = {"training": None, "seed": 3}
    set_key(data, "training.optimizer.name", "sgd")
    assert data == {"training": {"optimizer": {"name": "sgd"}}, "seed": 3}
    with pytest.raises(UserError, match=r"`seed.x`: `seed` is 3, not a section"):
        set_key(data, "seed.x", 1)


# ------------------------------------------------------------- once per load
def test_space_is_checked_at_load_and_not_again_per_trial(monkeypatch):
    from tuning import space

    calls: list[str] = []
    check = checks.check_space
    monkeypatch.setattr(checks, "check_space", lambda cfg: calls.append(cfg.name) or check(cfg))
    cfg = load_config(TUNED)
    assert calls == ["digits_cnn_tuned"]
    trial = space.apply(cfg, {"model.dropout": 0.4, "training.optimizer.learning_rate": 0.003})
    assert trial.model.options["dropout"] == 0.4
    assert trial.training.optimizer.learning_rate == 0.003
    assert calls == ["digits_cnn_tuned"]  # the trial reused the load's check


def test_a_trial_value_is_still_validated():
    cfg = load_config(TUNED)
    with pytest.raises(UserError, match=r"trial: .*`training.epochs`"):
        with_values(cfg, {"training.epochs": 0})


def test_a_bad_space_value_is_refused_at_load_naming_the_key():
    with pytest.raises(
        UserError, match=r"`tuning.space.training.optimizer.name`: received 'adamm'"
    ):
        load_config(
            TUNED, ["tuning.space={training.optimizer.name: {type: choice, values: [adam, adamm]}}"]
        )
    with pytest.raises(UserError, match=r"`tuning.space.model.kernel_size`: received 'big'"):
        load_config(TUNED, ["tuning.space={model.kernel_size: {type: choice, values: [3, big]}}"])


def test_space_keys_use_yaml_names():
    cfg = validate(
        {
            "name": "x",
            "tuning": {
                "space": {
                    "training.early_stopping.direction": {"type": "choice", "values": ["min"]}
                }
            },
        }
    )
    assert cfg.tuning is not None
    with pytest.raises(UserError, match=r"Did you mean `training.early_stopping.direction`"):
        validate(
            {
                "name": "x",
                "tuning": {
                    "space": {
                        "training.early_stopping.directio": {"type": "choice", "values": ["min"]}
                    }
                },
            }
        )


def test_unknown_key_in_an_optional_section_lists_its_keys():
    with pytest.raises(UserError, match=r"`tuning.objective.metrc`\. Did you mean `metric`\? "):
        load_config(TUNED, ["tuning.objective.metrc=val_loss"])
    with pytest.raises(UserError, match=r"Allowed here: metric, direction$"):
        load_config(TUNED, ["tuning.objective.metrc=val_loss"])
