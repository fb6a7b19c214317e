"""A Hydra sweeper that launches only the points of a sweep that still need to run.

Hydra's basic sweeper launches every point; on a cluster each job then starts, imports torch
and finds its result file. This one composes every point's config in the submitting process,
computes its config hash, and drops points whose result file exists (and reads back) or that
repeat an earlier point of the sweep (dense under several sparsities has one hash). Dropped
points still join the sweep's experiment (:func:`twossp.results.add_members`), so tables of
the experiment show them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

log = logging.getLogger(__name__)


def device_hint(cfg) -> str | None:
    """Where the jobs will run when they do not run here: a submitit SLURM launcher puts them
    on GPU nodes when it asks for GPUs; None means "here" (resolve ``auto`` locally)."""
    target = str(cfg.hydra.launcher.get("_target_", ""))
    if "SlurmLauncher" not in target:
        return None
    gpus = cfg.hydra.launcher.get("gpus_per_node") or cfg.hydra.launcher.get("gres")
    return "cuda" if gpus else "cpu"


class _SkipEmpty:
    """Launcher proxy: an empty batch launches nothing (submitit would still submit)."""

    def __init__(self, launcher):
        self.launcher = launcher

    def launch(self, job_overrides, initial_job_idx):
        if not job_overrides:
            return []
        return self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)

    def __getattr__(self, name):
        return getattr(self.launcher, name)


class ResumingSweeper(BasicSweeper):
    """:class:`BasicSweeper` minus finished and repeated points."""

    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = _SkipEmpty(self.launcher)
        self._seen: set[str] = set()

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        batch = super().get_job_batch()
        return [job for job in batch if self._needs_run(list(job))]

    def _needs_run(self, overrides: list[str]) -> bool:
        from twossp.config import to_run_spec
        from twossp.pipeline import finished
        from twossp.results import add_members, run_path

        loader = self.hydra_context.config_loader
        cfg = loader.load_sweep_config(self.config, overrides)
        try:
            spec = to_run_spec(cfg, device_hint(cfg))
            digest = spec.config_hash
        except Exception as exc:  # the job itself reports the error in one line
            log.debug("cannot hash %s (%s); launching it", overrides, exc)
            return True
        if digest in self._seen:
            log.info("[twossp] %s repeats an earlier point (%s); not launched", overrides, digest)
            return False
        self._seen.add(digest)
        if spec.force or not finished(run_path(spec.results_dir, digest)):
            return True
        add_members(spec.results_dir, spec.experiment, [digest])
        print(f"[twossp] finished earlier, not launched: {' '.join(overrides)}")
        return False
