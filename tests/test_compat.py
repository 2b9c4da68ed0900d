"""Private Keras / Keras-Tuner / TensorFlow APIs: only in the compat modules, each gated.

Each gated path runs here on the installed versions, and its public fallback runs by
faking another version (``monkeypatch.setattr(keras, "__version__", ...)``): the
fallback warns once, in one line, and still does the job.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import REPO, assert_user_error, kts_env

PACKAGES = ("service", "tuning", "serving", "pipelines")
COMPAT_MODULES = ("service/compat.py", "tuning/compat.py", "serving/compat.py")
FOREIGN = ("keras", "keras_tuner", "tensorflow", "tf_keras")


# ------------------------------------------------------------ the grep test
def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _foreign_private_names() -> set[str]:
    """Private attribute names of the Keras / Keras-Tuner / TensorFlow classes our
    code extends or calls (a model, a layer, a tuner, a concrete function)."""
    import keras
    import keras_tuner
    import tensorflow as tf

    classes = [
        keras.Model,
        keras.layers.Layer,
        keras.callbacks.Callback,
        keras.optimizers.schedules.LearningRateSchedule,
        keras_tuner.HyperModel,
        keras_tuner.RandomSearch,
        keras_tuner.GridSearch,
        keras_tuner.BayesianOptimization,
        keras_tuner.Hyperband,
        type(tf.function(lambda: 1).get_concrete_function()),
    ]
    return {name for cls in classes for name in dir(cls) if _is_private(name)}


def private_uses(root: Path, foreign_names: set[str]) -> list[str]:
    """Every place outside the compat modules that uses a private foreign API.

    - an import from a private module of Keras, Keras-Tuner or TensorFlow
      (``keras.src``, ``keras_tuner.src``, ``tensorflow.python``, ``_``-names);
    - ``x._name`` (or ``getattr(x, "_name")``) where nothing in our packages (the
      compat modules aside) defines ``_name``, or where ``_name`` is a private name of
      those Keras / Keras-Tuner / TensorFlow classes: someone else's private attribute;
    - in a class that extends a class not ours: a method ``_name`` or a use of
      ``self._name`` where ``_name`` is a private name of those Keras / Keras-Tuner
      classes (overriding or calling their internals).
    """
    files = [
        path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        if path.relative_to(root).as_posix() not in COMPAT_MODULES
    ]
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in files}
    ours: set[str] = set()
    classes: set[str] = set()
    for path, tree in trees.items():
        ours.add(path.stem)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                ours.add(node.name)
            elif isinstance(node, ast.ClassDef):
                ours.add(node.name)
                classes.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                ours.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                ours.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                ours.add(node.target.id)
    found = []
    for path in files:
        where = path.relative_to(root).as_posix()
        for node in ast.walk(trees[path]):
            line = getattr(node, "lineno", 0)
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                for module in modules:
                    parts = module.split(".")
                    if parts[0] in FOREIGN and any(
                        _is_private(p) or p in ("src", "python") for p in parts[1:]
                    ):
                        found.append(f"{where}:{line}: import {module}")
            elif isinstance(node, ast.Attribute) and _is_private(node.attr):
                receiver = ast.unparse(node.value)
                if receiver not in ("self", "cls") and (
                    node.attr not in ours or node.attr in foreign_names
                ):
                    found.append(f"{where}:{line}: {receiver}.{node.attr}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _is_private(node.args[1].value)
                and (node.args[1].value not in ours or node.args[1].value in foreign_names)
            ):
                found.append(f"{where}:{line}: {node.func.id}(..., {node.args[1].value!r})")
            elif isinstance(node, ast.ClassDef) and any(
                not (isinstance(b, ast.Name) and b.id in classes) for b in node.bases
            ):
                for inner in ast.walk(node):
                    name = None
                    if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                        name = inner.name
                    elif isinstance(inner, ast.Attribute) and ast.unparse(inner.value) == "self":
                        name = inner.attr
                    if name is not None and name in foreign_names:
                        found.append(f"{where}:{getattr(inner, 'lineno', 0)}: {node.name}.{name}")
    return sorted(set(found))


def test_no_private_keras_tuner_or_tensorflow_api_outside_the_compat_modules():
    found = private_uses(REPO, _foreign_private_names())
    assert found == [], "\n".join(found)


def test_the_grep_finds_what_it_looks_for(tmp_path):
    """The check above is not vacuous: each kind of private use is reported."""
    (tmp_path / "service").mkdir()
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    (tmp_path / "service" / "bad.py").write_text(
        "from keras.src import tree\n"
        "import tensorflow.python.framework.ops\n"
        "import keras_tuner\n"
        "def f(fn, layer):\n"
        "    fn._call_flat([], [])\n"
        "    return getattr(layer, '_inbound_nodes', [])\n"
        "class T(keras_tuner.RandomSearch):\n"
        "    def _try_build(self, hp):\n"
        "        return self._build_hypermodel(hp)\n"
    )
    found = private_uses(tmp_path, _foreign_private_names())
    text = "\n".join(found)
    for needle in (
        "import keras.src",
        "import tensorflow.python",
        "fn._call_flat",
        "'_inbound_nodes'",
        "T._try_build",
        "T._build_hypermodel",
    ):
        assert needle in text, (needle, text)


# ------------------------------------------------------------------- gates
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.15.1", (3, 15, 1)),
        ("2.21.0rc1", (2, 21, 0)),
        ("2.21.0+cu12", (2, 21, 0)),
        ("1.4", (1, 4)),
    ],
)
def test_versions_are_compared_as_numbers(text, expected):
    from service.compat import parse_version

    assert parse_version(text) == expected
    assert parse_version("3.9") < parse_version("3.15")


def test_every_gate_is_open_on_the_installed_versions():
    """The versions this suite runs on are the ones the gates name (else a gate is stale)."""
    from service import compat
    from tuning import compat as tuning_compat

    gates = [
        compat.MULTI_WORKER_FIT,
        compat.GRADIENT_REGISTRY,
        compat.FUNCTIONAL_GRAPH,
        tuning_compat.LIGHT_TRIAL_BUILD,
        tuning_compat.ATOMIC_STATE_FILES,
    ]
    for gate in gates:
        assert gate.open(), (gate.module, gate.version(), gate.low, gate.high)


# ------------------------------------------------ Keras' multi-worker fit
def _multi_worker_strategy():
    """Something that is a MultiWorkerMirroredStrategy to ``isinstance`` (a real one
    must exist before any other TensorFlow op; two real workers train in
    tests/test_distributed.py)."""
    import tensorflow as tf

    return object.__new__(tf.distribute.MultiWorkerMirroredStrategy)


def test_multi_worker_fit_patches_keras_for_the_block_and_restores_it():
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    from service.compat import multi_worker_fit

    cls = tf_trainer.TensorFlowTrainer
    build, reduce = cls.__dict__["_maybe_symbolic_build"], tf_trainer.reduce_per_replica
    with multi_worker_fit(_multi_worker_strategy()):
        assert getattr(cls._maybe_symbolic_build, "kts_patched", False)
        assert tf_trainer.reduce_per_replica is not reduce
    assert cls.__dict__["_maybe_symbolic_build"] is build
    assert tf_trainer.reduce_per_replica is reduce
    # Undone however the block ends; other strategies are left alone.
    with pytest.raises(RuntimeError, match="boom"), multi_worker_fit(_multi_worker_strategy()):
        raise RuntimeError("boom")
    assert cls.__dict__["_maybe_symbolic_build"] is build
    with multi_worker_fit(tf.distribute.get_strategy()):
        assert cls.__dict__["_maybe_symbolic_build"] is build


def test_multi_worker_fit_outside_the_keras_range_leaves_keras_alone(monkeypatch):
    import keras
    from keras.src.backend.tensorflow import trainer as tf_trainer

    from service.compat import multi_worker_fit

    build = tf_trainer.TensorFlowTrainer.__dict__["_maybe_symbolic_build"]
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with (
        pytest.warns(
            UserWarning,
            match=r"is verified on keras >=3\.15,<3\.16; keras 3\.99\.0 is installed",
        ),
        multi_worker_fit(_multi_worker_strategy()),
    ):
        assert tf_trainer.TensorFlowTrainer.__dict__["_maybe_symbolic_build"] is build


# ------------------------------------------- TensorFlow's gradient registry
def _trace_a_custom_gradient() -> None:
    import tensorflow as tf

    @tf.custom_gradient
    def double(x):
        return 2 * x, lambda dy: 2 * dy

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = double(x)
        return tape.gradient(y, x)

    assert float(step(tf.constant(1.0))) == 2.0


def test_traced_custom_gradients_are_released():
    from service.compat import release_traced, traced_gradients

    before = traced_gradients()
    _trace_a_custom_gradient()
    assert len(traced_gradients() - before) >= 1
    assert release_traced(before) >= 1
    assert traced_gradients() <= before


def test_gradient_release_outside_the_tensorflow_range_keeps_them(monkeypatch):
    import tensorflow as tf

    from service.compat import release_traced, traced_gradients

    monkeypatch.setattr(tf, "__version__", "2.30.0")
    with pytest.warns(UserWarning, match="tensorflow 2.30.0 is installed, so they stay registered"):
        before = traced_gradients()
    assert before == frozenset()
    _trace_a_custom_gradient()
    with pytest.warns(UserWarning, match="so they stay registered"):
        released = release_traced(frozenset())
    assert released == 0


# --------------------------------------------------- Keras' functional graph
def test_describe_reads_the_same_table_through_public_attributes(monkeypatch):
    """For a flat model the fallback (public `layer.input` / `layer.output`) agrees."""
    import keras

    from service.models import build
    from service.models.describe import describe_model

    model = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    private = describe_model(model)
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.warns(UserWarning, match="layers are read through the public"):
        public = describe_model(model)
    assert public.rows == private.rows
    assert public.depth == private.depth == 5


def test_taps_outside_the_keras_range_are_not_applicable(monkeypatch):
    import keras

    from service.data.preprocess import with_normalization
    from service.models import build
    from service.reports._common import NotApplicable
    from service.reports._graph import conv_layers, tap

    core = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    model = with_normalization(core, np.ones((4, 32, 32, 1), "float32"), input_name="pixels")
    conv = conv_layers(model)[0]
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    taps = tap(model, [conv])
    np.testing.assert_allclose(taps.model(x)[0], model(x), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with (
        pytest.warns(UserWarning, match="walking a functional model's graph"),
        pytest.raises(NotApplicable, match="cannot look inside model"),
    ):
        tap(model, [conv])


# ------------------------------------------------------------ Keras-Tuner
class _Tuner:
    """The public attributes `build_checked` reads from a Keras-Tuner tuner."""

    def __init__(self, hypermodel, max_model_size=None):
        self.hypermodel = hypermodel
        self.distribution_strategy = None
        self.max_model_size = max_model_size


def _hypermodel(build):
    import keras_tuner

    class HyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            return build(hp)

    return HyperModel()


def test_trial_builds_keep_keras_tuners_checks():
    import keras
    import keras_tuner

    from tuning.compat import build_checked

    def mlp(hp):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        return model

    hp = keras_tuner.HyperParameters()
    assert build_checked(_Tuner(_hypermodel(mlp)), hp).count_params() == 15
    with pytest.raises(keras_tuner.errors.FatalTypeError, match="return a valid Keras Model"):
        build_checked(_Tuner(_hypermodel(lambda hp: {"not": "a model"})), hp)
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="Oversized model: 15 parameters"):
        build_checked(_Tuner(_hypermodel(mlp), max_model_size=10), hp)


def test_lighter_builds_only_inside_the_keras_tuner_range(monkeypatch):
    import keras_tuner

    from tuning.compat import lighter_builds

    lighter = lighter_builds(
        keras_tuner.RandomSearch, declare_space=lambda hp: None, after_build=lambda t: None
    )
    assert issubclass(lighter, keras_tuner.RandomSearch)
    assert lighter is not keras_tuner.RandomSearch
    monkeypatch.setattr(keras_tuner, "__version__", "1.5.0")
    with pytest.warns(UserWarning, match="keras_tuner 1.5.0 is installed, so Keras-Tuner builds"):
        same = lighter_builds(
            keras_tuner.RandomSearch, declare_space=lambda hp: None, after_build=lambda t: None
        )
    assert same is keras_tuner.RandomSearch


def test_state_files_outside_the_keras_tuner_range_use_keras_tuners_writer(monkeypatch):
    import keras_tuner
    from keras_tuner.src import utils

    from tuning.compat import atomic_state_files

    own = utils.save_json
    monkeypatch.setattr(keras_tuner, "__version__", "1.4.0")
    with pytest.warns(UserWarning, match="rewrites them in place"), atomic_state_files():
        assert utils.save_json is own


def _search_config(tmp_path: Path, model_type: str) -> dict:
    return {
        "name": "compat_search",
        "seed": 7,
        "data": {"source": "breast_cancer"},
        "model": {"type": model_type},
        "training": {"epochs": 1, "batch_size": 64},
        "tuning": {
            "tuner": "random",
            "max_trials": 2,
            "space": {
                "training.optimizer.learning_rate": {"type": "choice", "values": [0.01, 0.003]}
            },
        },
        "tracking": {"enabled": False},
        "work_dir": str(tmp_path / "runs"),
        "export": {"base_path": str(tmp_path / "serving")},
    }


def test_a_search_on_another_keras_tuner_runs_keras_tuners_own_build(
    tmp_path, monkeypatch, keras_seed
):
    import keras_tuner

    from pipelines import steps
    from service.config import validate
    from tuning.search import run_search

    data = _search_config(tmp_path, "mlp")
    data["model"]["units"] = [8]
    cfg = validate(data)
    dataset = steps.ingest(cfg)
    parts = steps.split(cfg, dataset)
    monkeypatch.setattr(keras_tuner, "__version__", "1.5.0")
    with pytest.warns(UserWarning, match="keras_tuner 1.5.0"):
        result = run_search(cfg, dataset, parts.split, build_model=steps.build_model)
    assert [r["status"] for r in result.trials] == ["COMPLETED", "COMPLETED"]


BROKEN_BUILDER = """
import sys

from service.models.registry import register


@register("broken_mlp")
def broken_mlp(*, input_shape, num_classes):
    '''Returns a dict where a keras.Model belongs.'''
    return {"layers": []}


from pipelines.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("keras_tuner_version", ["installed", "1.5.0"])
def test_a_builder_that_raises_a_type_error_stops_the_search_with_exit_2(
    tmp_path, keras_tuner_version
):
    """Keras-Tuner's fatal error, not a failed trial: `kts run` stops at the first trial
    and names the model, with the lighter build and with Keras-Tuner's own."""
    import subprocess

    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(_search_config(tmp_path, "broken_mlp")))
    fake = (
        ""
        if keras_tuner_version == "installed"
        else "from pipelines.stderr import quiet_tensorflow; quiet_tensorflow()\n"
        f"import keras_tuner; keras_tuner.__version__ = {keras_tuner_version!r}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", fake + BROKEN_BUILDER, "run", str(config)],
        cwd=tmp_path,
        env=kts_env({"PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore::UserWarning"}),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    err = assert_user_error(
        result, "Tuning stopped at model `broken_mlp`", "returned dict; expected a keras.Model"
    )
    assert "FatalTypeError" not in err
    trials = list((tmp_path / "runs").glob("compat_search/tuning/search-*/trial_*"))
    assert len(trials) <= 1, trials  # stopped at the first trial, not failed and skipped


# -------------------------------------------------------------- serving
def test_flat_call_answers_like_the_keyword_call_and_falls_back(monkeypatch):
    import tensorflow as tf

    from serving.compat import flat_call

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def double(x):
        return {"y": 2 * x}

    function = double.get_concrete_function()
    x = tf.constant([[1.0, 2.0]])
    call = flat_call(function)
    assert call is not None
    np.testing.assert_array_equal(call([x])["y"], function(x=x)["y"])
    monkeypatch.setattr(tf, "__version__", "2.99.0")
    with pytest.warns(UserWarning, match="signatures are called by keyword"):
        assert flat_call(function) is None
