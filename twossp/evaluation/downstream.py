"""Zero-shot downstream accuracy with lm-eval's stock tasks, on the in-memory pruned model.

The 2SSP paper (Sandri et al., 2025, Table 2) reports ARC-Easy, ARC-Challenge, HellaSwag,
PIQA, WinoGrande and MMLU accuracy through lm-evaluation-harness. We call
``lm_eval.simple_evaluate`` on an ``HFLM`` that wraps the model object, so the pruned model is
never written to disk.

Data source. By default the stock task YAMLs read their Hugging Face hub datasets. With
``local_dir`` set, the *same* stock tasks read local files in the hub schema instead, through
lm-eval's public ``TaskManager(include_path=...)``: for every leaf task we write, in a
per-process temporary folder, a small YAML that ``include:``\\ s the stock YAML (prompts,
``process_docs``, metrics, version) and overrides only ``dataset_path`` (-> ``json``),
``dataset_kwargs.data_files``, ``dataset_name`` (-> null) and any split the local folder does
not hold (-> null). Task names stay the stock names, so a group (MMLU) built from the stock
group YAMLs picks up the overriding leaves. The layout is one folder per task holding
``<split>.jsonl``; a group has one sub-folder per member (``mmlu/anatomy/test.jsonl`` feeds
``mmlu_anatomy``). :func:`~twossp.evaluation.local_tasks.load_tasks` checks that every
evaluated leaf really reads the local files through those YAMLs and raises otherwise, so a
change in lm-eval fails loudly instead of silently reading the hub. That plumbing lives in
:mod:`twossp.evaluation.local_tasks`; this module runs the tasks and records their rows.

Each result becomes ``Metric("acc" | "acc_norm", task, value, variant)`` with the task
version, shots, limit, sample count, source and standard error (``variant["stderr"]``); for a
group (MMLU) the group's size-weighted ``acc``. Where lm-eval gives a standard error the row
also carries the 95% normal interval ``value ± 1.96 · stderr``, clipped to [0, 1], as
``ci_low`` / ``ci_high``. Standard errors are always computed when ``limit``
subsamples the tasks (see :attr:`DownstreamSpec.stderr_iters`). :func:`run_tasks` also
returns lm-eval's whole output, JSON-ready, for :func:`save_lm_eval_json`, and every
document's outcome (:attr:`DownstreamResult.documents`, rows of :mod:`twossp.items`): which
choice was right, each choice's log-likelihood, the document's cluster.

Subsampling. With ``limit`` set, each leaf task's documents are a seeded random sample
(``sample="random"``, the default: ``limit`` document ids drawn without replacement from the
whole split with ``random.Random(f"{seed}:{leaf}")``, in id order), handed to lm-eval as its
``samples``, so every method is scored on the same documents and they are spread over the
split instead of its first ones (WinoGrande's first 100 hold 23 twin pairs, HellaSwag's 14
contexts of one activity). ``sample="first"`` takes the first ``limit`` documents (older
records). Without ``limit`` every document is scored, the paper's protocol.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

from twossp import paper
from twossp.evaluation.clusters import clusters
from twossp.evaluation.local_tasks import load_tasks, local_data_files, task_manager
from twossp.extras import require
from twossp.io import atomic_write_text
from twossp.progress import track
from twossp.results import Metric

log = logging.getLogger(__name__)

PAPER_TASKS = paper.TASKS
METRICS = ("acc", "acc_norm")
SAMPLES = ("random", "first")  # how `limit` picks documents
# Standard errors when `limit` subsamples and bootstrap_iters is 0. acc / acc_norm aggregate
# by mean, whose stderr lm-eval computes in closed form (any positive count switches it on);
# the count only matters for metrics lm-eval bootstraps (median, f1, bleu...), where its own
# default of 100000 would cost far more than the tasks here.
DEFAULT_BOOTSTRAP_ITERS = 1000
Z95 = NormalDist().inv_cdf(0.975)  # 1.95996...: two-sided 95% normal quantile


@dataclass
class DownstreamSpec:
    """Which lm-eval tasks to run and how.

    Attributes:
        tasks: lm-eval task or group names (default: the six of the paper's Table 2).
        num_fewshot: shots per prompt; 0 is the paper's zero-shot setting.
        limit: at most this many documents per (sub)task (an int, or a fraction < 1);
            ``None`` evaluates everything. MMLU's limit applies to each of its 57 subjects.
            A dict ``{task: documents}`` naming every task sets one limit per task, so
            small tasks can get more documents than MMLU's subjects.
        sample: which documents a ``limit`` keeps: ``"random"`` (a sample seeded by
            ``seed`` and the leaf task's name, the same for every model) or ``"first"``.
        batch_size: lm-eval batch size (an int or ``"auto"``).
        local_dir: folder of hub-schema jsonl files, one sub-folder per task; ``None`` reads
            the hub.
        bootstrap_iters: bootstrap iterations for standard errors. 0 skips them on a full
            evaluation; a subsampled one (``limit`` set) always reports them and uses
            ``DEFAULT_BOOTSTRAP_ITERS`` for 0.
        seed: lm-eval's random / numpy / torch / few-shot seed.
    """

    tasks: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    num_fewshot: int = 0
    limit: int | float | dict[str, int] | None = None
    batch_size: int | str = 16
    local_dir: str | None = None
    bootstrap_iters: int = 0
    seed: int = 1234
    sample: str = "random"

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)
        if isinstance(self.limit, dict):
            self.limit = dict(self.limit)
        if self.local_dir is not None:
            self.local_dir = str(self.local_dir)

    @property
    def source(self) -> str:
        """Where the task data came from, as a record keeps it (a local folder by its name:
        no path of this machine)."""
        return f"local:{Path(self.local_dir).name}" if self.local_dir else "hub"

    def limit_of(self, task: str) -> int | float | None:
        """The document limit of ``task`` (per member for a group)."""
        return self.limit[task] if isinstance(self.limit, dict) else self.limit

    @property
    def stderr_iters(self) -> int:
        """The ``bootstrap_iters`` passed to lm-eval (positive whenever ``limit`` is set)."""
        if self.bootstrap_iters > 0 or self.limit is None:
            return self.bootstrap_iters
        return DEFAULT_BOOTSTRAP_ITERS

    def check(self) -> None:
        """Raise on bad settings or missing local task folders (cheap; before any pruning)."""
        if not self.tasks:
            raise ValueError(
                "downstream.tasks is empty; name at least one lm-eval task, e.g. "
                f"{list(PAPER_TASKS)}"
            )
        if self.num_fewshot < 0:
            raise ValueError(f"downstream.num_fewshot must be >= 0, got {self.num_fewshot}")
        if isinstance(self.limit, dict):
            self._check_limits()
        elif self.limit is not None and self.limit <= 0:
            raise ValueError(f"downstream.limit must be positive or null, got {self.limit}")
        if self.sample not in SAMPLES:
            raise ValueError(
                f"downstream.sample must be one of {', '.join(SAMPLES)}, got {self.sample!r}"
            )
        if self.bootstrap_iters < 0:
            raise ValueError(f"downstream.bootstrap_iters must be >= 0, got {self.bootstrap_iters}")
        if self.local_dir is not None:
            local_data_files(self.local_dir, self.tasks)

    def _check_limits(self) -> None:
        if set(self.limit) != set(self.tasks):
            raise ValueError(
                f"downstream.limit as a dict must name every task and no other: tasks "
                f"{self.tasks}, limit names {sorted(self.limit)}"
            )
        bad = {t: n for t, n in self.limit.items() if not isinstance(n, int) or n <= 0}
        if bad:
            raise ValueError(f"downstream.limit per task must be positive ints, got {bad}")


@dataclass
class DownstreamResult:
    """What one lm-eval run gives: result rows and lm-eval's whole output (JSON-ready)."""

    metrics: list[Metric]
    lm_eval: dict
    documents: list[dict] = field(default_factory=list)


@dataclass
class PreparedTasks:
    """lm-eval tasks built with their data loaded (see :func:`prepare_tasks`)."""

    manager: object
    built: list
    leaves: dict = field(default_factory=dict)  # {task: {leaf name: lm-eval Task}}


def prepare_tasks(spec: DownstreamSpec) -> PreparedTasks:
    """Build every task of ``spec`` with its data (local files or the hub), no model needed,
    so a missing or unreachable dataset fails before any pruning."""
    require("lm_eval", "eval", "downstream evaluation (eval=downstream)")
    spec.check()
    files = local_data_files(spec.local_dir, spec.tasks) if spec.local_dir else None
    manager = task_manager(files)
    leaves: dict = {}
    built = load_tasks(spec.tasks, files, manager, leaves)
    return PreparedTasks(manager, built, leaves)


def _kept(limit: int | float, available: int) -> int:
    """How many of ``available`` documents a limit keeps (a fraction as lm-eval rounds it)."""
    return min(available, math.ceil(available * limit) if limit < 1 else int(limit))


def document_ids(spec: DownstreamSpec, leaf: str, limit, available: int) -> list[int]:
    """The ids of the documents of ``leaf`` that ``limit`` keeps (see :attr:`sample`)."""
    k = _kept(limit, available)
    if spec.sample == "first":
        return list(range(k))
    return sorted(random.Random(f"{spec.seed}:{leaf}").sample(range(available), k))


def _samples(spec: DownstreamSpec, prepared: PreparedTasks) -> dict[str, list[int]] | None:
    """lm-eval's ``samples`` (document ids per leaf task) for a ``limit``; None for all."""
    if spec.limit is None:
        return None
    if set(prepared.leaves) != set(spec.tasks):
        raise ValueError(
            f"a limit needs the leaves of every task from prepare_tasks; have "
            f"{sorted(prepared.leaves)}, tasks {spec.tasks}"
        )
    return {
        leaf: document_ids(spec, leaf, spec.limit_of(name), len(task.eval_docs))
        for name, leaves in prepared.leaves.items()
        for leaf, task in leaves.items()
    }


def run_tasks(
    model, tokenizer, spec: DownstreamSpec, prepared: PreparedTasks | None = None
) -> DownstreamResult:
    """Run ``spec.tasks`` with lm-eval on ``model``: result rows and lm-eval's full output."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    prepared = prepared or prepare_tasks(spec)
    manager, built = prepared.manager, prepared.built
    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size)
    try:
        with _count_requests(lm):
            out = lm_eval.simple_evaluate(
                lm,
                tasks=built,
                num_fewshot=spec.num_fewshot,
                samples=_samples(spec, prepared),
                bootstrap_iters=spec.stderr_iters,
                log_samples=True,  # each document's outcome: documents()
                task_manager=manager,  # passes the built tasks through
                random_seed=spec.seed,
                numpy_random_seed=spec.seed,
                torch_random_seed=spec.seed,
                fewshot_random_seed=spec.seed,
            )
    finally:
        model.train(was_training)
    return DownstreamResult(
        to_metrics(out, spec), lm_eval_record(out), documents(out, spec, prepared)
    )


def _count_requests(lm):
    """Count the log-likelihood requests lm-eval's model calls score, so a log shows where
    a long downstream evaluation is (every 30 s or so; lm-eval's own bar needs a terminal)."""
    where = track(desc="lm-eval", unit="requests", announce=False)
    call = lm._model_call

    def counted(inps, *args, **kwargs):
        out = call(inps, *args, **kwargs)
        where.update(len(inps))
        return out

    lm._model_call = counted
    return where


def documents(out: dict, spec: DownstreamSpec, prepared: PreparedTasks) -> list[dict]:
    """Each scored document's outcome from lm-eval's logged samples, as item rows."""
    rows = []
    for name in spec.tasks:
        for leaf, task in prepared.leaves.get(name, {}).items():
            logged = (out.get("samples") or {}).get(leaf, [])
            if not logged:
                continue
            cluster = clusters(leaf, task.eval_docs)
            for sample in logged:
                doc_id = int(sample["doc_id"])
                rows.append(
                    {
                        "kind": "document",
                        "dataset": name,
                        "subtask": leaf,
                        "unit": doc_id,
                        "acc": _finite(sample.get("acc")),
                        "acc_norm": _finite(sample.get("acc_norm")),
                        "target": _target(sample.get("target")),
                        "loglik": [float(r[0]) for r in sample.get("filtered_resps", [])],
                        "cluster": cluster[doc_id],
                    }
                )
    return rows


def _target(value) -> int | None:
    return int(value) if isinstance(value, int) or str(value).isdigit() else None


def evaluate_tasks(
    model,
    tokenizer,
    spec: DownstreamSpec,
    lm_eval_json: str | Path | None = None,
    prepared: PreparedTasks | None = None,
) -> DownstreamResult:
    """:func:`run_tasks`; lm-eval's full output is saved to ``lm_eval_json`` if given."""
    result = run_tasks(model, tokenizer, spec, prepared)
    if lm_eval_json is not None:
        save_lm_eval_json(result.lm_eval, lm_eval_json)
    return result


def _leaves(out: dict, name: str) -> list[str]:
    subtasks = out.get("group_subtasks", {})
    if name not in subtasks or not subtasks[name]:
        return [name]
    return [leaf for child in subtasks[name] for leaf in _leaves(out, child)]


def _finite(value) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def to_metrics(out: dict, spec: DownstreamSpec) -> list[Metric]:
    """Turn ``simple_evaluate``'s output into result rows (one per metric the task reports).

    ``variant["stderr"]`` is lm-eval's standard error of the value, or ``None`` where it
    reported none (stderr off, or a single document); ``ci_low`` / ``ci_high`` are
    :func:`accuracy_interval` of the two.
    """
    rows = []
    for task in spec.tasks:
        res = out["results"].get(task)
        if res is None:
            raise KeyError(f"lm-eval returned no result for {task!r}; got {sorted(out['results'])}")
        leaves = _leaves(out, task)
        samples = sum(int(out.get("n-samples", {}).get(t, {}).get("effective", 0)) for t in leaves)
        variant = {
            "task_version": str(out.get("versions", {}).get(task)),
            "num_fewshot": int(out.get("n-shot", {}).get(task, spec.num_fewshot)),
            "limit": spec.limit_of(task),
            "samples": samples,
            "subtasks": len(leaves),
            "source": spec.source,
        }
        for metric in METRICS:
            value = res.get(f"{metric},none")
            if isinstance(value, (int, float)):
                stderr = _finite(res.get(f"{metric}_stderr,none"))
                low, high = accuracy_interval(float(value), stderr) or (None, None)
                row_variant = {**variant, "stderr": stderr}
                rows.append(
                    Metric(metric, task, float(value), row_variant, ci_low=low, ci_high=high)
                )
                log.debug("%s %s = %.4f +- %s (%d samples)", metric, task, value, stderr, samples)
    return rows


def accuracy_interval(value: float, stderr: float | None) -> tuple[float, float] | None:
    """The 95% normal interval ``value ± Z95 · stderr`` of an accuracy, clipped to [0, 1].

    lm-eval's ``acc_stderr`` is the sample standard error of the per-document 0/1 scores
    (for a group, pooled over its members), so this is the usual Wald interval. ``None``
    without a standard error.
    """
    if stderr is None:
        return None
    return max(0.0, value - Z95 * stderr), min(1.0, value + Z95 * stderr)


_DROP = object()


def _jsonable(value):
    """``value`` with only JSON types (non-finite floats -> None); ``_DROP`` for objects."""
    if isinstance(value, dict):
        items = ((str(k), _jsonable(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not _DROP}
    if isinstance(value, (list, tuple, set, frozenset)):
        seq = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [v for v in map(_jsonable, seq) if v is not _DROP]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _jsonable(item())
    return _DROP


def lm_eval_record(out: dict) -> dict:
    """``simple_evaluate``'s output with only JSON values: results, groups, configs, versions,
    n-shot, n-samples, higher_is_better, standard errors (``<metric>_stderr,<filter>``) and run
    info; per-document samples and non-JSON objects are dropped."""
    return _jsonable({k: v for k, v in out.items() if k != "samples"})


def save_lm_eval_json(out: dict, path: str | Path) -> Path:
    """Write lm-eval's output (raw or from :func:`lm_eval_record`) to ``path``, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(lm_eval_record(out), indent=2, allow_nan=False) + "\n")
    return path


def spec_from_dict(fields_: dict | None) -> DownstreamSpec | None:
    """Build a :class:`DownstreamSpec` from a plain dict (``None`` stays ``None``)."""
    if fields_ is None:
        return None
    known = set(DownstreamSpec.__dataclass_fields__)
    unknown = sorted(set(fields_) - known)
    if unknown:
        raise ValueError(f"downstream has no setting {unknown[0]!r}; known: {sorted(known)}")
    return DownstreamSpec(**fields_)
