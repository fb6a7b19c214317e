"""One run per configuration at a time: a lock on its config hash, tested with real processes.

Two identical runs started together: one prunes, the other waits and then skips it as
finished (``on_busy=wait``) or exits at once naming the holder (``on_busy=skip``). A lock
whose holder is gone is broken.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import needs_shared, run_spec
from twossp import locks, pipeline
from twossp.locks import Holder, RunLock, lock_path, try_take

ROOT = Path(__file__).resolve().parents[1]

# A run whose pruning waits for a gate file: the real command line in a second process,
# holding its lock until the test opens the gate.
GATED = """
import sys, time
from pathlib import Path

gate = Path(sys.argv[1])
from twossp import pipeline

real = pipeline.prepare


def gated(spec):
    while not gate.exists():
        time.sleep(0.1)
    return real(spec)


pipeline.prepare = gated
sys.argv = ["twossp-run", *sys.argv[2:]]
from experiments.run import cli

cli()
"""


def _write_lock(path: Path, host: str, pid: int, age: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = Holder(host, pid, "2026-01-01 00:00:00 UTC", "twossp-run", "t0")
    path.write_text(json.dumps(holder.__dict__))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lock_is_exclusive_and_released(tmp_path):
    path = lock_path(tmp_path, "abc")
    lock = try_take(path)
    assert isinstance(lock, RunLock) and path.exists()
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    other = try_take(path)  # this process is alive: the lock is held
    assert isinstance(other, Holder) and other.pid == os.getpid()
    lock.release()
    assert not path.exists()


def test_the_holder_touches_its_lock(tmp_path):
    path = lock_path(tmp_path, "abc")
    lock = try_take(path, heartbeat=0.05)
    old = time.time() - 500
    os.utime(path, (old, old))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 5  # the heartbeat thread touched it
    lock.release()
    assert not path.exists()


def test_a_lock_whose_holder_is_gone_is_broken(tmp_path, caplog):
    path = lock_path(tmp_path, "abc")
    _write_lock(path, socket.gethostname(), _dead_pid())  # same host, process gone
    with caplog.at_level(logging.WARNING, logger="twossp.locks"):
        lock = try_take(path)
    assert isinstance(lock, RunLock)
    assert "breaking the stale lock" in caplog.text and "no longer running" in caplog.text
    lock.release()

    _write_lock(path, "another-node", 12345)  # another host, fresh heartbeat: held
    assert isinstance(try_take(path), Holder)
    _write_lock(path, "another-node", 12345, age=locks.STALE_AFTER + 60)  # heartbeat too old
    lock = try_take(path)
    assert isinstance(lock, RunLock) and lock.holder.pid == os.getpid()
    lock.release()


def test_on_busy_is_checked():
    with pytest.raises(ValueError, match="on_busy must be one of wait, skip, got 'later'"):
        locks.check_on_busy("later")


@needs_shared()
def test_on_busy_skip_returns_at_once_naming_the_holder(tmp_path, capsys, monkeypatch):
    from experiments.run import report

    def refuse(*a, **k):
        raise AssertionError("a busy run must not prepare or load anything")

    monkeypatch.setattr(pipeline, "prepare", refuse)
    spec = run_spec(f"paths.results_dir={tmp_path}", "progress=false", "eval.max_windows=1")
    held = try_take(lock_path(tmp_path, spec.config_hash))
    try:
        outcome = pipeline.run(spec, on_busy="skip")
    finally:
        held.release()
    assert outcome.status == "busy" and outcome.holder.pid == os.getpid()
    report(outcome)
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"[twossp] busy: run {spec.config_hash} is held by pid {os.getpid()}")
    assert f"on host {socket.gethostname()} since " in line


def _wait_for(predicate, what: str, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@needs_shared()
def test_two_identical_runs_one_prunes_the_other_waits_or_exits(tmp_path):
    args = [
        f"paths.results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "eval.max_windows=1",
        "eval.use=[ptb]",
        "threads=1",
        "progress=false",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    script, gate = tmp_path / "gated.py", tmp_path / "gate"
    script.write_text(GATED)
    out = {name: tmp_path / f"{name}.out" for name in ("first", "waiting")}
    lock_dir = tmp_path / "results" / "locks"
    procs = []
    try:
        with out["first"].open("w") as first_out:
            first = subprocess.Popen(
                [sys.executable, str(script), str(gate), *args],
                stdout=first_out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,
            )
        procs.append(first)
        _wait_for(lambda: lock_dir.is_dir() and any(lock_dir.glob("*.lock")), "the first lock")

        run = [sys.executable, str(ROOT / "experiments" / "run.py"), *args]
        with out["waiting"].open("w") as waiting_out:  # both start while the first holds it
            waiting = subprocess.Popen(
                run, stdout=waiting_out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
            )
        procs.append(waiting)
        skipper = subprocess.run(
            [*run, "on_busy=skip"], capture_output=True, text=True, env=env, timeout=300
        )
        assert skipper.returncode == 0, skipper.stderr
        busy = [line for line in skipper.stdout.splitlines() if "[twossp] busy" in line]
        assert len(busy) == 1 and f"held by pid {first.pid} on host" in busy[0]
        assert "prune: " not in skipper.stdout
        _wait_for(lambda: "waiting for run" in out["waiting"].read_text(), "the waiting line")
        gate.touch()
        assert first.wait(timeout=300) == 0 and waiting.wait(timeout=300) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    first_log, waiting_log = out["first"].read_text(), out["waiting"].read_text()
    assert "prune: " in first_log and "[twossp] results:" in first_log
    [line] = [x for x in waiting_log.splitlines() if "waiting for run" in x]
    assert f"held by pid {first.pid} on host {socket.gethostname()} since" in line
    assert "prune: " not in waiting_log and "[twossp] skipped (already done)" in waiting_log
    assert not any(lock_dir.iterdir())  # released
