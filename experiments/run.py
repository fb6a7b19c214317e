"""The one Hydra entry point: turn the composed config into a typed RunSpec and run it.

    python experiments/run.py model=stories260k method=twossp sparsity=0.375
    python experiments/run.py -m method=twossp,dense sparsity=0.25,0.375,0.5
    python experiments/run.py experiment=cpu_demo        # an experiment overlay is a sweep

Library code never sees the Hydra config; everything it needs is converted here. A user error
(bad setting, missing data, unreachable sparsity, a missing device or cluster, ...) prints one
line naming the cause and exits with status 2; Ctrl-C prints one line and exits with 130;
``TWOSSP_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import difflib
import logging
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from twossp.logs import exit_on_interrupt, exit_on_user_error, show_progress

ROOT = Path(__file__).resolve().parents[1]

# Start-up imports torch once, for the method classes whose settings Hydra composes against
# (register_method_schemas); transformers, pandas and the rest load where a run is built.
if TYPE_CHECKING:
    from twossp.data import TextDataset
    from twossp.evaluation.downstream import DownstreamSpec
    from twossp.pipeline import RunSpec

log = logging.getLogger("twossp")

# Model config keys that are not ModelSpec fields (read by other config groups).
_MODEL_EXTRAS = ("key", "evopress_pool_seqlen")


def _local_or_null(path: str):
    return path if Path(path).expanduser().exists() else None


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("twossp_root"):
        OmegaConf.register_new_resolver("twossp_root", lambda: str(ROOT))
    if not OmegaConf.has_resolver("twossp_local"):
        OmegaConf.register_new_resolver("twossp_local", _local_or_null)


def register_method_schemas() -> None:
    """Every method's settings dataclass as the Hydra schema ``method/<name>_schema``, so a
    ``conf/method/<name>.yaml`` holds only what differs from the dataclass defaults and a
    mistyped or ill-typed setting fails at composition."""
    from hydra.core.config_store import ConfigStore

    from twossp.methods.registry import METHODS, settings_schema

    store = ConfigStore.instance()
    for name in METHODS:
        store.store(group="method", name=f"{name}_schema", node=settings_schema(name))


register_resolvers()
register_method_schemas()


def _dataset(name: str, node) -> TextDataset:
    from twossp.data import TextDataset

    fields = OmegaConf.to_container(node, resolve=True)
    return TextDataset(name=fields.pop("name", name), **fields)


def _downstream(node) -> DownstreamSpec | None:
    if not node:
        return None
    from twossp.evaluation.downstream import spec_from_dict

    return spec_from_dict(OmegaConf.to_container(node, resolve=True))


def _inference(node):
    """eval.inference (a switch) with its settings, eval.inference_settings; None when off."""
    if not node.get("inference", False):
        return None
    from twossp.evaluation.inference import InferenceSpec

    settings = node.get("inference_settings")
    return InferenceSpec.from_dict(
        OmegaConf.to_container(settings, resolve=True) if settings else None
    )


def _number(cfg: DictConfig, key: str, kind: type = float):
    """Setting ``key`` as a ``kind`` (float or int), refused by name (``sparsity=abc``)."""
    value = OmegaConf.select(cfg, key)
    what = "an integer" if kind is int else "a number"
    try:
        number = kind(value)
        if isinstance(value, bool) or (kind is int and number != float(value)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {what}, got {value!r}") from None
    return number


def _threads(cfg: DictConfig) -> int | None:
    if cfg.get("threads") is None:
        return None
    threads = _number(cfg, "threads", int)
    if threads < 1:
        raise ValueError(f"threads must be a positive integer or null, got {threads}")
    return threads


def model_spec(cfg: DictConfig):
    """``(key, ModelSpec)`` of a composed config's ``model`` group."""
    from twossp.modeling import ModelSpec

    model = OmegaConf.to_container(cfg.model, resolve=True)
    key = model["key"]
    for extra in _MODEL_EXTRAS:
        model.pop(extra, None)
    return key, ModelSpec(**model)


def model_keys() -> list[str]:
    """The model config keys ``model=<key>`` accepts (``conf/model/<key>.yaml``)."""
    return sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))


def model_spec_of_key(key: str):
    """The ModelSpec ``model=<key>`` gives a run (paths and environment resolved the same
    way), for tools that take a model by its key (``python -m twossp.export --model``)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={key}"])
    return model_spec(cfg)[1]


def to_run_spec(cfg: DictConfig, device_hint: str | None = None) -> RunSpec:
    """Convert a composed config into the typed arguments of :func:`twossp.pipeline.run`."""
    from twossp.data import CalibrationSpec
    from twossp.pipeline import EvalSpec, RunSpec

    unknown = [n for n in cfg.eval.use if n not in cfg.eval.datasets]
    if unknown:
        raise ValueError(
            f"eval.use names unknown datasets {unknown}; known: {list(cfg.eval.datasets)}"
        )
    sparsity, seed = _number(cfg, "sparsity"), _number(cfg, "seed", int)  # named when bad
    key, model = model_spec(cfg)
    method = OmegaConf.to_container(cfg.method, resolve=True)
    name = method.pop("name")
    calib = CalibrationSpec(
        dataset=_dataset("c4_train", cfg.calib.dataset),
        n_samples=_number(cfg, "calib.n_samples", int),
        seqlen=_number(cfg, "calib.seqlen", int),
        seed=_number(cfg, "calib.seed", int),
        packing=str(cfg.calib.packing),
    )
    evaluation = EvalSpec(
        datasets=[_dataset(n, cfg.eval.datasets[n]) for n in cfg.eval.use],
        seqlen=_number(cfg, "eval.seqlen", int),
        batch_size=cfg.eval.batch_size,  # int or "auto": checked in prepare
        max_windows=None if cfg.eval.max_windows is None else _number(cfg, "eval.max_windows", int),
        downstream=_downstream(cfg.eval.get("downstream")),
        inference=_inference(cfg.eval),
    )
    spec = RunSpec(
        model_key=key,
        model=model,
        method=name,
        method_params=method,
        sparsity=sparsity,
        protocol=str(cfg.protocol.name),
        calib=calib,
        eval=evaluation,
        results_dir=Path(cfg.paths.results_dir),
        experiment=str(cfg.experiment_name),
        seed=seed,
        force=bool(cfg.force),
        progress=show_progress(cfg.progress),  # bars on a terminal only
        threads=_threads(cfg),
        device_hint=device_hint,
    )
    if cfg.save_model:
        spec.save_model_dir = Path(cfg.paths.models_dir) / spec.config_hash
    return spec


def make_tracker(cfg: DictConfig, spec: RunSpec):
    if cfg.logger.name == "none":
        return None
    from twossp.tracking import tracker_from_config

    return tracker_from_config(
        OmegaConf.to_container(cfg.logger, resolve=True),
        spec,
        OmegaConf.to_container(cfg, resolve=True),
    )


def objective(frame, key: str) -> float | None:
    """The value ``<metric>/<dataset>`` of a run's rows (what a Hydra sweeper minimises)."""
    metric, _, dataset = key.partition("/")
    hit = frame[(frame["metric"] == metric) & (frame["dataset"] == dataset)]
    return float(hit["value"].iloc[0]) if len(hit) else None


def report(outcome) -> None:
    if outcome.status == "skipped":
        print(f"[twossp] skipped (already done): {outcome.path}")
        return
    frame = outcome.frame
    row = frame.iloc[0]
    print(
        f"[twossp] {row.model} {row.method} ({row.protocol}) target={row.target_sparsity:.4f} "
        f"achieved={row.achieved_sparsity:.4f} params {row.params_before} -> "
        f"{row.params_after} prune {row.prune_seconds:.2f}s"
    )
    for r in frame.itertuples():
        print(f"[twossp]   {_metric_line(r)}")
    print(f"[twossp] results: {outcome.path}")


def _metric_line(r) -> str:
    """``metric/dataset = value [unit]``, with the 95% interval when the row has one."""
    where = next((w for w in (r.dataset, r.phase) if isinstance(w, str)), None)
    name = f"{r.metric}/{where}" if where else r.metric
    value = f"{r.value:.4f}" if abs(r.value) < 1e6 else f"{r.value:.0f}"
    unit = f" {r.unit}" if isinstance(r.unit, str) else ""
    interval = ""
    if all(isinstance(v, float) and v == v for v in (r.ci_low, r.ci_high)):
        interval = f"  (95% interval {r.ci_low:.4f} .. {r.ci_high:.4f})"
    return f"{name} = {value}{unit}{interval}"


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from twossp.logs import progress_bars, quiet_libraries
    from twossp.pipeline import run
    from twossp.results import read_run

    quiet_libraries()
    try:
        spec = to_run_spec(cfg)
        with progress_bars(spec.progress):  # dependencies' bars too
            outcome = run(spec, tracker=make_tracker(cfg, spec))
    except Exception as exc:  # one line for user errors; others re-raised as they are
        exit_on_user_error(exc)
    report(outcome)
    frame = outcome.frame if outcome.frame is not None else read_run(outcome.path)
    return objective(frame, str(cfg.get("objective", "ppl/wikitext2")))


def _usage_error(problem: str, name: str, options) -> None:
    """Print ``problem`` with the closest option (or all of them) as one line; exit 2."""
    options = sorted(options)
    close = difflib.get_close_matches(name, options, n=1)
    hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(options)}"
    print(f"[twossp] error: {problem}; {hint}", file=sys.stderr)
    sys.exit(2)


def check_method_overrides(argv: list[str]) -> None:
    """``method.<key>=...`` for a key no chosen method has: one line with a suggestion
    (Hydra would advise ``+method.<key>``, which only fails later)."""
    overrides = [a for a in argv if a.startswith("method.") and "=" in a]
    if not overrides:
        return
    import dataclasses

    from twossp.methods.registry import METHODS, method_class

    chosen = [a.split("=", 1)[1] for a in argv if a.startswith("method=")]
    names = chosen[-1].split(",") if chosen else ["twossp"]
    fields: set[str] = {"name"}
    for name in names:
        if name in METHODS:
            fields |= {f.name for f in dataclasses.fields(method_class(name))}
    for arg in overrides:
        key = arg.split("=", 1)[0][len("method.") :].split(".")[0]
        if key not in fields:
            _usage_error(f"method {'/'.join(names)} has no setting {key!r}", key, fields)


def check_group_choices(argv: list[str]) -> None:
    """``<group>=<name>`` naming no ``conf/<group>/<name>.yaml`` (``method=twosp``): one line
    with a suggestion, before Hydra prints its multi-line listing (which would also offer the
    method schemas as if they were methods). Sweep values are checked one by one."""
    for arg in argv:
        group, sep, value = arg.partition("=")
        folder = ROOT / "conf" / group
        if not sep or not group.isidentifier() or not folder.is_dir() or "(" in value:
            continue
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        for name in value.split(","):
            if name not in known and name != "null":
                _usage_error(f"no {group} {name!r} in conf/{group}/", name, known)


def check_launcher(argv: list[str], which=shutil.which) -> None:
    """``hydra/launcher=slurm`` where no SLURM commands exist: one line, before Hydra (submitit
    would fail with a traceback once the sweep is composed)."""
    launchers = [a.split("=", 1)[1] for a in argv if a.startswith("hydra/launcher=")]
    if launchers and launchers[-1] in ("slurm", "local"):  # both are submitit's
        from twossp.extras import MissingExtraError, require

        try:
            require(
                "hydra_plugins.hydra_submitit_launcher", "slurm", f"hydra/launcher={launchers[-1]}"
            )
        except MissingExtraError as exc:
            print(f"[twossp] error: {exc}", file=sys.stderr)
            sys.exit(2)
    if launchers and launchers[-1] == "slurm":
        absent = [c for c in ("sbatch", "srun") if which(c) is None]
        if absent:
            print(
                f"[twossp] error: hydra/launcher=slurm needs a SLURM cluster, but "
                f"{' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} not on PATH "
                "here; run the sweep from a cluster login node, or drop hydra/launcher=slurm "
                "to run it on this machine",
                file=sys.stderr,
            )
            sys.exit(2)


INTERRUPTED = (
    "the run in progress wrote no result; finished runs are kept and the same command skips them"
)


def cli() -> None:
    """The ``twossp-run`` console script (the same as ``python experiments/run.py``)."""
    try:
        check_group_choices(sys.argv[1:])
        check_method_overrides(sys.argv[1:])
        check_launcher(sys.argv[1:])
        main()
    except KeyboardInterrupt as exc:
        exit_on_interrupt(exc, note=INTERRUPTED)


if __name__ == "__main__":
    cli()
