"""What one run is, and what identifies its numbers: :class:`RunSpec` and its config hash.

A run's config hash covers everything that can change its numbers (:meth:`RunSpec.identity`):
the model's identity (weight fingerprint or hub commit), the resolved dtype and device kind,
the protocol, every method setting, the target sparsity, seed, calibration and evaluation.
Settings that cannot change the numbers (progress bars, ``force``, the results folder, the
batch size, CPU threads) are left out, so changing them finds the same finished run.

The runner (:func:`twossp.pipeline.run`) and the sweeper that skips finished points
(``hydra_plugins/twossp_sweeper``) both hash runs here; :func:`twossp.config.to_run_spec`
builds a RunSpec from the Hydra config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from twossp.devices import resolve_device, resolve_dtype
from twossp.methods import PruningMethod, build_method
from twossp.model_source import path_fingerprint
from twossp.results import config_hash

if TYPE_CHECKING:
    import torch

    from twossp.data import CalibrationSpec, TextDataset
    from twossp.modeling import ModelSpec


@dataclass
class EvalSpec:
    """Perplexity evaluation (and, through ``downstream``, lm-eval tasks)."""

    datasets: list[TextDataset] = field(default_factory=list)
    seqlen: int = 2048
    batch_size: int | str = 8  # or "auto": sized to free GPU memory (8 on CPU)
    max_windows: int | None = None
    # Which max_windows windows: "spread" evenly over the stream, or the "first" ones.
    window_sample: str = "spread"
    downstream: object | None = None
    # Inference costs of the evaluated model (eval.inference=true): an InferenceSpec, or None.
    inference: object | None = None


@dataclass
class RunSpec:
    """One configuration to run (from the Hydra config: :func:`twossp.config.to_run_spec`)."""

    model_key: str
    model: ModelSpec
    method: str
    method_params: dict
    sparsity: float
    calib: CalibrationSpec
    eval: EvalSpec
    results_dir: Path
    protocol: str = "paper"
    experiment: str = "default"
    seed: int = 0
    force: bool = False
    save_model_dir: Path | None = None
    progress: bool = True
    # Where the run will execute when it differs from here (a sweep submitted to GPU nodes).
    device_hint: str | None = None
    # CPU threads for torch (None: its default); recorded, not hashed (like the batch size).
    threads: int | None = None

    @cached_property
    def built_method(self) -> PruningMethod:
        return build_method(self.method, **self.method_params)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.device_hint or self.model.device)

    @property
    def dtype(self) -> torch.dtype:
        return resolve_dtype(self.model.dtype, self.device)

    def identity(self) -> dict:
        """Everything that can change this run's numbers (and nothing else).

        The method and calibration enter as the method reads them
        (:meth:`PruningMethod.reading`, :meth:`PruningMethod.calibration_identity`): settings
        that make the same computation (``calib.n_samples=32`` or ``256`` for 2SSP, which
        reads 32) share a hash."""
        method = self.built_method
        if method.needs_calibration:
            method = method.reading(self.calib.n_samples)
        view = {
            "model": {
                **self.model.source().identity(),
                "dtype": str(self.dtype).removeprefix("torch."),
                "device": self.device.type,
            },
            "protocol": self.protocol,
            "method": {"name": method.name, **dataclasses.asdict(method)},
            "seed": self.seed,
            "eval": {
                "seqlen": self.eval.seqlen,
                "max_windows": self.eval.max_windows,
                "datasets": [data_identity(d) for d in self.eval.datasets],
                "downstream": downstream_identity(self.eval.downstream),
            },
        }
        if self.eval.max_windows is not None:  # which windows, when not all of them
            view["eval"]["window_sample"] = self.eval.window_sample
        if self.eval.inference is not None:  # only when on: hashes of runs without it stay
            view["eval"]["inference"] = self.eval.inference.identity()
        if method.uses_sparsity:
            view["sparsity"] = float(self.sparsity)
        if method.needs_calibration:
            calib = method.calibration_identity(self.calib)
            view["calib"] = {
                **dataclasses.asdict(calib),
                "dataset": data_identity(calib.dataset),
            }
        return view

    @cached_property
    def config_hash(self) -> str:
        return config_hash(self.identity())


def data_identity(ds: TextDataset) -> dict:
    """A dataset's settings, a local copy named by the fingerprint of its contents."""
    d = dataclasses.asdict(ds)
    if ds.local_path and Path(ds.local_path).expanduser().exists():
        d["local_path"] = path_fingerprint(Path(ds.local_path).expanduser())
    return d


def downstream_identity(spec) -> dict | None:
    """Downstream task settings without the batch size, the local folder by its name only."""
    if spec is None:
        return None
    d = dataclasses.asdict(spec)
    d.pop("batch_size", None)
    if d.get("local_dir"):
        d["local_dir"] = Path(d["local_dir"]).name
    return d
