"""Load, prune, evaluate, record: one run, from typed arguments.

:func:`prepare` does everything that can fail before the weights load: settings, the model's
config and architecture, the method's budget on a weightless (meta-device) copy of the model,
the tokenizer, the calibration windows and every evaluation stream (local files parsed, hub
data fetched), the downstream tasks' data. Only then does :func:`run` load the weights,
prune, evaluate and write the run's file. A run whose result file exists (and reads back) is
skipped unless ``force`` is set, so an interrupted sweep resumes where it stopped.

What a run is and what its config hash covers (:class:`RunSpec`) lives in
:mod:`twossp.run_spec`, which the sweeper imports too.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from twossp import locks
from twossp import sparsity as sp
from twossp.calibration_windows import as_reading, windows_read, with_fewer_windows
from twossp.data import CalibrationSpec, calibration_samples, token_stream
from twossp.devices import check_device, use_threads
from twossp.evaluation.perplexity import WINDOW_SAMPLES, perplexity, windows
from twossp.evaluation.runtime import (
    PeakMemory,
    parse_batch_size,
    resolve_batch_size,
    track_peak_memory,
)
from twossp.io import check_writable
from twossp.items import items_path, window_items, write_items
from twossp.methods import PruneContext, PruningMethod
from twossp.modeling import check_model, load_model, load_tokenizer, save_pruned
from twossp.progress import Stages
from twossp.results import (
    CorruptRunError,
    Metric,
    RunRecord,
    add_members,
    lm_eval_path,
    plan_path,
    read_run,
    run_columns,
    run_path,
    to_frame,
    write_run,
)
from twossp.reuse import FoundPlan, find_plan, pruning_key
from twossp.run_spec import EvalSpec, RunSpec
from twossp.surgery import apply_plan

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    # "done", "skipped" (the result file existed) or "busy" (an identical run holds the
    # lock and on_busy is "skip": ``holder`` names it)
    status: str
    path: Path
    frame: object = None
    plan: object = None
    holder: object = None


@dataclass
class Prepared:
    """What :func:`prepare` checked and built, ready for the weights."""

    method: PruningMethod
    target: float
    tokenizer: object
    calib: CalibrationSpec | None
    calibration: torch.Tensor
    eval_seqlen: int
    tasks: object = None  # downstream tasks with their data, when any


def cap_seqlen(requested: int, context: int | None) -> int:
    return min(requested, context) if context else requested


def prepare(spec: RunSpec) -> Prepared:
    """All checks and all data, before any weights load. Raises on the first problem."""
    check_device(spec.model.device)
    method = spec.built_method
    target = sp.validate_sparsity(spec.sparsity) if method.uses_sparsity else 0.0
    if not spec.eval.datasets and spec.eval.downstream is None:
        raise ValueError(
            "nothing to evaluate: eval.use is empty and no downstream tasks are set, so the run "
            "would record no rows (keep at least one dataset, e.g. eval.max_windows=1)"
        )
    _check_eval_settings(spec.eval)
    config = check_model(spec.model)
    method.check(skeleton(config), target)
    context = getattr(config, "max_position_embeddings", None)
    calib = None
    if method.needs_calibration:
        base = dataclasses.replace(spec.calib, seqlen=cap_seqlen(spec.calib.seqlen, context))
        method = as_reading(method, base.n_samples)
        calib = windows_read(method, base, context)
    for ds in spec.eval.datasets:
        ds.check()
    if spec.eval.downstream is not None:
        spec.eval.downstream.check()
    if spec.eval.inference is not None:
        spec.eval.inference.check(context, cap_seqlen(spec.eval.seqlen, context))
    eval_seqlen = cap_seqlen(spec.eval.seqlen, context)
    _note_caps(spec, calib, eval_seqlen, context)
    tokenizer = load_tokenizer(spec.model)
    calibration = torch.empty(0, 0, dtype=torch.long)
    if calib is not None:
        calibration = calibration_samples(tokenizer, calib)
        if len(calibration) < calib.n_samples:
            method = with_fewer_windows(method, calib, len(calibration))
    for ds in spec.eval.datasets:  # tokenized once: token_stream memoises what evaluate reads
        ids, _ = token_stream(tokenizer, ds, eval_seqlen)
        try:
            windows(ids, eval_seqlen, spec.eval.max_windows, spec.eval.window_sample)
        except ValueError as exc:
            raise ValueError(f"dataset {ds.name!r}: {exc}") from None
    tasks = None
    if spec.eval.downstream is not None:
        from twossp.evaluation.downstream import prepare_tasks

        tasks = prepare_tasks(spec.eval.downstream)
    return Prepared(method, target, tokenizer, calib, calibration, eval_seqlen, tasks)


def _check_eval_settings(evaluation: EvalSpec) -> None:
    if evaluation.seqlen < 2:
        raise ValueError(f"eval.seqlen must be >= 2 (one prediction), got {evaluation.seqlen}")
    if evaluation.max_windows is not None and evaluation.max_windows < 1:
        raise ValueError(f"eval.max_windows must be >= 1 or null, got {evaluation.max_windows}")
    if evaluation.window_sample not in WINDOW_SAMPLES:
        raise ValueError(
            f"eval.window_sample must be one of {', '.join(WINDOW_SAMPLES)}, "
            f"got {evaluation.window_sample!r}"
        )
    parse_batch_size(evaluation.batch_size)


def _note_caps(spec: RunSpec, calib, eval_seqlen: int, context: int | None) -> None:
    capped = []
    if eval_seqlen < spec.eval.seqlen:
        capped.append(f"eval.seqlen {spec.eval.seqlen} -> {eval_seqlen}")
    if calib is not None and calib.seqlen < spec.calib.seqlen and calib.packing == "stream":
        capped.append(f"calib.seqlen {spec.calib.seqlen} -> {calib.seqlen}")
    if capped:
        log.info("the model's context is %s tokens: %s", context, ", ".join(capped))


def skeleton(config) -> torch.nn.Module:
    """The model of ``config`` with weights on the meta device: shapes, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def finished(path: Path) -> bool:
    """Whether ``path`` holds a readable run file (a corrupt one is reported and redone)."""
    if not path.exists():
        return False
    try:
        read_run(path)
    except CorruptRunError as exc:
        log.warning("run file %s is unreadable (%s); computing it again", path, exc)
        return False
    return True


def folders_written(spec: RunSpec, tracker=None) -> list[tuple[str, Path, str]]:
    """Every folder a run writes: ``(what, folder, the setting that moves it)``."""
    results = Path(spec.results_dir)
    where = "paths.results_dir"
    folders = [
        ("run files", run_path(results, spec.config_hash).parent, where),
        ("plans", plan_path(results, spec.config_hash).parent, where),
        ("per-unit outcomes", items_path(results, spec.config_hash).parent, where),
        ("run locks", locks.lock_path(results, spec.config_hash).parent, where),
        ("experiment members", results / "experiments", where),
    ]
    if tracker is not None:
        folders.append(("tracker marks", _mirror_marker(spec).parent, where))
        tracker_dir = getattr(getattr(tracker, "settings", None), "dir", None)
        if tracker_dir:
            folders.append(("W&B runs", Path(tracker_dir), "logger.dir"))
    if spec.save_model_dir is not None:
        folders.append(("pruned models", Path(spec.save_model_dir).parent, "paths.models_dir"))
    return folders


def run(spec: RunSpec, tracker=None, on_busy: str = "wait") -> RunOutcome:
    """Run one configuration end to end (or skip it if its result file exists).

    Every folder it writes is checked first. The run then holds its configuration's lock
    (:mod:`twossp.locks`): an identical run in progress elsewhere is waited for
    (``on_busy="wait"``; when it finishes, this one skips as finished) or returned as
    ``"busy"`` at once (``on_busy="skip"``).
    """
    locks.check_on_busy(on_busy)
    path = run_path(spec.results_dir, spec.config_hash)
    check_writable(folders_written(spec, tracker))
    add_members(spec.results_dir, spec.experiment, [spec.config_hash])
    if tracker is not None:
        tracker.check()
    if not spec.force and finished(path):
        return _skip_finished(spec, tracker, path)
    lock, waited = locks.take(spec.results_dir, spec.config_hash, on_busy)
    if isinstance(lock, locks.Holder):
        return RunOutcome("busy", path, holder=lock)
    try:
        if waited and not spec.force and finished(path):
            return _skip_finished(spec, tracker, path)
        return _compute(spec, tracker, path)
    finally:
        lock.release()


def _skip_finished(spec: RunSpec, tracker, path: Path) -> RunOutcome:
    log.info("skipping finished run %s (%s)", spec.config_hash, path)
    if tracker is not None and not mirrored(spec):
        mirror(spec, tracker, read_run(path))  # not mirrored yet (or it failed): once now
    if spec.save_model_dir is not None and not Path(spec.save_model_dir).exists():
        save_finished(spec)
    return RunOutcome("skipped", path)


def _compute(spec: RunSpec, tracker, path: Path) -> RunOutcome:
    """Prepare, load, prune, evaluate and write (holding the configuration's lock)."""
    started_at = datetime.now(timezone.utc)
    stages = Stages(logger=log)
    stages.start("prepare", "settings, model config, data and the budget, before the weights")
    use_threads(spec.threads)  # before tokenizing and pruning
    ready = prepare(spec)
    torch.manual_seed(spec.seed)
    stages.start("load", f"the weights of {spec.model_key}")
    model, _ = load_model(spec.model, with_tokenizer=False)
    before = sp.count(model)
    method = ready.method
    ctx = PruneContext(ready.target, ready.calibration, spec.seed, spec.progress)
    found = _plan_to_replay(spec, ready, before)
    if found is None:
        stages.start("prune", _prune_detail(method, ready.target))
        start = time.perf_counter()
        with track_peak_memory() as prune_peak:
            plan = method.prune(model, ctx)
        prune_seconds = time.perf_counter() - start
    else:
        stages.start("prune", f"replaying the plan of finished run {found.config_hash}")
        with track_peak_memory() as prune_peak:
            apply_plan(model, found.plan)
        plan, prune_seconds = found.plan, found.prune_seconds
    after = sp.count(model)
    achieved = sp.measure(before, after)
    if method.uses_sparsity and after.blocks >= before.blocks:  # method.check should catch it
        raise sp.UnreachableSparsityError(
            f"{method.name} at sparsity {ready.target} left the decoder blocks with "
            f"{after.blocks} parameters, no fewer than {before.blocks}; nothing recorded: "
            "use a higher target"
        )
    plan.save(plan_path(spec.results_dir, spec.config_hash))
    log.debug(  # the command line's summary prints these (each metric once)
        "%s: target %.4f achieved %.4f (%d -> %d params) in %.2fs",
        method.name,
        ready.target,
        achieved,
        before.total,
        after.total,
        prune_seconds,
    )
    stages.start("evaluate", _eval_detail(spec, ready))
    with track_peak_memory() as eval_peak:
        metrics, items = evaluate(model, ready, spec)
    metrics.extend(peak_memory_metrics({"prune": prune_peak, "eval": eval_peak}))
    # After the eval phase's peak is read: the prefill's own peak resets CUDA's counter.
    metrics.extend(inference_metrics(model, ready, spec))
    record = _record(spec, method, ready, before, after, achieved, prune_seconds)
    record.plan_from = None if found is None else found.config_hash
    record.started_at = started_at
    frame = to_frame(record, metrics)
    stages.start("write", str(path))
    write_items(items, items_path(spec.results_dir, spec.config_hash), spec.config_hash)
    write_run(frame, path)  # last: the run file marks the run finished
    if spec.save_model_dir is not None:
        save_pruned(model, spec.save_model_dir, ready.tokenizer)
    if tracker is not None:
        mirror(spec, tracker, frame)
    stages.end()
    return RunOutcome("done", path, frame, plan)


def _plan_to_replay(spec: RunSpec, ready: Prepared, before) -> FoundPlan | None:
    """A finished run's plan for the model this run would prune (:mod:`twossp.reuse`), unless
    ``force`` is set or the method's plans do not rebuild its model."""
    method = ready.method
    if spec.force or not (method.needs_calibration and method.plan_replays):
        return None
    key = pruning_key(run_columns(_record(spec, method, ready, before, before, 0.0, 0.0)))
    return find_plan(spec.results_dir, key, exclude=spec.config_hash)


def _prune_detail(method: PruningMethod, target: float) -> str:
    return f"{method.name} to sparsity {target:g}" if method.uses_sparsity else method.name


def _eval_detail(spec: RunSpec, ready: Prepared) -> str:
    parts = []
    if spec.eval.datasets:
        n = spec.eval.max_windows
        cap = "every window" if n is None else f"at most {n} window{'s' if n > 1 else ''}"
        names = ", ".join(ds.name for ds in spec.eval.datasets)
        parts.append(f"perplexity on {names} ({cap} of {ready.eval_seqlen} tokens)")
    if spec.eval.downstream is not None:
        parts.append(f"tasks {', '.join(spec.eval.downstream.tasks)}")
    if spec.eval.inference is not None:
        parts.append("inference costs")
    return "; ".join(parts)


def _mirror_marker(spec: RunSpec) -> Path:
    return Path(spec.results_dir) / "mirrored" / spec.config_hash


def mirrored(spec: RunSpec) -> bool:
    return _mirror_marker(spec).exists()


def mirror(spec: RunSpec, tracker, frame) -> None:
    """Send the run's rows to the tracker; a failure is one warning (the parquet file is the
    record) and the next run of the same configuration retries it."""
    try:
        tracker.log_run(frame)
    except Exception as exc:  # any tracker failure: network, auth, quota
        log.warning(
            "mirroring run %s to the tracker failed (%s: %s); its result file is written, "
            "and running the same command again retries the mirror",
            spec.config_hash,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return
    marker = _mirror_marker(spec)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def save_finished(spec: RunSpec) -> None:
    """``save_model=true`` on a configuration that finished without saving: replay its plan
    on the base model and save that (SliceGPT's plan holds no rotations: say how instead)."""
    from twossp.export import NotReplayableError, check_replayable
    from twossp.plan import PrunePlan

    source = plan_path(spec.results_dir, spec.config_hash)
    try:
        plan = PrunePlan.load(source)
        check_replayable(plan, source, spec.method)
    except (OSError, NotReplayableError) as exc:
        log.warning(
            "save_model=true, but this configuration finished earlier without saving its model "
            "and cannot be rebuilt from its plan (%s); rerun it with force=true save_model=true",
            str(exc).splitlines()[0],
        )
        return
    model, tokenizer = load_model(spec.model)
    apply_plan(model, plan)
    save_pruned(model, spec.save_model_dir, tokenizer)
    log.info("saved the finished run's model (its plan replayed) to %s", spec.save_model_dir)


def _record(spec, method, ready, before, after, achieved, prune_seconds) -> RunRecord:
    identity = spec.model.source().identity()
    calib = None
    if ready.calib is not None:
        calib = {
            "dataset": ready.calib.dataset.name,
            "source": ready.calib.dataset.recorded_source(),
            "n_samples": ready.calib.n_samples,
            "seqlen": ready.calib.seqlen,
            "seed": ready.calib.seed,
            "packing": ready.calib.packing,
            "windows": len(ready.calibration),
        }
    return RunRecord(
        run_id=uuid.uuid4().hex[:12],
        config_hash=spec.config_hash,
        experiment=spec.experiment,
        protocol=spec.protocol,
        model=spec.model_key,
        model_path=spec.model.source().path,
        model_revision=identity.get("commit"),
        model_fingerprint=identity.get("fingerprint"),
        dtype=str(spec.dtype).removeprefix("torch."),
        device=spec.device.type,
        method=method.name,
        method_params=dataclasses.asdict(method),
        target_sparsity=ready.target,
        achieved_sparsity=achieved,
        params_before=before.total,
        params_after=after.total,
        block_params_before=before.blocks,
        block_params_after=after.blocks,
        prune_seconds=prune_seconds,
        seed=spec.seed,
        calib=calib,
        threads=torch.get_num_threads(),
    )


def peak_memory_metrics(peaks: dict[str, PeakMemory]) -> list[Metric]:
    """``peak_memory_gib`` rows (one per phase) for phases measured on CUDA."""
    return [
        Metric("peak_memory_gib", None, p.peak_gib, {"per_device_bytes": p.per_device}, phase)
        for phase, p in peaks.items()
        if p.peak_bytes is not None
    ]


def inference_metrics(model, ready: Prepared, spec: RunSpec) -> list[Metric]:
    """Inference rows (eval.inference=true) on the first window of the first corpus."""
    if spec.eval.inference is None:
        return []
    from twossp.evaluation.inference import first_window, measure

    streams = {
        ds.name: token_stream(ready.tokenizer, ds, ready.eval_seqlen)[0]
        for ds in spec.eval.datasets
    }
    window, source = first_window(streams, ready.eval_seqlen, model.config.vocab_size)
    return measure(model, window, spec.eval.inference, source)


def evaluate(model, ready: Prepared, spec: RunSpec) -> tuple[list[Metric], list[dict]]:
    """The run's metric rows and its per-unit outcomes (windows, documents: twossp.items)."""
    metrics: list[Metric] = []
    items: list[dict] = []
    seqlen = ready.eval_seqlen
    batch_size = resolve_batch_size(spec.eval.batch_size, model, seqlen)
    for ds in spec.eval.datasets:
        ids, variant = token_stream(ready.tokenizer, ds, seqlen)
        res = perplexity(
            model,
            ids,
            seqlen,
            batch_size,
            spec.eval.max_windows,
            desc=f"ppl {ds.name}",
            progress=spec.progress,
            sample=spec.eval.window_sample,
        )
        variant = {
            **variant,
            "seqlen": seqlen,
            "windows": res.windows,
            "windows_available": ids.numel() // seqlen,
            "max_windows": spec.eval.max_windows,
            "tokens": res.tokens,
        }
        if spec.eval.max_windows is not None:
            variant["window_sample"] = spec.eval.window_sample
        log.debug("ppl %s = %.3f (%d windows of %d)", ds.name, res.ppl, res.windows, seqlen)
        metrics.append(  # window NLLs at full precision, so intervals can be recomputed
            Metric(
                "ppl",
                ds.name,
                res.ppl,
                {**variant, "window_nll": res.window_nll},
                ci_low=res.ci_low,
                ci_high=res.ci_high,
            )
        )
        items.extend(window_items(ds.name, res))
    if spec.eval.downstream is not None:
        from twossp.evaluation.downstream import evaluate_tasks

        record = lm_eval_path(spec.results_dir, spec.config_hash)
        result = evaluate_tasks(model, ready.tokenizer, spec.eval.downstream, record, ready.tasks)
        metrics.extend(result.metrics)
        items.extend(result.documents)
    return metrics, items
