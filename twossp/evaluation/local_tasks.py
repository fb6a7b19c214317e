"""lm-eval's stock tasks reading local files in the hub schema (see
:mod:`twossp.evaluation.downstream` for the layout and why): the ``{task: {split: file}}``
mapping of a local folder, the generated task YAMLs that ``include:`` the stock ones, the
task manager built on them, and the check that every leaf really reads the local files.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import yaml

from twossp.io import atomic_write_text

log = logging.getLogger(__name__)

_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
_MANAGERS: dict = {}  # lm-eval task managers, one per data mapping, built once per process
_TASK_DIR: list[Path] = []  # this process's folder of generated task YAMLs


def _split_files(folder: Path) -> dict[str, str]:
    return {p.stem: str(p) for p in sorted(folder.glob("*.jsonl"))}


def local_data_files(local_dir: str | Path, tasks: list[str]) -> dict[str, dict[str, str]]:
    """Map each leaf task name to its ``{split: file}`` under ``local_dir``.

    ``<local_dir>/<task>/<split>.jsonl`` serves task ``<task>``; for a group,
    ``<local_dir>/<group>/<member>/<split>.jsonl`` serves ``<group>_<member>``, whether the
    group (``mmlu``) or one member (``mmlu_anatomy``) is asked for.
    """
    root = Path(local_dir).expanduser()
    out: dict[str, dict[str, str]] = {}
    for task in tasks:
        folder = root / task
        files = _split_files(folder) if folder.is_dir() else {}
        if not files:  # one member of a group: <group>_<member> -> <group>/<member>
            parts = task.split("_")
            for i in range(1, len(parts)):
                member = root / "_".join(parts[:i]) / "_".join(parts[i:])
                if member.is_dir() and (files := _split_files(member)):
                    break
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

    Without ``data_files``: the stock manager. With them: a manager built with
    ``include_path`` at a folder of YAMLs written by :func:`write_local_tasks`. Each is built
    once per process (indexing lm-eval's task YAMLs takes ~10 s).
    """
    from lm_eval.tasks import TaskManager

    if None not in _MANAGERS:
        _MANAGERS[None] = TaskManager()
    if not data_files:
        return _MANAGERS[None]
    key = hashlib.sha256(json.dumps(data_files, sort_keys=True).encode()).hexdigest()[:16]
    if key not in _MANAGERS:
        folder = write_local_tasks(_MANAGERS[None], data_files, _task_dir() / key)
        with _quiet("lm_eval.tasks._index"):  # one "overrides existing task" line per leaf
            _MANAGERS[key] = TaskManager(include_path=str(folder))
        log.info(
            "lm-eval: %d stock tasks read local files (task YAMLs in %s)", len(data_files), folder
        )
    return _MANAGERS[key]


def _task_dir() -> Path:
    if not _TASK_DIR:
        path = Path(tempfile.mkdtemp(prefix="twossp-lm_eval-tasks-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        _TASK_DIR.append(path)
    return _TASK_DIR[0]


@contextlib.contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_local_tasks(stock, data_files: dict[str, dict[str, str]], folder: Path) -> Path:
    """Write one ``<task>.yaml`` per leaf task into ``folder``, for ``include_path``.

    Args:
        stock: the stock ``TaskManager``, to find each task's YAML and splits.
        data_files: ``{task: {split: file}}`` as from :func:`local_data_files`.
        folder: where to write (created).
    """
    index = stock.task_index
    for name, files in data_files.items():
        entry = index.get(name)
        if entry is None or entry.yaml_path is None or "task" not in (entry.cfg or {}):
            raise KeyError(
                f"local data for {name!r}, but lm-eval has no YAML task of that name; "
                "the local folder names must match lm-eval task (or group member) names"
            )
        cfg = local_task_config(name, entry.cfg, files, entry.yaml_path)
        atomic_write_text(folder / f"{name}.yaml", yaml.safe_dump(cfg, sort_keys=False))
    return folder


def local_task_config(name: str, stock: dict, files: dict[str, str], include: str | Path) -> dict:
    """The YAML (as a dict) that reuses stock task ``name`` with local ``files``.

    Args:
        name: the stock task name (kept).
        stock: the stock task config (includes resolved), for its splits and dataset kwargs.
        files: ``{split: path}`` of the local data.
        include: the stock task YAML to include.

    ``tag`` is emptied so the override does not replace lm-eval's tag lists (MMLU's groups
    are built from tags such as ``mmlu_stem_tasks``, whose members resolve to these tasks).
    """
    cfg = {
        "include": str(include),
        "task": name,
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {**(stock.get("dataset_kwargs") or {}), "data_files": dict(files)},
    }
    for key in _SPLIT_KEYS:
        split = stock.get(key)
        if split is not None and split not in files:
            log.debug("%s: no local %s split %r; unset", name, key, split)
            cfg[key] = None
    return cfg


def load_tasks(
    tasks: list[str],
    data_files: dict[str, dict[str, str]] | None = None,
    manager=None,
    leaves: dict | None = None,
) -> list:
    """Build lm-eval Task / Group objects for ``tasks`` (reading ``data_files`` where given).

    With ``data_files``, raises if any leaf task would read anything but its local files
    through the manager's generated YAMLs (e.g. an MMLU subject missing from the local folder,
    or a change in how lm-eval resolves ``include_path``). ``manager``: a :func:`task_manager`
    for the same ``data_files``, built here when not given. ``leaves``, when given, is filled
    with ``{task: {leaf name: Task}}``.
    """
    manager = manager or task_manager(data_files)
    built = []
    for name in tasks:
        loaded = manager.load([name])
        built.append(loaded["groups"].get(name) or loaded["tasks"][name])
        if leaves is not None:
            leaves[name] = dict(loaded["tasks"])
        if data_files is not None:
            for leaf, task in loaded["tasks"].items():
                _check_local(leaf, task.config, data_files, manager.include_path)
    return built


def _check_local(leaf: str, config, data_files: dict, include_path) -> None:
    source = (config.metadata or {}).get("config_source", "")
    wanted = data_files.get(leaf)
    got = (config.dataset_kwargs or {}).get("data_files")
    if (
        config.dataset_path != "json"
        or wanted is None
        or got != wanted
        or Path(source).parent != Path(include_path)
    ):
        raise RuntimeError(
            f"task {leaf!r} would read {config.dataset_path!r} (files {got}, config "
            f"{source!r}), not the local files under the configured local_dir "
            f"({'no local folder for it' if wanted is None else wanted}); "
            "a group member may be missing locally, or lm-eval's include_path handling changed"
        )
