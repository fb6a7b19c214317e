"""The one Hydra entry point: turn the composed config into a typed RunSpec and run it.

    python experiments/run.py model=stories260k method=twossp sparsity=0.375
    python experiments/run.py -m method=twossp,dense sparsity=0.25,0.375,0.5

Library code never sees the Hydra config; everything it needs is converted here.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python experiments/run.py` without installing
    sys.path.insert(0, str(ROOT))
# Launcher jobs (hydra/launcher=local|slurm) unpickle this module's task in a new process,
# which must import twossp too: pass the root on through the environment they inherit.
if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    )

# twossp (torch, transformers, pandas) is imported where a run is built, not at start-up, so
# `--help`, `--cfg job` and a launcher's submitting process stay fast.
if TYPE_CHECKING:
    from twossp.data import TextDataset
    from twossp.evaluation.downstream import DownstreamSpec
    from twossp.pipeline import RunSpec

log = logging.getLogger("twossp")


def _local_or_null(path: str):
    return path if Path(path).expanduser().exists() else None


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("twossp_root"):
        OmegaConf.register_new_resolver("twossp_root", lambda: str(ROOT))
    if not OmegaConf.has_resolver("twossp_local"):
        OmegaConf.register_new_resolver("twossp_local", _local_or_null)


register_resolvers()


def _dataset(name: str, node) -> TextDataset:
    from twossp.data import TextDataset

    fields = OmegaConf.to_container(node, resolve=True)
    return TextDataset(name=fields.pop("name", name), **fields)


def _hash_view(cfg: DictConfig) -> dict:
    """The parts of the config that change a result (not paths, loggers or flags)."""

    def data(node):
        d = OmegaConf.to_container(node, resolve=True)
        if d.get("local_path"):
            d["local_path"] = Path(d["local_path"]).name
        return d

    return {
        "model": {k: cfg.model[k] for k in ("key", "dtype", "revision")},
        "method": OmegaConf.to_container(cfg.method, resolve=True),
        "sparsity": float(cfg.sparsity),
        "seed": int(cfg.seed),
        "calib": {
            **{k: cfg.calib[k] for k in ("n_samples", "seqlen", "seed")},
            "dataset": data(cfg.calib.dataset),
        },
        "eval": {
            **{k: cfg.eval[k] for k in ("seqlen", "max_windows")},
            "datasets": {n: data(cfg.eval.datasets[n]) for n in cfg.eval.use},
            "downstream": _downstream_hash_view(cfg.eval.get("downstream")),
        },
    }


def _downstream_hash_view(node) -> dict | None:
    """The downstream settings that change a result; a local task folder counts by name only."""
    if not node:
        return None
    d = OmegaConf.to_container(node, resolve=True)
    d.pop("batch_size", None)
    if d.get("local_dir"):
        d["local_dir"] = Path(d["local_dir"]).name
    return d


def _downstream(node) -> DownstreamSpec | None:
    if not node:
        return None
    from twossp.evaluation.downstream import spec_from_dict

    return spec_from_dict(OmegaConf.to_container(node, resolve=True))


def to_run_spec(cfg: DictConfig) -> RunSpec:
    """Convert a composed config into the typed arguments of :func:`twossp.pipeline.run`."""
    from twossp.data import CalibrationSpec
    from twossp.modeling import ModelSpec
    from twossp.pipeline import EvalSpec, RunSpec
    from twossp.results import config_hash

    unknown = [n for n in cfg.eval.use if n not in cfg.eval.datasets]
    if unknown:
        raise ValueError(
            f"eval.use names unknown datasets {unknown}; known: {list(cfg.eval.datasets)}"
        )
    model = OmegaConf.to_container(cfg.model, resolve=True)
    key = model.pop("key")
    method = OmegaConf.to_container(cfg.method, resolve=True)
    name = method.pop("name")
    calib = CalibrationSpec(
        dataset=_dataset("c4_train", cfg.calib.dataset),
        n_samples=int(cfg.calib.n_samples),
        seqlen=int(cfg.calib.seqlen),
        seed=int(cfg.calib.seed),
    )
    evaluation = EvalSpec(
        datasets=[_dataset(n, cfg.eval.datasets[n]) for n in cfg.eval.use],
        seqlen=int(cfg.eval.seqlen),
        batch_size=cfg.eval.batch_size,  # int or "auto": resolve_batch_size parses it
        max_windows=cfg.eval.max_windows,
        downstream=_downstream(cfg.eval.get("downstream")),
    )
    view = _hash_view(cfg)
    digest = config_hash(view)
    return RunSpec(
        model_key=key,
        model=ModelSpec(**model),
        method=name,
        method_params=method,
        sparsity=float(cfg.sparsity),
        calib=calib,
        eval=evaluation,
        results_dir=Path(cfg.paths.results_dir),
        config_hash=digest,
        experiment=str(cfg.experiment_name),
        seed=int(cfg.seed),
        force=bool(cfg.force),
        save_model_dir=Path(cfg.paths.models_dir) / digest if cfg.save_model else None,
        progress=bool(cfg.progress),
        reuse_key=_reuse_key(name, view),
    )


def _reuse_key(method: str, view: dict) -> str | None:
    """For a method whose result ignores the target sparsity (dense), the hash of the view
    without it (and without calibration when the method reads none), shared by every point
    of a sparsity sweep; None for the others or an unknown name (``prepare`` reports it)."""
    from twossp.methods.registry import METHODS, method_class
    from twossp.results import config_hash

    if method not in METHODS:
        return None
    cls = method_class(method)
    if cls.uses_sparsity:
        return None
    drop = {"sparsity"} | (set() if cls.needs_calibration else {"calib"})
    return "reuse-" + config_hash({k: v for k, v in view.items() if k not in drop})


def make_tracker(cfg: DictConfig, spec: RunSpec):
    if cfg.logger.name == "none":
        return None
    from twossp.tracking import tracker_from_config

    return tracker_from_config(
        OmegaConf.to_container(cfg.logger, resolve=True),
        spec,
        OmegaConf.to_container(cfg, resolve=True),
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from twossp.pipeline import run

    spec = to_run_spec(cfg)
    outcome = run(spec, tracker=make_tracker(cfg, spec))
    if outcome.status == "skipped":
        print(f"[twossp] skipped (already done): {outcome.path}")
        return
    frame = outcome.frame
    row = frame.iloc[0]
    if outcome.status == "reused":
        print("[twossp] reused the rows of an equivalent finished run (independent of sparsity)")
    print(
        f"[twossp] {row.model} {row.method} target={row.target_sparsity:.4f} "
        f"achieved={row.achieved_sparsity:.4f} params {row.params_before} -> {row.params_after} "
        f"prune {row.prune_seconds:.2f}s"
    )
    for r in frame.itertuples():
        print(f"[twossp]   {r.metric}/{r.dataset} = {r.value:.4f}")
    print(f"[twossp] results: {outcome.path}")


if __name__ == "__main__":
    main()
