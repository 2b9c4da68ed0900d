"""Global TensorFlow state, set in exactly one place per run.

Seeds, the mixed-precision policy and the distribution strategy are process-wide
in TensorFlow. `configure` sets them once at the start of a run and reports what
was actually chosen, so builders never touch global state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Runtime:
    """What a run actually uses (recorded as run tags)."""

    precision: str
    strategy: Any
    strategy_name: str
    gpus: int
    is_chief: bool = True
    task: str = "chief/0"
    seed: int = 0

    def reseed(self) -> None:
        """Seed Python, NumPy and TensorFlow again right before the model is built.

        Libraries imported between `configure` and training (MLflow draws random run
        names) consume Python's random state; re-seeding keeps the weights identical
        whether or not the run is tracked.
        """
        import keras

        keras.utils.set_random_seed(self.seed)

    def scope(self):
        """Context in which models and optimizers must be created."""
        return self.strategy.scope()

    def input_shard(self) -> tuple[int, int] | None:
        """``(workers, this worker's index)`` when each worker reads its own rows
        (multi-worker training), else None. The chief is index 0, then the workers."""
        if self.strategy_name != "MultiWorkerMirroredStrategy":
            return None
        return worker_shard()

    @property
    def distributed_strategy(self) -> Any:
        """The strategy when one spreads work over devices or workers, else None."""
        return None if self.strategy_name == "none" else self.strategy


def _gpu_supports_fp16(tf) -> bool:
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        if details.get("compute_capability", (0, 0)) >= (7, 0):
            return True
    return False


def cluster_role() -> tuple[bool, str]:
    """``(is_chief, "type/index")`` from ``TF_CONFIG``; a lone process is the chief.

    As in tf.distribute: the ``chief`` task is the chief; without one, worker 0 is.
    """
    import json

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True, "chief/0"
    try:
        config = json.loads(raw)
        task = config.get("task", {})
    except (ValueError, AttributeError):
        from service.errors import UserError

        raise UserError(
            f"TF_CONFIG: received {raw[:80]!r}; expected JSON with 'cluster' and 'task'."
        ) from None
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief = bool(config.get("cluster", {}).get("chief"))
    chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
    return chief, f"{kind}/{index}"


def worker_shard() -> tuple[int, int]:
    """``(workers, index)`` of this process in ``TF_CONFIG``'s cluster: the chief task
    (if any) first, then ``worker`` tasks in order."""
    import json

    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = config.get("cluster", {})
    order = [("chief", i) for i in range(len(cluster.get("chief", [])))]
    order += [("worker", i) for i in range(len(cluster.get("worker", [])))]
    task = config.get("task", {})
    me = (task.get("type", "worker"), int(task.get("index", 0)))
    if me not in order:
        return 1, 0
    return len(order), order.index(me)


def configure(*, seed: int, precision: str = "auto", distribution: str = "auto") -> Runtime:
    """Seed everything, set the dtype policy and pick a distribution strategy.

    Args:
        seed: seeds Python, NumPy and TensorFlow (`keras.utils.set_random_seed`).
        precision: ``auto`` (mixed_float16 on a GPU of compute capability >= 7.0,
            else float32), ``float32``, ``mixed_float16`` or ``mixed_bfloat16``.
        distribution: ``auto`` (MirroredStrategy when more than one GPU is visible),
            ``none``, ``mirrored`` or ``multi_worker`` (reads ``TF_CONFIG``).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    # The multi-worker strategy must exist before any other TF op runs.
    if distribution == "multi_worker":
        # Keras' fit needs a mend under it: `service.compat.multi_worker_fit`, around
        # each fit (`service.training.trainer.fit`).
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = None

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    gpus = len(tf.config.list_physical_devices("GPU"))

    if precision == "auto":
        precision = "mixed_float16" if gpus and _gpu_supports_fp16(tf) else "float32"
    keras.mixed_precision.set_dtype_policy(precision)

    if strategy is None:
        if distribution == "mirrored" or (distribution == "auto" and gpus > 1):
            strategy = tf.distribute.MirroredStrategy()
        else:
            strategy = tf.distribute.get_strategy()
    name = type(strategy).__name__
    # MultiWorkerMirroredStrategy is an alias of CollectiveAllReduceStrategy.
    name = {
        "_DefaultDistributionStrategy": "none",
        "CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
    }.get(name, name)
    is_chief, task = cluster_role() if distribution == "multi_worker" else (True, "chief/0")
    return Runtime(
        precision=precision,
        strategy=strategy,
        strategy_name=name,
        gpus=gpus,
        is_chief=is_chief,
        task=task,
        seed=seed,
    )
