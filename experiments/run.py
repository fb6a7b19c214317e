"""The one Hydra entry point: turn the composed config into a typed RunSpec and run it.

    python experiments/run.py model=stories260k method=twossp sparsity=0.375
    python experiments/run.py -m method=twossp,dense sparsity=0.25,0.375,0.5
    python experiments/run.py experiment=cpu_demo        # an experiment overlay is a sweep

Library code never sees the Hydra config; everything it needs is converted here. A user error
(bad setting, missing data, unreachable sparsity, ...) prints one line naming the cause and
exits with status 2; ``TWOSSP_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

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


def to_run_spec(cfg: DictConfig, device_hint: str | None = None) -> RunSpec:
    """Convert a composed config into the typed arguments of :func:`twossp.pipeline.run`."""
    from twossp.data import CalibrationSpec
    from twossp.modeling import ModelSpec
    from twossp.pipeline import EvalSpec, RunSpec

    unknown = [n for n in cfg.eval.use if n not in cfg.eval.datasets]
    if unknown:
        raise ValueError(
            f"eval.use names unknown datasets {unknown}; known: {list(cfg.eval.datasets)}"
        )
    model = OmegaConf.to_container(cfg.model, resolve=True)
    key = model["key"]
    for extra in _MODEL_EXTRAS:
        model.pop(extra, None)
    method = OmegaConf.to_container(cfg.method, resolve=True)
    name = method.pop("name")
    calib = CalibrationSpec(
        dataset=_dataset("c4_train", cfg.calib.dataset),
        n_samples=int(cfg.calib.n_samples),
        seqlen=int(cfg.calib.seqlen),
        seed=int(cfg.calib.seed),
        packing=str(cfg.calib.packing),
    )
    evaluation = EvalSpec(
        datasets=[_dataset(n, cfg.eval.datasets[n]) for n in cfg.eval.use],
        seqlen=int(cfg.eval.seqlen),
        batch_size=cfg.eval.batch_size,  # int or "auto": checked in prepare
        max_windows=cfg.eval.max_windows,
        downstream=_downstream(cfg.eval.get("downstream")),
    )
    spec = RunSpec(
        model_key=key,
        model=ModelSpec(**model),
        method=name,
        method_params=method,
        sparsity=float(cfg.sparsity),
        protocol=str(cfg.protocol.name),
        calib=calib,
        eval=evaluation,
        results_dir=Path(cfg.paths.results_dir),
        experiment=str(cfg.experiment_name),
        seed=int(cfg.seed),
        force=bool(cfg.force),
        progress=bool(cfg.progress),
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
        where = r.dataset if isinstance(r.dataset, str) else r.phase
        print(f"[twossp]   {r.metric}/{where} = {r.value:.4f}")
    print(f"[twossp] results: {outcome.path}")


def user_error(exc: BaseException) -> bool:
    """Errors a user can fix from the command line (settings, data, models, extras)."""
    from twossp.extras import MissingExtraError

    return isinstance(exc, (ValueError, OSError, KeyError, MissingExtraError))


def fail(exc: BaseException) -> None:
    """Print one line for a user error and exit 2 (the traceback with TWOSSP_DEBUG=1)."""
    if os.environ.get("TWOSSP_DEBUG", "0") not in ("", "0") or not user_error(exc):
        raise exc
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"[twossp] error: {message} (TWOSSP_DEBUG=1 shows the traceback)", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from twossp.logs import quiet_libraries
    from twossp.pipeline import run
    from twossp.results import read_run

    quiet_libraries()
    try:
        spec = to_run_spec(cfg)
        outcome = run(spec, tracker=make_tracker(cfg, spec))
    except Exception as exc:  # one line for user errors; others re-raised as they are
        fail(exc)
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


def cli() -> None:
    """The ``twossp-run`` console script (the same as ``python experiments/run.py``)."""
    check_group_choices(sys.argv[1:])
    check_method_overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
