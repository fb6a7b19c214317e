"""The one Hydra entry point: turn the composed config into a typed RunSpec and run it.

    python experiments/run.py model=stories260k method=twossp sparsity=0.375
    python experiments/run.py -m method=twossp,dense sparsity=0.25,0.375,0.5
    python experiments/run.py experiment=cpu_demo        # an experiment overlay is a sweep

Library code never sees the Hydra config; :func:`twossp.config.to_run_spec` converts what it
needs (the resuming sweeper hashes points with the same function). A user error
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

# The config -> RunSpec conversion lives in the package (the sweeper uses it too).
from twossp.config import register_method_schemas, register_resolvers, to_run_spec
from twossp.logs import exit_on_interrupt, exit_on_user_error

if TYPE_CHECKING:
    from twossp.run_spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("twossp")

# Start-up imports torch once, for the method classes whose settings Hydra composes against
# (register_method_schemas); transformers, pandas and the rest load where a run is built.
register_resolvers()
register_method_schemas()


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
    if outcome.status == "busy":
        holder = outcome.holder
        print(
            f"[twossp] busy: run {outcome.path.stem} is held by {holder.describe()} "
            f"({holder.command}); not run here (on_busy=skip)"
        )
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
    unit = f" {r.unit}" if isinstance(r.unit, str) else ""
    whole = unit == " bytes" or abs(r.value) >= 1e6  # bytes are counted: never 698880.0000
    value = f"{r.value:.0f}" if whole else f"{r.value:.4f}"
    interval = ""
    if all(isinstance(v, float) and v == v for v in (r.ci_low, r.ci_high)):
        interval = f"  (95% interval {r.ci_low:.4f} .. {r.ci_high:.4f})"
    return f"{name} = {value}{unit}{interval}"


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from twossp.locks import check_on_busy
    from twossp.logs import progress_bars, quiet_libraries
    from twossp.pipeline import run
    from twossp.results import read_run

    quiet_libraries()
    try:
        spec = to_run_spec(cfg)
        on_busy = check_on_busy(cfg.get("on_busy", "wait"))
        with progress_bars(spec.progress):  # dependencies' bars too
            outcome = run(spec, tracker=make_tracker(cfg, spec), on_busy=on_busy)
    except Exception as exc:  # one line for user errors; others re-raised as they are
        exit_on_user_error(exc)
    report(outcome)
    if outcome.status == "busy":  # another process computes it: no objective here
        return None
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
        for name in names:
            if name in METHODS:
                _check_method_value(name, key, arg)


def _check_method_value(name: str, key: str, arg: str) -> None:
    """``method.<key>=<value>`` of the wrong kind for method ``name`` (``use_cache=maybe``):
    one line naming the setting, before Hydra's multi-line composition error."""
    import typing

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf.errors import OmegaConfBaseException

    from twossp.methods.registry import settings_schema

    schema = settings_schema(name)
    if key not in schema.__dataclass_fields__:
        return
    try:
        override = OverridesParser.create().parse_override(arg)
    except Exception:  # a parse error: check_overrides reports it
        return
    if override.is_sweep_override() or override.is_delete():
        return
    value = override.value()
    if isinstance(value, str) and "${" in value:
        return
    try:
        OmegaConf.merge(OmegaConf.structured(schema), {key: value})
    except OmegaConfBaseException:
        kind = typing.get_type_hints(schema)[key]
        wanted = "true or false" if kind is bool else f"of type {_type_name(kind)}"
        print(
            f"[twossp] error: method.{key} ({name}) must be {wanted}, got {value!r}",
            file=sys.stderr,
        )
        sys.exit(2)


def _type_name(kind) -> str:
    import typing

    names = [getattr(a, "__name__", str(a)) for a in typing.get_args(kind)] or [
        getattr(kind, "__name__", str(kind))
    ]
    return " or ".join("null" if n == "NoneType" else n for n in names)


HYDRA_GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def check_overrides(argv: list[str]) -> None:
    """An override Hydra cannot parse (an unquoted space: ``paths.results_dir=/tmp/a b``
    arrives as two arguments): one line with a hint to quote, before Hydra prints its own
    multi-line error."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        overrides = get_args_parser().parse_known_args(argv)[0].overrides
    except SystemExit:  # hydra's own option errors: left to hydra
        return
    parser = OverridesParser.create()
    for i, arg in enumerate(overrides):
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as exc:
            lines = [
                line.strip()
                for line in str(exc).splitlines()
                if line.strip() and not line.startswith(("Error parsing", "See http"))
            ]
            reason = lines[0] if lines else "not an override"
            previous = overrides[i - 1] if i > 0 else ""
            if "=" not in arg and "=" in previous:
                hint = (
                    "a value that contains spaces must be quoted as one argument, e.g. "
                    f"'{previous} {arg}'"
                )
            else:
                hint = (
                    "quote a value that contains spaces or special characters (e.g. "
                    f"'key=a b' or \"key='a,b'\"), see {HYDRA_GRAMMAR}"
                )
            print(
                f"[twossp] error: cannot parse the override {arg!r} ({reason}); {hint}",
                file=sys.stderr,
            )
            sys.exit(2)


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
        check_overrides(sys.argv[1:])
        check_group_choices(sys.argv[1:])
        check_method_overrides(sys.argv[1:])
        check_launcher(sys.argv[1:])
        main()
    except KeyboardInterrupt as exc:
        exit_on_interrupt(exc, note=INTERRUPTED)


if __name__ == "__main__":
    cli()
