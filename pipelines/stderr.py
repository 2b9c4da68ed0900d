"""Muting TensorFlow's and gRPC's native start-up chatter on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Mute fd 2 while gRPC/TensorFlow C++ code runs: their absl start-up lines are noise.

    Some of those lines are printed before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``, so
    only muting the file descriptor helps. Python exceptions still propagate and are
    reported after stderr is restored, so a user error stays one line.
    ``TF_CPP_MIN_LOG_LEVEL=0`` keeps everything visible.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up chatter (CUDA probing on CPU hosts).

    Some of those lines are printed before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``,
    so stderr is muted at the file-descriptor level for the import only. Setting
    ``TF_CPP_MIN_LOG_LEVEL=0`` shows everything.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    with native_stderr_muted():
        import tensorflow  # noqa: F401
