"""Training options from config: every optimizer and schedule learns; bad pairs are refused."""

from __future__ import annotations

import numpy as np
import pytest

from service.config import load_config
from service.errors import UserError
from tests.helpers import CONFIGS

DEFAULT = CONFIGS / "digits_cnn.yaml"
LEARNING_RATES = {"sgd": 0.05, "adadelta": 1.0, "adagrad": 0.05}


@pytest.fixture(scope="module")
def digits_small():
    from service.data.sources import load_digits

    data = load_digits()
    return data.x[:512] / 16.0, data.y[:512]


def _model(num_classes: int = 10):
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _loss_drop(cfg, x, y) -> tuple[float, float]:
    import keras

    from service.training import trainer

    keras.utils.set_random_seed(0)
    model = _model()
    trainer.compile_model(model, cfg.training, "multiclass", steps_per_epoch=8)
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, batch_size=64, epochs=cfg.training.epochs, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    return before, after


@pytest.mark.parametrize(
    "name", ["sgd", "rmsprop", "adam", "adamw", "adamax", "adadelta", "adagrad", "nadam"]
)
def test_every_optimizer_lowers_the_loss(digits_small, name):
    lr = LEARNING_RATES.get(name, 0.01)
    extra = (
        ["training.optimizer.momentum=0.9", "training.optimizer.nesterov=true"]
        if name == "sgd"
        else []
    )
    cfg = load_config(
        DEFAULT,
        [
            f"training.optimizer.name={name}",
            f"training.optimizer.learning_rate={lr}",
            "training.epochs=3",
            *extra,
        ],
    )
    before, after = _loss_drop(cfg, *digits_small)
    assert after < 0.9 * before, (name, before, after)


@pytest.mark.parametrize(
    "schedule",
    [
        ["type=constant"],
        ["type=piecewise", "boundaries=[8, 16]", "values=[1.0, 0.5, 0.1]"],
        ["type=exponential", "decay_rate=0.5"],
        ["type=inverse_time", "decay_rate=0.5"],
        ["type=cosine", "alpha=0.1"],
        ["type=cosine_restarts", "decay_steps=8"],
        ["type=polynomial", "power=2.0"],
        ["type=cosine", "warmup_steps=5"],
        ["type=exponential", "warmup_steps=4", "decay_steps=10"],
    ],
    ids=lambda s: "-".join(
        p.split("=")[1] for p in s if not p.startswith(("values", "boundaries"))
    ),
)
def test_every_schedule_lowers_the_loss(digits_small, schedule):
    cfg = load_config(
        DEFAULT,
        ["training.optimizer.learning_rate=0.01", "training.epochs=3"]
        + [f"training.schedule.{s}" for s in schedule],
    )
    before, after = _loss_drop(cfg, *digits_small)
    assert after < 0.8 * before, (schedule, before, after)


def test_warmup_ramps_then_follows_the_schedule():
    from service.training.schedules import make_schedule

    cfg = load_config(
        DEFAULT, ["training.schedule.type=cosine", "training.schedule.warmup_steps=10"]
    )
    sched = make_schedule(cfg.training.schedule, base_lr=0.1, total_steps=110)
    lrs = np.array([float(sched(step)) for step in range(0, 110, 5)])
    assert lrs[0] == pytest.approx(0.01, rel=1e-5)  # (0 + 1) / 10 of the peak
    assert lrs[2] == pytest.approx(0.1, rel=1e-5)  # step 10: warm-up done, cosine starts at peak
    assert np.all(np.diff(lrs[:3]) > 0)
    assert np.all(np.diff(lrs[2:]) <= 1e-9)
    assert lrs[-1] < 0.01


def test_piecewise_needs_one_more_value_than_boundaries():
    with pytest.raises(UserError, match="one more value than boundaries"):
        load_config(
            DEFAULT, ["training.schedule.type=piecewise", "training.schedule.boundaries=[5]"]
        )


@pytest.mark.parametrize(
    ("loss", "task", "message"),
    [
        ("binary_crossentropy", "multiclass", "for a multiclass task"),
        ("mean_squared_error", "multiclass", "for a multiclass task"),
        ("binary_crossentropy", "binary", "ends in 'softmax'"),
    ],
)
def test_mismatched_loss_is_a_user_error(loss, task, message):
    from service.training import trainer

    cfg = load_config(DEFAULT, [f"training.loss={loss}"])
    with pytest.raises(UserError, match=message):
        trainer.compile_model(_model(2), cfg.training, task, steps_per_epoch=1)


def test_balanced_class_weights_invert_frequencies():
    from service.training.trainer import class_weights

    cfg = load_config(DEFAULT, ["training.class_weight=balanced"])
    weights = class_weights(cfg.training, np.array([0, 0, 0, 1]), ("a", "b"))
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    named = load_config(DEFAULT, ["training.class_weight={b: 3.0}"])
    assert class_weights(named.training, np.array([0, 1]), ("a", "b")) == {0: 1.0, 1: 3.0}
    unknown = load_config(DEFAULT, ["training.class_weight={zebra: 3.0}"])
    with pytest.raises(UserError, match=r"received classes \['zebra'\]"):
        class_weights(unknown.training, np.array([0, 1]), ("a", "b"))


def test_preprocessing_statistics_come_from_train_rows_only():
    from pipelines import steps
    from service.data.preprocess import fit_preprocessing

    cfg = load_config(DEFAULT)
    data = steps.ingest(cfg)
    parts = steps.split(cfg, data).split
    pre = fit_preprocessing(data, parts.train, cfg.data.preprocessing)
    np.testing.assert_allclose(pre.stats["mean"], [data.x[parts.train].mean()], rtol=1e-5)
    assert abs(pre.stats["mean"][0] - data.x.mean()) > 1e-4  # all rows would differ
    np.testing.assert_allclose(pre.stats["variance"], [data.x[parts.train].var()], rtol=1e-4)


@pytest.mark.parametrize("projection", ["pca", "lda"])
def test_pca_and_lda_fitted_on_train_and_exported_inside_the_model(projection):
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from pipelines import steps
    from service.data.preprocess import fit_preprocessing

    cfg = load_config(
        DEFAULT,
        [
            "data.source=breast_cancer",
            "model.type=mlp" if False else "seed=3",
            f"data.preprocessing.{projection}=1",
        ],
    )
    data = steps.ingest(cfg)
    train = steps.split(cfg, data).split.train
    pre = fit_preprocessing(data, train, cfg.data.preprocessing)
    z = (data.x[train] - pre.stats["mean"]) / np.sqrt(pre.stats["variance"])
    reference = (PCA(1) if projection == "pca" else LinearDiscriminantAnalysis(n_components=1)).fit(
        z, data.y[train]
    )
    got = np.asarray(pre(data.x[:20]))
    expected = reference.transform(
        (data.x[:20] - pre.stats["mean"]) / np.sqrt(pre.stats["variance"])
    )
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_a_backup_torn_by_a_kill_resumes_from_the_epoch_before(digits_small, tmp_path):
    """A kill while the newest weights are written must not strand the run: the previous
    epoch's copy is restored and training continues from there."""
    import keras

    from service.training import trainer

    x, y = digits_small
    cfg = load_config(DEFAULT, ["training.early_stopping.enabled=false"])
    backup = tmp_path / "backup"

    class Killed(Exception):
        pass

    class KillAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise Killed  # after BackupAndRestore saved epoch 3: training never ends

    def fit(extra: list, epochs: int) -> list[int]:
        keras.utils.set_random_seed(0)
        model = _model()
        trainer.compile_model(model, cfg.training, "multiclass", steps_per_epoch=8)
        seen: list[int] = []
        record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))
        callbacks = trainer.standard_callbacks(cfg.training, backup_dir=str(backup))
        model.fit(
            x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks + extra + [record]
        )
        return seen

    with pytest.raises(Killed):
        fit([KillAfterEpoch()], epochs=5)
    weights = backup / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])  # the kill landed mid-write
    assert fit([], epochs=5) == [2, 3, 4]  # epoch 2's backup restored, epochs 0-1 not redone
    assert not backup.exists()  # finished: the backup is deleted
