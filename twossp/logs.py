"""Quiet third-party chatter, keep this harness's own progress and warnings.

transformers, datasets and lm-eval log at INFO/WARNING for things a pruning run does on
purpose (a long token stream, weights loaded into a reshaped model, a task's default split);
a reproduce-table sweep printed thousands of such lines. :func:`quiet_libraries` keeps their
errors only, and ``TWOSSP_VERBOSE=1`` restores their defaults.
"""

from __future__ import annotations

import logging
import os
import warnings

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
