"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one.

Every small state file of a run (``state.json``, the resolved config, the tuner's
history files, a trial's child-run id, saved row keys, the trained model's weights)
goes through here: the data is written to a temporary file with a unique name in the
same folder (two processes never share it), flushed and fsynced, then renamed over
the target with `os.replace` (atomic on POSIX and Windows within one file system).
A kill at any point leaves the previous file intact and at most a hidden
``.tmp-*-<name>`` file beside it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block is done it becomes ``path``.

    For writers that want a file name (``np.save``, ``model.save_weights``): they
    write the yielded path, which is then fsynced and renamed over ``path``. If the
    block raises, the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_path(run_dir / "keys.npy") as tmp:   # doctest: +SKIP
        ...     np.save(tmp, keys)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The whole name is kept last: some writers pick a format by it (.weights.h5, .npy).
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_atomic(path: str | Path, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically (module docstring); ``path``."""
    path = Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(raw)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
