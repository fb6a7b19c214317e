"""Weights & Biases mirror of a run's result rows.

Parquet files under ``results_dir`` are the record; W&B is a view of them. The pipeline calls
:meth:`WandbTracker.log_run` only after the run's parquet file is written, so a tracker
failure never loses a result. A skipped (already finished) run creates no W&B run, unless it
was never mirrored (it finished without a tracker, or its mirror failed): then it is mirrored
once, and marked so under ``<results_dir>/mirrored/``.

One W&B run per job: config attached (the whole composed config plus the config hash),
scalars logged as ``<metric>/<dataset>`` (``ppl/wikitext2``, ``acc/arc_easy``,
``acc_norm/hellaswag``) together with the run's sparsity, parameter counts and pruning time,
and the run's rows as a ``wandb.Table`` named ``results``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from twossp.extras import require

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")


@dataclass
class WandbSettings:
    """Where and how runs are logged (from ``conf/logger/wandb.yaml``).

    Attributes:
        mode: ``online``, ``offline`` (written under ``dir``, ``wandb sync`` later) or
            ``disabled``.
        project: W&B project.
        entity: W&B entity (user or team); ``None`` uses the account default.
        group: run group; ``None`` uses the experiment name, so a sweep's jobs group together.
        run_name: run name; ``None`` gives ``<model>-<method>-s<sparsity>``.
        tags: extra tags (model, method and sparsity are always added).
        dir: parent folder of the ``wandb/`` run folders; ``None`` leaves it to W&B.
        job_type: W&B job type.
    """

    mode: str = "online"
    project: str = "twossp"
    entity: str | None = None
    group: str | None = None
    run_name: str | None = None
    tags: list[str] = field(default_factory=list)
    dir: str | None = None
    job_type: str = "prune"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"logger.mode must be one of {MODES}, got {self.mode!r}")
        self.tags = list(self.tags or [])


def scalars(frame) -> dict[str, float]:
    """The run's numbers as W&B keys: ``<metric>/<dataset or phase>`` plus the run's facts."""
    out = {
        f"{r.metric}/{r.dataset if isinstance(r.dataset, str) else r.phase}": float(r.value)
        for r in frame.itertuples()
    }
    run = frame.iloc[0]
    out.update(
        {
            "sparsity/target": float(run.target_sparsity),
            "sparsity/achieved": float(run.achieved_sparsity),
            "params/before": int(run.params_before),
            "params/after": int(run.params_after),
            "time/prune_seconds": float(run.prune_seconds),
        }
    )
    return out


def has_api_key() -> bool:
    """Whether W&B could log in without a prompt: ``WANDB_API_KEY`` or a netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    try:
        return netrc.netrc().authenticators(host.split("/")[0]) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def table_frame(frame):
    """The rows with nested values (versions, list settings) and timestamps as text."""
    import json

    out = frame.reset_index(drop=True).copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(
                lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
            )
    for col in ("created_at", "started_at"):
        if col in out:
            out[col] = out[col].map(lambda v: None if v is None or v != v else str(v))
    return out


class WandbTracker:
    """Mirrors one finished run into W&B (created lazily, in :meth:`log_run`)."""

    def __init__(self, settings: WandbSettings, config: dict | None = None) -> None:
        self.settings = settings
        self.config = config or {}
        self.run_dir: Path | None = None

    def check(self) -> None:
        """Before any work: wandb is installed, and an online mirror without credentials
        falls back to offline (one warning) instead of failing after the run; ``wandb sync``
        uploads it later."""
        require("wandb", "wandb", "logger=wandb")
        if self.settings.mode == "online" and not has_api_key():
            log.warning(
                "W&B: no API key (WANDB_API_KEY or `wandb login`); logging offline under %s "
                "instead (upload later with `wandb sync`)",
                self.settings.dir or "./wandb",
            )
            self.settings.mode = "offline"

    def log_run(self, frame) -> None:
        import wandb

        s = self.settings
        record = frame.iloc[0]
        if s.dir is not None:
            Path(s.dir).mkdir(parents=True, exist_ok=True)
        name = s.run_name or f"{record.model}-{record.method}-s{record.target_sparsity:g}"
        run = wandb.init(
            project=s.project,
            entity=s.entity,
            group=s.group or record.experiment,
            name=name,
            job_type=s.job_type,
            tags=[
                *s.tags,
                record.model,
                record.method,
                record.protocol,
                f"sparsity={record.target_sparsity:g}",
            ],
            config={**self.config, "config_hash": record.config_hash, "run_id": record.run_id},
            dir=s.dir,
            mode=s.mode,
            reinit="finish_previous",
        )
        try:
            values = scalars(frame)
            run.log({**values, "results": wandb.Table(dataframe=table_frame(frame))})
            run.summary.update(values)
            self.run_dir = Path(run.dir).parent if s.mode != "disabled" else None
        finally:
            run.finish()
        log.info("W&B (%s): %s/%s %s", s.mode, s.project, run.group, name)


def tracker_from_config(logger_cfg: dict, spec, full_cfg: dict | None = None) -> WandbTracker:
    """Build the tracker named by ``logger_cfg['name']`` (only ``wandb`` exists)."""
    cfg = dict(logger_cfg)
    kind = cfg.pop("name", "wandb")
    if kind != "wandb":
        raise ValueError(f"unknown logger {kind!r}; known: 'wandb' (or 'none' for no tracker)")
    settings = WandbSettings(**cfg)
    if settings.group is None:
        settings.group = spec.experiment
    return WandbTracker(settings, full_cfg)
