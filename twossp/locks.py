"""One run per configuration at a time: a lock file per config hash.

Two identical runs started together (a resubmitted SLURM array, the same command in two
terminals, two processes sharing one sweep) would both prune and evaluate, and the survivor's
recorded pruning time would be that of a contended machine. :func:`take` gives the run that
comes first ``<results_dir>/locks/<config_hash>.lock``; an identical run started meanwhile
either waits for it (``on_busy=wait``: then it finds the result file and skips as a finished
run) or returns at once naming the holder (``on_busy=skip``: two sweep processes share one
sweep, each point taken by one of them).

The file is created with ``O_CREAT | O_EXCL`` (atomic on local and NFS filesystems, across
nodes) and holds the holder's host, pid, start time and command line. While it runs, the
holder touches the file every :data:`HEARTBEAT` seconds from a daemon thread. A lock is
broken (taken over) when its holder is gone: on the same host, its pid is no longer alive; on
another host, its heartbeat is older than :data:`STALE_AFTER` seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

ON_BUSY = ("wait", "skip")
HEARTBEAT = 30.0  # seconds between two touches of a held lock
STALE_AFTER = 600.0  # a lock whose heartbeat is older is broken (its holder is gone)
POLL_FIRST, POLL_MAX = 1.0, 10.0  # seconds between two looks at a busy lock (growing)


def check_on_busy(value) -> str:
    """``on_busy`` as given, or a ValueError naming what is accepted."""
    if value not in ON_BUSY:
        raise ValueError(f"on_busy must be one of {', '.join(ON_BUSY)}, got {value!r}")
    return value


def lock_path(results_dir: str | Path, config_hash: str) -> Path:
    return Path(results_dir) / "locks" / f"{config_hash}.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock (the file's contents)."""

    host: str
    pid: int
    started: str  # UTC, ISO 8601, seconds
    command: str
    token: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.started}"


def _me() -> Holder:
    return Holder(
        host=socket.gethostname(),
        pid=os.getpid(),
        started=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        command=shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        token=uuid.uuid4().hex,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def read_holder(path: Path) -> Holder | None:
    """The lock file's holder; None when it is gone or not (yet) readable."""
    try:
        data = json.loads(path.read_text())
        return Holder(**{k: data[k] for k in ("host", "pid", "started", "command", "token")})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def gone(holder: Holder | None, path: Path, stale_after: float = STALE_AFTER) -> str | None:
    """Why the lock at ``path`` is broken (its holder is gone), or None while it is held."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "released"
    if holder is not None and holder.host == socket.gethostname() and not _alive(holder.pid):
        return f"pid {holder.pid} on this host is no longer running"
    if age > stale_after:
        return f"no heartbeat for {age:.0f} s (more than {stale_after:.0f} s)"
    return None


class RunLock:
    """A lock this process holds; :meth:`release` (or leaving the ``with`` block) frees it."""

    def __init__(self, path: Path, holder: Holder, heartbeat: float = HEARTBEAT) -> None:
        self.path = path
        self.holder = holder
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(heartbeat,), name=f"lock {path.name}", daemon=True
        )
        self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            if read_holder(self.path) != self.holder:
                log.warning("the lock %s was taken over by another run", self.path)
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if read_holder(self.path) == self.holder:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_take(
    path: Path, stale_after: float = STALE_AFTER, heartbeat: float = HEARTBEAT
) -> RunLock | Holder:
    """The lock at ``path`` (a :class:`RunLock`), or the :class:`Holder` that has it.

    A lock whose holder is gone (:func:`gone`) is broken, with one warning line, and taken.

    Raises:
        OSError: the lock folder cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    me = _me()
    for _ in range(100):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = read_holder(path)
            why = gone(holder, path, stale_after)
            if why is None:
                if holder is None:  # just created, not written yet: look again
                    time.sleep(0.05)
                    continue
                return holder
            if why != "released":
                _break(path, holder, why)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(me), f)
        return RunLock(path, me, heartbeat)
    raise OSError(f"cannot take the lock {path}: it keeps changing hands")


def _break(path: Path, holder: Holder | None, why: str) -> None:
    """Remove a stale lock, unless another process replaced it meanwhile."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another process broke it first
        return
    if read_holder(aside) != holder:  # a fresh lock was renamed: put it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
    else:
        who = holder.describe() if holder is not None else "an unreadable holder"
        log.warning("breaking the stale lock %s held by %s: %s", path, who, why)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(aside)


def take(
    results_dir: str | Path,
    config_hash: str,
    on_busy: str = "wait",
    stale_after: float = STALE_AFTER,
) -> tuple[RunLock | Holder, bool]:
    """The run's lock, waiting for it when busy (``on_busy=wait``), or its holder at once
    (``on_busy=skip``).

    Returns:
        ``(lock or holder, waited)``: ``waited`` says the run waited for another one (which
        may have finished it meanwhile: look for its result file again).
    """
    path = lock_path(results_dir, config_hash)
    got = try_take(path, stale_after)
    if isinstance(got, RunLock) or check_on_busy(on_busy) == "skip":
        return got, False
    log.info("waiting for run %s held by %s (%s)", config_hash, got.describe(), got.command)
    pause = POLL_FIRST
    while isinstance(got, Holder):
        time.sleep(pause)
        pause = min(pause * 1.5, POLL_MAX)
        got = try_take(path, stale_after)
    return got, True
