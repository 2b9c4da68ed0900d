"""One `kts run` per config at a time: a lock file in the run folder.

Two runs of one config share a run folder (backups, state, the MLflow run to resume);
run together they corrupt each other's backups. ``runs/<name>/run.lock`` is held with
``fcntl.flock`` for the whole run and names its holder (pid, host, start time, task):

* a second run finds the lock taken and stops with exit 2 naming the holder;
* the kernel drops a flock when its process dies, however it dies, so a lock left by
  a killed run is free: the next run takes it over and says so on stderr;
* the file is removed when the run ends (also on errors, Ctrl-C and SIGTERM).

Multi-worker runs lock per task: the chief (worker 0 without a chief) takes
``run.lock``, every other task ``run-<type>-<index>.lock``. Workers may share one run
folder (a shared volume) or each have their own; either way they never lock each other
out, while a second copy of the same task is refused.

On a file system without ``flock`` support the lock falls back to the file's content:
a holder that is still alive on this host, or any holder on another host, refuses.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from service.errors import UserError


def lock_path(run_dir: Path, task: str | None = None) -> Path:
    """The lock of the chief (``task`` None) or of another task, e.g. ``worker/1``."""
    return run_dir / ("run.lock" if task is None else f"run-{task.replace('/', '-')}.lock")


def _describe(holder: dict[str, Any]) -> str:
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"since {holder.get('since', '?')}"
    )


def _alive_here(holder: dict[str, Any]) -> bool:
    """Whether the holder is a living process on this host (unknown hosts count as alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class RunLock:
    """The run folder's lock for one task; use as a context manager.

    Raises:
        UserError: another run of this config (this task) holds the lock.
    """

    def __init__(self, run_dir: Path, *, pipeline: str, task: str | None = None):
        self.path = lock_path(run_dir, task)
        self.pipeline = pipeline
        self.task = task or "chief/0"
        self._fd: int | None = None

    # ------------------------------------------------------------------ holder
    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            raw = os.pread(fd, 4096, 0)
            holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _holder_of_taken(self, fd: int) -> dict[str, Any]:
        """The holder's record; it writes it just after taking the lock, so wait briefly."""
        for _ in range(20):
            holder = self._read(fd)
            if holder:
                return holder
            time.sleep(0.05)
        return {}

    def _refuse(self, holder: dict[str, Any]) -> UserError:
        return UserError(
            f"{self.path}: pipeline {self.pipeline!r} is already running "
            f"({_describe(holder)}); expected one `kts run` of a config at a time: wait for "
            "it to finish or stop it (or give this run another `name` or `work_dir`)."
        )

    # --------------------------------------------------------------- acquire
    def acquire(self) -> None:
        import fcntl

        # Folders made for the lock alone are removed with it when the run leaves them
        # empty (a run stopped by bad data leaves no `runs/` behind).
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self._made = missing  # deepest first
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flocked = True
            except BlockingIOError:
                holder = self._holder_of_taken(fd)
                os.close(fd)
                raise self._refuse(holder) from None
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise
                flocked = False
            # The previous holder removes the file before letting go: a lock taken on a
            # removed file is no lock. Try again on the file that is there now.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            break
        previous = self._read(fd)
        if previous:
            mine = (
                previous.get("pid") == os.getpid() and previous.get("host") == socket.gethostname()
            )
            if not flocked and not mine and _alive_here(previous):
                os.close(fd)
                raise self._refuse(previous)
            sys.stderr.write(
                f"kts: note: taking over the stale lock {self.path} of {_describe(previous)} "
                "(that run ended without releasing it).\n"
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "pipeline": self.pipeline,
            "task": self.task,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then let go (so no one locks a file about to vanish)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        for folder in getattr(self, "_made", []):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
