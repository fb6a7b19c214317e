"""Where long work is: a tqdm bar on a terminal, position lines in a log.

A run's output usually goes to a file (a SLURM log, ``> run.log``), where progress bars are
off (:func:`twossp.logs.progress_bars`); without something else such a log stays silent for
the whole of a long stage (16 min for 2SSP on SmolLM2 at the authors' budgets). Here:

- :func:`stage` logs one line when a stage of a run starts (``prepare``, ``load``, ``prune``,
  ``evaluate``, ``write``) and, when it took long, one when it ends;
- :func:`track` wraps a loop: with bars on (``show``: ``progress=true`` and a terminal) it
  is a tqdm bar; otherwise it logs a line when the loop starts and then, at most every
  ``every`` seconds (30), its position ``k/n``, the time elapsed and an estimate of the time
  left, so a redirected log shows where the run is at least every minute.

Lines go through :mod:`logging` at INFO (the command line prints them to standard output and
Hydra's job log). The clock is injectable (``clock=``, or the module's ``default_clock``) so
tests can run a long loop in no time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator

EVERY = 30.0  # seconds between two position lines of one loop (at most one per step)

default_clock: Callable[[], float] = time.monotonic

_log = logging.getLogger("twossp.progress")


def duration(seconds: float) -> str:
    """``12 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{minutes} min {secs:02d} s"
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours} h {rest // 60:02d} min"


def _count(k: float, unit: str) -> str:
    return f"{k:,.0f}" if unit == "params" else f"{k:g}"


def _unit(unit: str, n: float | None) -> str:
    return unit[:-1] if n == 1 and unit.endswith("s") else unit


class Progress:
    """A loop's progress: a tqdm bar (``show``) or position lines in the log.

    Use as an iterable (``for x in track(xs, desc=...)``) or by hand (``update``), like
    tqdm; ``set_postfix`` adds ``key=value`` to the next line (or to the bar).
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        desc: str,
        total: float | None = None,
        unit: str = "steps",
        show: bool = False,
        every: float = EVERY,
        clock: Callable[[], float] | None = None,
        logger: logging.Logger | None = None,
        announce: bool = True,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable = iterable
        self.desc, self.total, self.unit, self.every = desc, total, unit, every
        self.log = logger or _log
        self.clock = clock or default_clock
        self.position = 0.0
        self.postfix = ""
        self.inner = ""  # position inside the current unit (within); cleared when it is done
        self.inner_done = 0.0  # the fraction of the current unit done (within)
        self.closed = False
        self.bar = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit.rstrip("s"), leave=False)
            return
        self.start = self.last = self.clock()
        if announce:
            of = f", {_count(total, unit)} {_unit(unit, total)}" if total else ""
            self.log.info("%s: starting%s", desc, of)

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("Progress has no iterable: call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, **values) -> None:
        """``key=value`` pairs shown after the position (as tqdm's)."""
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in values.items()))

    def set_postfix_str(self, text: str) -> None:
        """Text shown after the position (as tqdm's)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        self.postfix = text

    def within(self, k: int, n: int, what: str = "candidate") -> None:
        """Progress inside the current unit (``candidate 12/29`` of a search step): shown
        after the position, and a line when ``every`` seconds have passed."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"{what} {k}/{n}")
        self.inner, self.inner_done = f"{what} {k}/{n}", k / n if n else 0.0
        self.update(0)

    def update(self, n: float = 1) -> None:
        """``n`` more units done; logs the position when ``every`` seconds have passed."""
        self.position += n
        if self.bar is not None:
            if n:
                self.bar.update(n)
            return
        now = self.clock()
        if n:
            self.inner, self.inner_done = "", 0.0
        if now - self.last >= self.every:
            self.last = now
            self.log.info("%s: %s", self.desc, self._where(now))

    def _where(self, now: float) -> str:
        elapsed = now - self.start
        k = _count(self.position, self.unit)
        of = f"/{_count(self.total, self.unit)}" if self.total else ""
        parts = [f"{k}{of} {_unit(self.unit, self.total or self.position)}"]
        parts.append(f"{duration(elapsed)} elapsed")
        done = self.position + self.inner_done
        if self.total and 0 < done < self.total:
            left = elapsed * (self.total - done) / done
            parts.append(f"about {duration(left)} left")
        parts.extend(p for p in (self.inner, self.postfix) if p)
        return ", ".join(parts)

    def close(self) -> None:
        """End the loop: close the bar, or log how long a loop that logged positions took."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
            return
        now = self.clock()
        if now - self.start >= self.every:
            self.log.info("%s: done, %s", self.desc, self._where(now))


def track(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: float | None = None,
    unit: str = "steps",
    show: bool = False,
    every: float = EVERY,
    clock: Callable[[], float] | None = None,
    logger: logging.Logger | None = None,
    announce: bool = True,
) -> Progress:
    """Wrap a loop a person may wait for (see the module docstring).

    Args:
        iterable: what to loop over (its length is the total); None: call ``update(n)``.
        desc: what the loop does (``2SSP stage 1``, ``ppl wikitext2``); starts each line.
        total: how many units in all (default: ``len(iterable)``); None: unknown.
        unit: what is counted, plural (``windows``, ``steps``, ``generations``, ``params``).
        show: draw a tqdm bar instead of logging (``progress=true`` on a terminal: a
            RunSpec's / PruneContext's ``progress``).
        every: seconds between position lines.
        clock: seconds, monotonic (tests pass a fake one); default :data:`default_clock`.
        logger: where lines go (default ``twossp.progress``).
        announce: log a line when the loop starts.
    """
    return Progress(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        show=show,
        every=every,
        clock=clock,
        logger=logger,
        announce=announce,
    )


@contextlib.contextmanager
def stage(
    name: str,
    detail: str = "",
    *,
    every: float = EVERY,
    clock: Callable[[], float] | None = None,
    logger: logging.Logger | None = None,
):
    """Log ``name: detail`` as a stage starts, and its duration at the end when it took
    ``every`` seconds or more (so a long stage's end is visible in the log too)."""
    log = logger or _log
    read = clock or default_clock
    log.info("%s: %s", name, detail or "starting")
    start = read()
    yield
    took = read() - start
    if took >= every:
        log.info("%s: done in %s", name, duration(took))


class Stages:
    """A run's stages, one after another, without nesting the code that runs them.

    :meth:`start` logs ``name: detail`` (and first the previous stage's duration, when it
    took ``every`` seconds or more); :meth:`end` closes the last stage.
    """

    def __init__(
        self,
        *,
        every: float = EVERY,
        clock: Callable[[], float] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.every = every
        self.clock = clock or default_clock
        self.log = logger or _log
        self.current: tuple[str, float] | None = None

    def start(self, name: str, detail: str = "") -> None:
        self.end()
        self.log.info("%s: %s", name, detail or "starting")
        self.current = (name, self.clock())

    def end(self) -> None:
        if self.current is None:
            return
        name, start = self.current
        self.current = None
        took = self.clock() - start
        if took >= self.every:
            self.log.info("%s: done in %s", name, duration(took))
