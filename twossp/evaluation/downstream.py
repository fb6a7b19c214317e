"""Zero-shot downstream accuracy with lm-eval's stock tasks, on the in-memory pruned model.

The 2SSP paper (Sandri et al., 2025, Table 2) reports ARC-Easy, ARC-Challenge, HellaSwag,
PIQA, WinoGrande and MMLU accuracy through lm-evaluation-harness. We call
``lm_eval.simple_evaluate`` on an ``HFLM`` that wraps the model object, so the pruned model is
never written to disk.

Data source. By default the stock task YAMLs read their Hugging Face hub datasets. With
``local_dir`` set, the *same* stock YAMLs (prompts, ``process_docs``, metrics, versions) read
local files in the hub schema instead: only ``dataset_path`` (-> ``json``),
``dataset_kwargs.data_files`` and ``dataset_name`` (dropped) change, plus any split the local
folder does not hold is unset (so lm-eval does not look for it). The layout is one folder per
task holding ``<split>.jsonl``; a group such as MMLU has one sub-folder per member
(``mmlu/anatomy/test.jsonl`` feeds ``mmlu_anatomy``). The override hooks lm-eval 0.4.13's
``TaskFactory._load_full_config``, a private method: :func:`evaluate_tasks` checks afterwards
that every evaluated task really read local files and raises if not, so a drift in lm-eval
fails loudly instead of silently reading the hub.

Each result becomes ``Metric("acc" | "acc_norm", task, value, variant)`` with the task
version, shots, limit, sample count and source in ``variant``; for a group (MMLU) the group's
size-weighted ``acc``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

from twossp.results import Metric

log = logging.getLogger(__name__)

PAPER_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "mmlu")
METRICS = ("acc", "acc_norm")
_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
_TASK_MANAGERS: dict = {}  # lm-eval's task index, built once per process (takes ~10 s)


@dataclass
class DownstreamSpec:
    """Which lm-eval tasks to run and how.

    Attributes:
        tasks: lm-eval task or group names (default: the six of the paper's Table 2).
        num_fewshot: shots per prompt; 0 is the paper's zero-shot setting.
        limit: at most this many documents per (sub)task (an int, or a fraction < 1);
            ``None`` evaluates everything. MMLU's limit applies to each of its 57 subjects.
        batch_size: lm-eval batch size (an int or ``"auto"``).
        local_dir: folder of hub-schema jsonl files, one sub-folder per task; ``None`` reads
            the hub.
        bootstrap_iters: bootstrap iterations for standard errors (0 skips them).
        seed: lm-eval's random / numpy / torch / few-shot seed.
    """

    tasks: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    num_fewshot: int = 0
    limit: int | float | None = None
    batch_size: int | str = 16
    local_dir: str | None = None
    bootstrap_iters: int = 0
    seed: int = 1234

    def __post_init__(self) -> None:
        self.tasks = list(self.tasks)
        if self.local_dir is not None:
            self.local_dir = str(self.local_dir)

    @property
    def source(self) -> str:
        return f"local:{self.local_dir}" if self.local_dir else "hub"

    def check(self) -> None:
        """Raise on bad settings or missing local task folders (cheap; before any pruning)."""
        if not self.tasks:
            raise ValueError(
                "downstream.tasks is empty; name at least one lm-eval task, e.g. "
                f"{list(PAPER_TASKS)}"
            )
        if self.num_fewshot < 0:
            raise ValueError(f"downstream.num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"downstream.limit must be positive or null, got {self.limit}")
        if self.local_dir is not None:
            local_data_files(self.local_dir, self.tasks)


def _split_files(folder: Path) -> dict[str, str]:
    return {p.stem: str(p) for p in sorted(folder.glob("*.jsonl"))}


def local_data_files(local_dir: str | Path, tasks: list[str]) -> dict[str, dict[str, str]]:
    """Map each leaf task name to its ``{split: file}`` under ``local_dir``.

    ``<local_dir>/<task>/<split>.jsonl`` serves task ``<task>``; for a group,
    ``<local_dir>/<group>/<member>/<split>.jsonl`` serves ``<group>_<member>``.
    """
    root = Path(local_dir).expanduser()
    out: dict[str, dict[str, str]] = {}
    for task in tasks:
        folder = root / task
        files = _split_files(folder) if folder.is_dir() else {}
        if files:
            out[task] = files
            continue
        subs = sorted(sub for sub in (folder.iterdir() if folder.is_dir() else []) if sub.is_dir())
        members = {f"{task}_{sub.name}": split for sub in subs if (split := _split_files(sub))}
        if not members:
            have = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
            raise FileNotFoundError(
                f"no local data for task {task!r}: expected {folder}/<split>.jsonl or "
                f"{folder}/<member>/<split>.jsonl; {root} holds {have}. "
                "Set downstream.local_dir: null to read the hub."
            )
        out.update(members)
    return out


def task_manager(data_files: dict[str, dict[str, str]] | None = None):
    """An lm-eval ``TaskManager`` whose stock tasks read ``data_files`` where given.

    The index of lm-eval's task YAMLs (slow to build) is built once per process and shared;
    each data mapping gets its own light copy with a factory that rewrites the data source.
    """
    from lm_eval.tasks import TaskManager

    if None not in _TASK_MANAGERS:
        _TASK_MANAGERS[None] = TaskManager()
    base = _TASK_MANAGERS[None]
    if not data_files:
        return base
    manager = copy.copy(base)
    manager._factory = _local_factory(data_files, base._factory._meta)
    return manager


def _local_factory(data_files: dict[str, dict[str, str]], meta: dict | None):
    from lm_eval.tasks._factory import TaskFactory

    class LocalTaskFactory(TaskFactory):
        """Stock task configs with their data source pointed at local files."""

        def _load_full_config(self, entry, overrides=None):
            cfg = super()._load_full_config(entry, overrides)
            name = cfg.get("task")
            if isinstance(name, str) and name in data_files:
                point_at_local(cfg, data_files[name])
            return cfg

    return LocalTaskFactory(meta=meta)


def point_at_local(cfg: dict, files: dict[str, str]) -> dict:
    """Rewrite one stock task config (in place) to read ``files`` (``{split: path}``)."""
    cfg["dataset_path"] = "json"
    cfg.pop("dataset_name", None)
    cfg["dataset_kwargs"] = {**(cfg.get("dataset_kwargs") or {}), "data_files": dict(files)}
    for key in _SPLIT_KEYS:
        split = cfg.get(key)
        if split is not None and split not in files:
            log.debug("%s: no local %s split %r; unset", cfg.get("task"), key, split)
            cfg[key] = None
    return cfg


def evaluate_tasks(model, tokenizer, spec: DownstreamSpec) -> list[Metric]:
    """Run ``spec.tasks`` with lm-eval on ``model`` and return one row per (metric, task)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    spec.check()
    files = local_data_files(spec.local_dir, spec.tasks) if spec.local_dir else None
    manager = task_manager(files)
    built = load_tasks(spec.tasks, files, manager)  # data loaded (and checked) before scoring
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size)
        out = lm_eval.simple_evaluate(
            lm,
            tasks=built,
            num_fewshot=spec.num_fewshot,
            limit=spec.limit,
            bootstrap_iters=spec.bootstrap_iters,
            log_samples=False,
            task_manager=manager,  # passes the built tasks through
            random_seed=spec.seed,
            numpy_random_seed=spec.seed,
            torch_random_seed=spec.seed,
            fewshot_random_seed=spec.seed,
        )
    finally:
        model.train(was_training)
    return to_metrics(out, spec)


def load_tasks(
    tasks: list[str], data_files: dict[str, dict[str, str]] | None = None, manager=None
) -> list:
    """Build lm-eval Task / Group objects for ``tasks`` (reading ``data_files`` where given).

    With ``data_files``, raises if any leaf task would read anything else (e.g. if lm-eval's
    private task factory, which the local override hooks, has changed). ``manager``: a
    :func:`task_manager` for the same ``data_files``, built here when not given.
    """
    manager = manager or task_manager(data_files)
    built = []
    for name in tasks:
        loaded = manager.load([name])
        built.append(loaded["groups"].get(name) or loaded["tasks"][name])
        if data_files is None:
            continue
        for leaf, task in loaded["tasks"].items():
            path = task.config.dataset_path
            if path != "json" or leaf not in data_files:
                raise RuntimeError(
                    f"task {leaf!r} would read {path!r}, not the local files under the "
                    "configured local_dir; lm-eval's task factory may have changed"
                )
    return built


def _leaves(out: dict, name: str) -> list[str]:
    subtasks = out.get("group_subtasks", {})
    if name not in subtasks or not subtasks[name]:
        return [name]
    return [leaf for child in subtasks[name] for leaf in _leaves(out, child)]


def to_metrics(out: dict, spec: DownstreamSpec) -> list[Metric]:
    """Turn ``simple_evaluate``'s output into result rows (one per metric the task reports)."""
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
            "limit": spec.limit,
            "samples": samples,
            "subtasks": len(leaves),
            "source": spec.source,
        }
        for metric in METRICS:
            value = res.get(f"{metric},none")
            if isinstance(value, (int, float)):
                rows.append(Metric(metric, task, float(value), dict(variant)))
                log.info("%s %s = %.4f (%d samples)", metric, task, value, samples)
    return rows


def spec_from_dict(fields_: dict | None) -> DownstreamSpec | None:
    """Build a :class:`DownstreamSpec` from a plain dict (``None`` stays ``None``)."""
    if fields_ is None:
        return None
    known = set(DownstreamSpec.__dataclass_fields__)
    unknown = sorted(set(fields_) - known)
    if unknown:
        raise ValueError(f"downstream has no setting {unknown[0]!r}; known: {sorted(known)}")
    return DownstreamSpec(**fields_)
