"""Export a run's pruned model as a folder that stock transformers loads (and share it).

::

    python -m twossp.export --plan results/plans/<hash>.json --out pruned/ \\
        [--model <model key, base path or hub id>] [--push-to-hub user/name]

The plan (what the run removed) is replayed on the base model (by default the one the run
file ``<results>/runs/<hash>.parquet`` beside the plan names) through
:func:`twossp.surgery.apply_plan` and the result saved with
:func:`twossp.modeling.save_pruned`, plus a short model card. A SliceGPT plan records slicing
widths, not the rotations, so it cannot be replayed: export refuses it and the run itself has
to save the model (``save_model=true``). Re-running SliceGPT here instead would need the
run's exact calibration set and method settings, which a plan file does not hold.

``--model`` takes what ``twossp-run model=...`` takes (a key of ``conf/model/``, resolved the
same way) or a local folder or hub id. A failure a user can fix prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from twossp.modeling import ModelSpec, check_model, load_model, load_tokenizer, save_pruned
from twossp.plan import PrunePlan
from twossp.remote.pruned_modules import STRUCTURE_KEY
from twossp.surgery import apply_plan

log = logging.getLogger(__name__)

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class NotReplayableError(ValueError):
    """The plan cannot rebuild the pruned model from the base model (rotation methods)."""


def check_replayable(
    plan: PrunePlan, source: str | Path = "plan", method: str | None = None
) -> None:
    """Raise :class:`NotReplayableError` for a plan that cannot rebuild its model (a method
    that rewrites weights, such as SliceGPT's rotations, says so in its plan and class).

    Args:
        method: the run's method, when known (from its run file).
    """
    from twossp.methods.registry import METHODS, method_class

    by_class = method is None or method not in METHODS or method_class(method).plan_replays
    if not (plan.replayable and by_class):
        raise NotReplayableError(
            f"{source} came from {method or 'a method that rewrites weights'}: it records "
            "what the method chose, not the weights it computed, so it cannot be replayed on "
            "the base model. Save the model from the run itself: rerun the configuration with "
            "save_model=true (and force=true if it finished)."
        )


def export(
    plan: str | Path | PrunePlan,
    model: str | None,
    out: str | Path,
    push_to_hub: str | None = None,
    *,
    revision: str | None = None,
    dtype: str = "checkpoint",
    device: str = "cpu",
    device_map: str | None = None,
    max_shard_size: int | str = "5GB",
    private: bool = False,
) -> Path:
    """Replay ``plan`` on base ``model`` and save the result to ``out``.

    Args:
        plan: a plan file (``<results>/plans/<hash>.json``) or a :class:`PrunePlan`.
        model: the base model the run pruned (local folder or hub id); None reads it from
            the run file beside the plan file.
        out: the folder to write (replaced if it is a model folder already).
        push_to_hub: upload the folder to this hub repository (``user/name``) afterwards.
        revision: hub revision of the base model.
        dtype: ``checkpoint`` keeps the base checkpoint's dtype; else float32 / bfloat16 /
            float16 / auto (see :class:`twossp.modeling.ModelSpec`).
        device, device_map: where the base model is loaded (``device_map=auto`` for models
            larger than one device).
        max_shard_size: largest safetensors shard.
        private: create the hub repository as private.

    Raises:
        NotReplayableError: the plan came from SliceGPT (checked before loading weights).
        ValueError: no ``model`` and no run file to read it from.
    """
    if isinstance(plan, PrunePlan):
        run = {}
        check_replayable(plan)
    else:
        path, plan = Path(plan), PrunePlan.load(plan)
        run = run_of_plan(path)
        check_replayable(plan, f"plan {path}", run.get("method"))
    model = model or run.get("model_path")
    if not model:
        raise ValueError("no base model: pass --model (the run file beside the plan is missing)")
    spec = base_model_spec(model, device=device, revision=revision, device_map=device_map)
    spec.dtype = _checkpoint_dtype(spec) if dtype == "checkpoint" else dtype
    pruned, _ = load_model(spec, with_tokenizer=False)
    tokenizer = _tokenizer_or_none(spec)
    apply_plan(pruned, plan)
    out = save_pruned(pruned, out, tokenizer, max_shard_size=max_shard_size)
    _write_model_card(out, model, plan)
    if push_to_hub:
        push_folder(out, push_to_hub, private=private)
    return out


def base_model_spec(
    model: str, *, device: str = "cpu", revision: str | None = None, device_map=None
) -> ModelSpec:
    """The ModelSpec of ``model``: a local folder, a model key of ``twossp-run``
    (``conf/model/<key>.yaml``, resolved as a run resolves it: offline copy, GGUF file, hub
    fallback), or a hub id."""
    if not Path(model).expanduser().exists():
        from twossp.config import model_keys, model_spec_of_key

        keys = model_keys()  # none in an install without the config tree
        if model in keys:
            spec = model_spec_of_key(model)
            spec.device, spec.device_map = device, device_map
            spec.revision = revision or spec.revision
            return spec
        close = difflib.get_close_matches(model, keys, n=1)
        if close and "/" not in model:  # a mistyped key, not a hub id
            raise ValueError(
                f"--model {model!r} is no local folder and no model key; did you mean {close[0]}?"
            )
    return ModelSpec(model, device=device, revision=revision, device_map=device_map)


def run_of_plan(plan_path: Path) -> dict:
    """``method`` and ``model_path`` of the run that wrote ``plan_path``; {} without its file."""
    from twossp.results import read_run, run_path

    run_file = run_path(plan_path.parent.parent, plan_path.stem)
    if plan_path.parent.name != "plans" or not run_file.is_file():
        return {}
    row = read_run(run_file).iloc[0]
    return {"method": str(row["method"]), "model_path": str(row["model_path"])}


def _tokenizer_or_none(spec: ModelSpec):
    try:
        return load_tokenizer(spec)
    except (OSError, ValueError) as err:
        log.warning("no tokenizer saved: %s has none that loads (%s)", spec.name_or_path, err)
        return None


def _checkpoint_dtype(spec: ModelSpec) -> str:
    config = check_model(spec)
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return _DTYPE_NAMES.get(dtype, "auto")


def push_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None):
    """Create hub repository ``repo_id`` (if needed) and upload ``folder`` to it."""
    import huggingface_hub

    huggingface_hub.create_repo(repo_id, private=private, exist_ok=True, token=token)
    log.info("uploading %s to %s", folder, repo_id)
    return huggingface_hub.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        token=token,
        commit_message="Upload pruned model exported by twossp",
    )


def _write_model_card(folder: Path, base: str, plan: PrunePlan) -> None:
    config = json.loads((folder / "config.json").read_text())
    custom = STRUCTURE_KEY in config
    code = ", trust_remote_code=True" if custom else ""
    removed = {
        "blocks": plan.blocks,
        "attention": plan.attention,
        "mlp": plan.mlp,
        "ffn_resized_blocks": sorted(plan.ffn_keep),
    }
    note = (
        "Removed attention / MLP submodules or per-block FFN widths need the modeling code "
        "shipped in this folder (`trust_remote_code=True`); loading without it fails."
        if custom
        else "A stock architecture: loads with plain transformers."
    )
    card = f"""---
base_model: {base}
library_name: transformers
tags: [pruned, twossp]
---

# Pruned {base}

Structurally pruned with the twossp harness (2SSP and baselines) by replaying a saved plan.
{note}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("<this folder or repo>"{code})
tokenizer = AutoTokenizer.from_pretrained("<this folder or repo>"{code})
```

lm-eval: `lm_eval --model hf --model_args pretrained=<this folder or repo>{code.replace(", ", ",")}`

Removed (block indices of the base model): `{json.dumps(removed)}`
"""
    (folder / "README.md").write_text(card)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m twossp.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--plan", required=True, help="plan file: <results>/plans/<hash>.json")
    parser.add_argument(
        "--model",
        help="base model: a model key as twossp-run takes (model=<key>), a local folder or a "
        "hub id (default: the run's, from its run file)",
    )
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload to this hub repo")
    parser.add_argument("--private", action="store_true", help="create the hub repo private")
    parser.add_argument("--revision", help="hub revision of the base model")
    parser.add_argument(
        "--dtype",
        default="checkpoint",
        choices=["checkpoint", "auto", "float32", "bfloat16", "float16"],
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--device-map", help="e.g. auto, for models larger than one device")
    parser.add_argument("--max-shard-size", default="5GB")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    """Parse ``argv`` and export; returns the folder written (errors raise)."""
    from twossp.logs import progress_bars, quiet_libraries, show_progress

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    with progress_bars(show_progress(True)):
        out = export(
            args.plan,
            args.model,
            args.out,
            args.push_to_hub,
            revision=args.revision,
            dtype=args.dtype,
            device=args.device,
            device_map=args.device_map,
            max_shard_size=args.max_shard_size,
            private=args.private,
        )
    log.info("wrote %s", out)
    return out


def cli(argv: Sequence[str] | None = None) -> None:
    """The ``twossp-export`` command: :func:`main` with one-line errors (exit 2) and Ctrl-C
    as one line (exit 130); ``TWOSSP_DEBUG=1`` shows tracebacks."""
    from twossp.logs import exit_on_interrupt, exit_on_user_error

    try:
        main(argv)
    except KeyboardInterrupt as exc:
        exit_on_interrupt(exc, "twossp-export", "the output folder is written whole or not at all")
    except Exception as exc:  # one line for user errors; others re-raised as they are
        exit_on_user_error(exc, "twossp-export")


if __name__ == "__main__":
    cli()
