"""Load, prune, evaluate, record: one run, from typed arguments.

Everything that can be checked cheaply (sparsity range, method name and settings, model
architecture, dataset paths) is checked in :func:`prepare` before any weights load. A run
whose result file already exists is skipped unless ``force`` is set, so an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from twossp import sparsity as sp
from twossp.data import CalibrationSpec, TextDataset, calibration_samples, token_stream
from twossp.evaluation.efficiency import PeakMemory, resolve_batch_size, track_peak_memory
from twossp.evaluation.perplexity import perplexity
from twossp.io import atomic_write_text
from twossp.methods import PruneContext, PruningMethod, build_method
from twossp.modeling import ModelSpec, check_model, load_model, save_pruned
from twossp.results import (
    Metric,
    RunRecord,
    plan_path,
    read_run,
    reuse_path,
    run_path,
    to_frame,
    write_run,
)

log = logging.getLogger(__name__)


@dataclass
class EvalSpec:
    """Perplexity evaluation (and, through ``downstream``, lm-eval tasks)."""

    datasets: list[TextDataset] = field(default_factory=list)
    seqlen: int = 2048
    batch_size: int | str = 8  # or "auto": sized to free GPU memory (8 on CPU)
    max_windows: int | None = None
    downstream: object | None = None


@dataclass
class RunSpec:
    """One configuration to run; built from the Hydra config by ``experiments/run.py``."""

    model_key: str
    model: ModelSpec
    method: str
    method_params: dict
    sparsity: float
    calib: CalibrationSpec
    eval: EvalSpec
    results_dir: Path
    config_hash: str
    experiment: str = "default"
    seed: int = 0
    force: bool = False
    save_model_dir: Path | None = None
    progress: bool = True
    # Runs sharing a reuse key give the same rows (dense at any sparsity); a finished one is
    # copied under this run's hash instead of being recomputed. None: always compute.
    reuse_key: str | None = None


@dataclass
class RunOutcome:
    status: str  # "done", "skipped" or "reused" (rows copied from an equivalent finished run)
    path: Path
    frame: object = None
    plan: object = None


def cap_seqlen(requested: int, config, what: str) -> int:
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and requested > limit:
        log.warning(
            "%s seqlen %d exceeds the model's context %d; using %d", what, requested, limit, limit
        )
        return int(limit)
    return requested


def prepare(spec: RunSpec) -> PruningMethod:
    """All cheap checks, before any heavy work. Returns the built method."""
    method = build_method(spec.method, **spec.method_params)
    if method.uses_sparsity:
        sp.validate_sparsity(spec.sparsity)
    if not spec.eval.datasets and spec.eval.downstream is None:
        raise ValueError(
            "nothing to evaluate: eval.use is empty and no downstream tasks are set, so the run "
            "would record no rows (keep at least one dataset, e.g. eval.max_windows=1)"
        )
    check_model(spec.model)
    for ds in spec.eval.datasets:
        ds.check()
    if spec.eval.downstream is not None:
        spec.eval.downstream.check()
    if method.needs_calibration:
        spec.calib.dataset.check()
    return method


def run(spec: RunSpec, tracker=None) -> RunOutcome:
    """Run one configuration end to end (or skip it if its result file exists)."""
    path = run_path(spec.results_dir, spec.config_hash)
    if path.exists() and not spec.force:
        log.info("skipping finished run %s (%s)", spec.config_hash, path)
        return RunOutcome("skipped", path)
    method = prepare(spec)
    reused = None if spec.force or spec.save_model_dir else reuse_finished(spec)
    if reused is not None:
        return reused
    torch.manual_seed(spec.seed)
    model, tokenizer = load_model(spec.model)
    target = spec.sparsity if method.uses_sparsity else 0.0
    method.check(model, target)
    before = sp.count(model)
    if method.needs_calibration:
        seqlen = cap_seqlen(spec.calib.seqlen, model.config, "calibration")
        calibration = calibration_samples(tokenizer, replace(spec.calib, seqlen=seqlen))
    else:
        calibration = torch.empty(0, 0, dtype=torch.long)

    start = time.perf_counter()
    with track_peak_memory() as prune_peak:
        plan = method.prune(model, PruneContext(target, calibration, spec.seed, spec.progress))
    prune_seconds = time.perf_counter() - start
    after = sp.count(model)
    achieved = sp.measure(before, after)
    plan.save(plan_path(spec.results_dir, spec.config_hash))
    log.info(
        "%s: target %.4f achieved %.4f (%d -> %d params) in %.2fs",
        method.name,
        target,
        achieved,
        before.total,
        after.total,
        prune_seconds,
    )

    with track_peak_memory() as eval_peak:
        metrics = evaluate(model, tokenizer, spec)
    metrics.extend(peak_memory_metrics({"prune": prune_peak, "eval": eval_peak}))
    record = RunRecord(
        run_id=uuid.uuid4().hex[:12],
        config_hash=spec.config_hash,
        experiment=spec.experiment,
        model=spec.model_key,
        model_path=spec.model.name_or_path,
        method=method.name,
        method_config=spec.method_params,
        target_sparsity=target,
        achieved_sparsity=achieved,
        params_before=before.total,
        params_after=after.total,
        block_params_before=before.blocks,
        block_params_after=after.blocks,
        prune_seconds=prune_seconds,
        seed=spec.seed,
    )
    frame = to_frame(record, metrics)
    write_run(frame, path)
    if spec.reuse_key is not None:
        atomic_write_text(reuse_path(spec.results_dir, spec.reuse_key), spec.config_hash)
    if spec.save_model_dir is not None:
        save_pruned(model, spec.save_model_dir, tokenizer)
    if tracker is not None:
        tracker.log_run(record, frame)
    return RunOutcome("done", path, frame, plan)


def reuse_finished(spec: RunSpec) -> RunOutcome | None:
    """Copy the rows of a finished run with the same reuse key under ``spec``'s hash.

    The copy keeps the source's run id (it is the same measurement) and takes this run's
    experiment name; the plan is copied too. Returns None when there is nothing to reuse.
    """
    if spec.reuse_key is None:
        return None
    index = reuse_path(spec.results_dir, spec.reuse_key)
    source = index.read_text().strip() if index.exists() else None
    if not source or not run_path(spec.results_dir, source).exists():
        return None
    frame = read_run(run_path(spec.results_dir, source))
    frame["config_hash"] = spec.config_hash
    frame["experiment"] = spec.experiment
    source_plan = plan_path(spec.results_dir, source)
    if source_plan.exists():
        atomic_write_text(plan_path(spec.results_dir, spec.config_hash), source_plan.read_text())
    path = write_run(frame, run_path(spec.results_dir, spec.config_hash))
    log.info("reused the rows of equivalent finished run %s (%s)", source, path)
    return RunOutcome("reused", path, frame)


def peak_memory_metrics(peaks: dict[str, PeakMemory]) -> list[Metric]:
    """``peak_memory_gib`` rows (dataset = the phase) for phases measured on CUDA."""
    return [
        Metric("peak_memory_gib", phase, peak.peak_gib, {"per_device_bytes": peak.per_device})
        for phase, peak in peaks.items()
        if peak.peak_bytes is not None
    ]


def evaluate(model, tokenizer, spec: RunSpec) -> list[Metric]:
    metrics = []
    seqlen = cap_seqlen(spec.eval.seqlen, model.config, "evaluation")
    batch_size = resolve_batch_size(spec.eval.batch_size, model, seqlen)
    for ds in spec.eval.datasets:
        ids, variant = token_stream(tokenizer, ds, seqlen)
        res = perplexity(
            model,
            ids,
            seqlen,
            batch_size,
            spec.eval.max_windows,
            desc=f"ppl {ds.name}",
            progress=spec.progress,
        )
        variant = {**variant, "seqlen": seqlen, "windows": res.windows, "tokens": res.tokens}
        log.info("ppl %s = %.3f (%d windows of %d)", ds.name, res.ppl, res.windows, seqlen)
        metrics.append(Metric("ppl", ds.name, res.ppl, variant))
    if spec.eval.downstream is not None:
        from twossp.evaluation.downstream import evaluate_tasks

        metrics.extend(evaluate_tasks(model, tokenizer, spec.eval.downstream))
    return metrics
