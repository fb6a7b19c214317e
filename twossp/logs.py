"""What the command lines print: quiet libraries, progress bars, one-line errors.

transformers, datasets and lm-eval log at INFO/WARNING for things a pruning run does on
purpose (a long token stream, weights loaded into a reshaped model, a task's default split);
a reproduce-table sweep printed thousands of such lines. :func:`quiet_libraries` keeps their
errors only, and ``TWOSSP_VERBOSE=1`` restores their defaults.

Progress bars show only on a terminal and only with ``progress=true``: redirected sweep logs
filled with bars redrawn thousands of times (:func:`progress_bars` turns off every tqdm bar
of the process, lm-eval's and the GGUF conversion's included).

A failure a user can fix prints one line and exits 2 (:func:`exit_on_user_error`); an
interruption prints one line and exits 130 (:func:`exit_on_interrupt`). ``TWOSSP_DEBUG=1``
shows the tracebacks instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings

USER_ERROR_EXIT = 2
INTERRUPT_EXIT = 130  # 128 + SIGINT, what a shell reports for a process stopped by Ctrl-C

NOISY_LOGGERS = (
    "transformers",
    "datasets",
    "lm-eval",
    "lm_eval",
    "accelerate",
    "huggingface_hub",
    "urllib3",
    "httpx",
    "filelock",
    "absl",
)


def quiet_libraries() -> None:
    if os.environ.get("TWOSSP_VERBOSE", "0") not in ("", "0"):
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def show_progress(setting: bool) -> bool:
    """Whether to draw progress bars: ``progress=true`` and stderr is a terminal."""
    return bool(setting) and sys.stderr.isatty()


@contextlib.contextmanager
def progress_bars(show: bool):
    """Within the block, every tqdm bar of the process is off unless ``show``.

    Libraries pass ``disable=`` themselves (lm-eval's request loops) or nothing at all
    (transformers' GGUF conversion), so neither ``TQDM_DISABLE`` nor their own switches reach
    every bar; tqdm's constructor is wrapped instead, and put back afterwards.
    """
    import tqdm.std

    init = tqdm.std.tqdm.__init__
    if show or getattr(init, "_twossp_disabled", False):
        yield
        return

    @functools.wraps(init)
    def disabled(self, *args, **kwargs):
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    disabled._twossp_disabled = True
    tqdm.std.tqdm.__init__ = disabled
    try:
        yield
    finally:
        tqdm.std.tqdm.__init__ = init


def debugging() -> bool:
    return os.environ.get("TWOSSP_DEBUG", "0") not in ("", "0")


def user_error(exc: BaseException) -> bool:
    """Errors a user can fix from the command line (settings, data, models, extras)."""
    from twossp.extras import MissingExtraError

    return isinstance(exc, (ValueError, OSError, KeyError, MissingExtraError))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and exc.args:  # str(KeyError) is the repr of its key
        text = str(exc.args[0]).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def exit_on_user_error(exc: BaseException, prog: str = "twossp") -> None:
    """Print one line for a user error and exit 2; re-raise anything else (and everything
    with ``TWOSSP_DEBUG=1``)."""
    if debugging() or not user_error(exc):
        raise exc
    print(
        f"[{prog}] error: {first_line(exc)} (TWOSSP_DEBUG=1 shows the traceback)", file=sys.stderr
    )
    sys.exit(USER_ERROR_EXIT)


def exit_on_interrupt(exc: KeyboardInterrupt, prog: str = "twossp", note: str = "") -> None:
    """One line for Ctrl-C and exit 130 (re-raised with ``TWOSSP_DEBUG=1``)."""
    if debugging():
        raise exc
    print(f"[{prog}] interrupted{': ' + note if note else ''}", file=sys.stderr)
    sys.exit(INTERRUPT_EXIT)
