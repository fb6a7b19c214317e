"""The composed Hydra config as typed arguments: :func:`to_run_spec`.

``experiments/run.py`` (the entry point) and the sweeper that skips finished points
(``hydra_plugins/twossp_sweeper``) both turn a composed config into a
:class:`twossp.run_spec.RunSpec` here; library code never sees the Hydra config. Also here:
the resolvers and method schemas composition needs, and a model's spec by its config key
(for tools such as ``twossp-export --model <key>``). Only omegaconf is needed to import this
module: torch and the rest load where a spec is built.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from twossp.logs import show_progress

if TYPE_CHECKING:
    from twossp.data import TextDataset
    from twossp.evaluation.downstream import DownstreamSpec
    from twossp.modeling import ModelSpec
    from twossp.run_spec import RunSpec

# The checkout's root: conf/ (the Hydra config tree) lives beside the package.
ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Model config keys that are not ModelSpec fields: the config key, the family (checked here
# without asking the hub) and per-model settings of methods (read by conf/method/<name>.yaml).
MODEL_EXTRAS = ("key", "model_type", "method_settings")


def _local_or_null(path: str):
    return path if Path(path).expanduser().exists() else None


def register_resolvers() -> None:
    """The ``${twossp_root:}`` and ``${twossp_local:path}`` resolvers the config tree uses."""
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


def model_keys() -> list[str]:
    """The model config keys ``model=<key>`` accepts (``conf/model/<key>.yaml``; none in an
    install without the config tree)."""
    return sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def model_spec_of_key(key: str) -> ModelSpec:
    """The ModelSpec ``model=<key>`` gives a run (paths and environment resolved the same
    way), for tools that take a model by its key (``python -m twossp.export --model``)."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    register_method_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={key}"])
    return model_spec(cfg)[1]


def _dataset(name: str, node, where: str) -> TextDataset:
    from twossp.data import TextDataset

    fields = OmegaConf.to_container(node, resolve=True)
    return flags(TextDataset(name=fields.pop("name", name), **fields), where)


def _downstream(node) -> DownstreamSpec | None:
    if not node:
        return None
    from twossp.evaluation.downstream import spec_from_dict

    return spec_from_dict(OmegaConf.to_container(node, resolve=True))


def _inference(node):
    """eval.inference (a switch) with its settings, eval.inference_settings; None when off."""
    from twossp.evaluation.inference import InferenceSpec

    settings = node.get("inference_settings")
    settings = OmegaConf.to_container(settings, resolve=True) if settings else None
    if not flag(node.get("inference", False), "eval.inference"):
        for f in dataclasses.fields(InferenceSpec):  # unused, but still not a wrong kind
            if f.type in ("bool", bool) and f.name in (settings or {}):
                flag(settings[f.name], f"eval.inference_settings.{f.name}")
        return None
    return flags(InferenceSpec.from_dict(settings), "eval.inference_settings")


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


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def flag(value, key: str) -> bool:
    """A boolean setting: true / false (also yes / no, on / off, 1 / 0, as OmegaConf's typed
    settings accept), refused by name otherwise (``eval.inference=maybe`` is not true)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{key} must be true or false, got {value!r}")


def flags(settings, where: str):
    """``settings`` (a dataclass) with every ``bool`` field checked by :func:`flag` and
    normalised, named ``<where>.<field>`` when refused."""
    for f in dataclasses.fields(settings):
        if f.type in ("bool", bool):
            setattr(settings, f.name, flag(getattr(settings, f.name), f"{where}.{f.name}"))
    return settings


def _threads(cfg: DictConfig) -> int | None:
    if cfg.get("threads") is None:
        return None
    threads = _number(cfg, "threads", int)
    if threads < 1:
        raise ValueError(f"threads must be a positive integer or null, got {threads}")
    return threads


def _check_model_type(key: str, model_type) -> None:
    """A declared ``model.model_type`` must be a family an adapter handles."""
    if model_type is None:
        return
    from twossp.adapters import SUPPORTED_MODEL_TYPES

    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model {key!r} declares model_type {model_type!r}, which no adapter handles; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )


def model_spec(cfg: DictConfig) -> tuple[str, ModelSpec]:
    """``(key, ModelSpec)`` of a composed config's ``model`` group."""
    from twossp.modeling import ModelSpec

    model = OmegaConf.to_container(cfg.model, resolve=True)
    key = model["key"]
    _check_model_type(key, model.get("model_type"))
    for extra in MODEL_EXTRAS:
        model.pop(extra, None)
    return key, flags(ModelSpec(**model), "model")


def to_run_spec(cfg: DictConfig, device_hint: str | None = None) -> RunSpec:
    """Convert a composed config into the typed arguments of :func:`twossp.pipeline.run`.

    Args:
        cfg: the config ``experiments/run.py`` composes (``conf/config.yaml`` and overrides).
        device_hint: where the run will execute when not here (a sweep submitted to GPU
            nodes); None resolves ``device: auto`` on this machine.

    Raises:
        ValueError: a setting of the wrong kind or naming something unknown, by its key.
    """
    from twossp.data import CalibrationSpec
    from twossp.run_spec import EvalSpec, RunSpec

    unknown = [n for n in cfg.eval.use if n not in cfg.eval.datasets]
    if unknown:
        raise ValueError(
            f"eval.use names unknown datasets {unknown}; known: {list(cfg.eval.datasets)}"
        )
    for n in cfg.eval.datasets:  # unused ones too: a switch set to "maybe" is a mistake
        if n not in cfg.eval.use:
            _dataset(n, cfg.eval.datasets[n], f"eval.datasets.{n}")
    sparsity, seed = _number(cfg, "sparsity"), _number(cfg, "seed", int)  # named when bad
    key, model = model_spec(cfg)
    method = OmegaConf.to_container(cfg.method, resolve=True)
    name = method.pop("name")
    calib = CalibrationSpec(
        dataset=_dataset("c4_train", cfg.calib.dataset, "calib.dataset"),
        n_samples=_number(cfg, "calib.n_samples", int),
        seqlen=_number(cfg, "calib.seqlen", int),
        seed=_number(cfg, "calib.seed", int),
        packing=str(cfg.calib.packing),
    )
    evaluation = EvalSpec(
        datasets=[_dataset(n, cfg.eval.datasets[n], f"eval.datasets.{n}") for n in cfg.eval.use],
        seqlen=_number(cfg, "eval.seqlen", int),
        batch_size=cfg.eval.batch_size,  # int or "auto": checked in prepare
        max_windows=None if cfg.eval.max_windows is None else _number(cfg, "eval.max_windows", int),
        window_sample=str(cfg.eval.get("window_sample", "spread")),
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
        force=flag(cfg.force, "force"),
        progress=show_progress(flag(cfg.progress, "progress")),  # bars on a terminal only
        threads=_threads(cfg),
        device_hint=device_hint,
    )
    if flag(cfg.save_model, "save_model"):
        spec.save_model_dir = Path(cfg.paths.models_dir) / spec.config_hash
    return spec
