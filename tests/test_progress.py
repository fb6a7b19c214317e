"""Long work says where it is: position lines in a redirected log (a fake clock, no waiting)."""

from __future__ import annotations

import itertools
import logging
import re

import pytest

import twossp.progress
from tests.conftest import needs_shared, run_spec
from twossp.progress import Stages, duration, track


def _clock(step: float):
    ticks = itertools.count(0, step)
    return lambda: next(ticks)


def _elapsed(line: str) -> float:
    """Seconds of a line's ``N s elapsed`` / ``M min SS s elapsed`` / ``H h MM min``."""
    match = re.search(r"(?:(\d+) h )?(?:(\d+) min )?(?:(\d+) s)? elapsed", line)
    h, m, s = (int(g) if g else 0 for g in match.groups())
    return 3600 * h + 60 * m + s


def test_durations_read_as_a_person_would():
    assert duration(12.4) == "12 s"
    assert duration(185) == "3 min 05 s"
    assert duration(3720) == "1 h 02 min"


def test_a_long_loop_logs_its_position_at_most_every_30_seconds(caplog):
    with caplog.at_level(logging.INFO, logger="twossp.progress"):
        list(track(range(100), desc="2SSP stage 1", unit="windows", clock=_clock(7.0)))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "2SSP stage 1: starting, 100 windows"
    assert lines[1] == "2SSP stage 1: 5/100 windows, 35 s elapsed, about 11 min 05 s left"
    assert lines[-1].startswith("2SSP stage 1: done, 100/100 windows, 11 min 4")
    times = [_elapsed(line) for line in lines[1:]]
    assert all(30 <= b - a for a, b in itertools.pairwise(times[:-1]))  # at most every 30 s
    assert all(b - a < 60 for a, b in itertools.pairwise(times))  # and at least every minute


def test_a_short_loop_logs_only_that_it_started(caplog):
    with caplog.at_level(logging.INFO, logger="twossp.progress"):
        list(track(range(3), desc="ShortGPT BI", unit="windows", clock=_clock(1.0)))
    assert [r.getMessage() for r in caplog.records] == ["ShortGPT BI: starting, 3 windows"]


def test_a_search_step_says_which_candidate_it_scores(caplog):
    steps = track(range(2), desc="2SSP stage 2", unit="steps", clock=_clock(20.0))
    with caplog.at_level(logging.INFO, logger="twossp.progress"):
        for _ in steps:
            for k in range(1, 5):
                steps.within(k, 4)
    lines = [r.getMessage() for r in caplog.records]
    assert "2SSP stage 2: 0/2 steps, 40 s elapsed, about 2 min 00 s left, candidate 2/4" in lines
    assert "2SSP stage 2: 2/2 steps, 3 min 20 s elapsed" in lines  # a step done: no candidate


def test_bars_on_a_terminal_log_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="twossp.progress"):
        list(track(range(5), desc="x", show=True, clock=_clock(100.0)))
    assert not caplog.records


def test_stages_log_a_line_each_and_the_duration_of_long_ones(caplog):
    stages = Stages(clock=_clock(45.0))
    with caplog.at_level(logging.INFO, logger="twossp.progress"):
        stages.start("prepare", "checks")
        stages.start("prune", "twossp to sparsity 0.375")
        stages.end()
    assert [r.getMessage() for r in caplog.records] == [
        "prepare: checks",
        "prepare: done in 45 s",
        "prune: twossp to sparsity 0.375",
        "prune: done in 45 s",
    ]


@needs_shared()
def test_a_long_run_logs_where_it_is_at_least_every_minute(tmp_path, monkeypatch, caplog):
    """The pipeline on stories260K with progress bars off (a redirected log) and a clock on
    which every reading is 25 s later: each stage is named, and 2SSP's stage 1 (windows) and
    stage 2 (steps, candidates) and the evaluation log their positions."""
    from twossp.pipeline import run

    monkeypatch.setattr(twossp.progress, "default_clock", _clock(25.0))
    spec = run_spec(
        f"paths.results_dir={tmp_path}",
        "progress=false",
        "eval.max_windows=4",
        "eval.use=[ptb]",
        "eval.batch_size=1",
        "method.n_calib_stage1=4",
        "method.score_seqlen=64",
    )
    with caplog.at_level(logging.INFO):
        assert run(spec).status == "done"
    lines = [r.getMessage() for r in caplog.records]
    for name in ("prepare", "load", "prune", "evaluate", "write"):
        assert any(line.startswith(f"{name}: ") for line in lines), name
    assert any(re.match(r"2SSP stage 1: \d/4 windows, .* elapsed", line) for line in lines)
    assert any(re.match(r"2SSP stage 2: 0/\d steps?, .*candidate \d+/5", line) for line in lines)
    assert any(re.match(r"ppl ptb: \d/4 windows", line) for line in lines)


@pytest.mark.parametrize("unit, line", [("steps", "x: starting, 1 step")])
def test_one_unit_is_singular(caplog, unit, line):
    with caplog.at_level(logging.INFO, logger="twossp.progress"):
        track(range(1), desc="x", unit=unit)
    assert caplog.records[0].getMessage() == line
