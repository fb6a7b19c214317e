"""Which calibration windows a method reads, settled before the weights load.

Each method reads only the windows it uses (``PruningMethod.reading`` /
``calibration_windows``), not ``calib.n_samples``; a setting that asks for more than
``calib.n_samples`` allows is recorded as what can be read (:func:`as_reading`); a method
that needs more windows than the settings give is refused (:func:`windows_read`); a corpus
holding fewer complete windows than asked gives those it holds, in one line, unless the
method cannot work with so few (:func:`with_fewer_windows`). :func:`twossp.pipeline.prepare`
calls them in that order.
"""

from __future__ import annotations

import dataclasses
import logging

from twossp.data import CalibrationSpec
from twossp.methods import PruningMethod

log = logging.getLogger(__name__)


def as_reading(method: PruningMethod, n_windows: int) -> PruningMethod:
    """The method as it reads ``calib.n_samples`` windows; one line when that changes a
    setting (the record holds the count read, not the one asked for)."""
    read = method.reading(n_windows)
    asked, got = dataclasses.asdict(method), dataclasses.asdict(read)
    changed = [
        f"method.{k}={asked[k]} -> {'None (all)' if got[k] is None else got[k]}"
        for k in asked
        if asked[k] != got[k]
    ]
    if changed:
        log.info(
            "%s reads at most calib.n_samples=%d calibration windows; recorded as read: %s",
            method.name,
            n_windows,
            ", ".join(changed),
        )
    return read


def windows_read(method: PruningMethod, base: CalibrationSpec, context) -> CalibrationSpec:
    """The calibration windows ``method`` reads (its count of them, not ``calib.n_samples``),
    refused when the settings ask it to work with fewer than it can."""
    calib = method.calibration_spec(base, context)
    calib.check()
    fewest, setting = method.fewest_windows()
    if fewest > calib.n_samples:
        raise ValueError(
            f"{method.name} needs {setting}={fewest} calibration windows but calib.n_samples is "
            f"{calib.n_samples}: lower {setting} or raise calib.n_samples"
        )
    wanted = method.calibration_windows()
    return calib if wanted is None else dataclasses.replace(calib, n_samples=wanted)


def with_fewer_windows(method: PruningMethod, calib: CalibrationSpec, got: int) -> PruningMethod:
    """A corpus with fewer complete windows than ``method`` reads: use those it holds (one
    line), or refuse when the method cannot work with so few."""
    fewest, setting = method.fewest_windows()
    where = (
        f"{calib.dataset.name} ({calib.packing} packing) holds {got} complete calibration "
        f"windows of {calib.seqlen} tokens"
    )
    if got < fewest:
        asks = f"{setting}={fewest}" if setting else f"at least {fewest}"
        lower = f"{setting} or calib.seqlen" if setting else "calib.seqlen"
        raise ValueError(f"{where}; {method.name} needs {asks}: lower {lower}")
    log.warning(
        "%s, fewer than the %d %s reads; using those %d (recorded as calib_windows)",
        where,
        calib.n_samples,
        method.name,
        got,
    )
    return method.reading(got)
