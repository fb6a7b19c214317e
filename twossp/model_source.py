"""Where a model's weights come from, and what identifies them.

A :class:`twossp.modeling.ModelSpec` names a local folder or a hub id, optionally a GGUF file
inside the folder and a hub id to fall back on when the folder is absent. This module turns
that into a :class:`Source` (the folder or hub id ``from_pretrained`` reads) and an identity
that changes whenever the weights do:

- a local folder (or GGUF file) is identified by a fingerprint of its weight files' contents
  (size and SHA-256 of the first and last MiB of each, plus the whole ``config.json``), not by
  its path, so a moved copy keeps its results;
- a hub id is identified by the commit its revision resolves to (read from the local HF cache,
  else asked of the hub), so a repository that moves on gets new results.

GGUF checkpoints (quantized weights that transformers dequantizes on every load, tens of
seconds for SmolLM2-135M) are dequantized once and kept as a plain Hugging Face folder under
``cache_dir``, keyed by the GGUF file's fingerprint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from twossp.extras import require
from twossp.io import current_umask

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_CHUNK = 1 << 20
_FINGERPRINTS: dict[tuple, str] = {}


def default_cache_dir() -> Path:
    """``$TWOSSP_CACHE`` or ``~/.cache/twossp``: dequantized GGUF copies live here."""
    return Path(os.environ.get("TWOSSP_CACHE", Path.home() / ".cache" / "twossp")).expanduser()


def looks_local(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names a filesystem path rather than a hub id."""
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).expanduser().exists()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")


def file_fingerprint(path: Path) -> str:
    """Size plus SHA-256 of the first and last MiB of ``path`` (cheap on multi-GB files)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256(str(stat.st_size).encode())
        with path.open("rb") as f:
            digest.update(f.read(_CHUNK))
            if stat.st_size > 2 * _CHUNK:
                f.seek(-_CHUNK, os.SEEK_END)
                digest.update(f.read(_CHUNK))
            elif stat.st_size > _CHUNK:
                digest.update(f.read())
        _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]


def path_fingerprint(path: Path) -> str:
    """Fingerprint of a file, or of every file under a folder (data copies)."""
    if path.is_file():
        return file_fingerprint(path)
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        digest.update(f"{p.relative_to(path)}:{file_fingerprint(p)}\n".encode())
    return digest.hexdigest()[:16]


def folder_fingerprint(folder: Path, gguf_file: str | None = None) -> str:
    """Fingerprint of a local checkpoint: its weight files (or the one GGUF file) and config."""
    if gguf_file is not None:
        files = [folder / gguf_file]
    else:
        files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}:{file_fingerprint(p)}\n".encode())
    config = folder / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    if not files and not config.exists():
        raise FileNotFoundError(f"{folder} holds no weights and no config.json")
    return digest.hexdigest()[:16]


@functools.cache
def hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit ``revision`` of hub repo ``repo`` resolves to: from the HF cache when it
    holds the repo's config, else from the hub (None when neither can say).

    Asked once per process for each ``(repo, revision)``: a sweep hashes every point
    (and each run records the commit again) without a hub round trip each time, and every
    point of one sweep names the same commit even if the branch moves meanwhile."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json", revision=revision)
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    if hub_offline():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo, revision=revision).sha
    except Exception as exc:  # network, auth, missing repo: the load reports it properly
        log.debug("cannot resolve the commit of %s@%s: %s", repo, revision, exc)
        return None


@dataclass(frozen=True)
class Source:
    """What ``from_pretrained`` reads for a spec, and what identifies those weights.

    Attributes:
        path: a local folder or a hub id.
        gguf_file: a GGUF file inside ``path`` (local only), or None.
        local: whether ``path`` is a local folder.
        revision: the hub revision asked for (hub only).
    """

    path: str
    gguf_file: str | None = None
    local: bool = True
    revision: str | None = None

    def identity(self) -> dict:
        """Everything that pins these weights: hashed into every result's config hash."""
        if self.local:
            fingerprint = folder_fingerprint(Path(self.path).expanduser(), self.gguf_file)
            return {"kind": "local", "gguf_file": self.gguf_file, "fingerprint": fingerprint}
        commit = hub_commit(self.path, self.revision)
        return {"kind": "hub", "repo": self.path, "revision": self.revision, "commit": commit}


def check_weights(source: Source) -> None:
    """A local folder must hold weight files ``from_pretrained`` reads (checked with the
    config, before any tokenizing); a GGUF source names its file (checked in :func:`resolve`).

    Raises:
        FileNotFoundError: naming the folder, and the GGUF file to name when it holds one.
    """
    folder = Path(source.path).expanduser()
    if not source.local or source.gguf_file is not None or not folder.is_dir():
        return
    weights = [p.name for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    if any(not name.endswith(".gguf") for name in weights):
        return
    if weights:
        raise FileNotFoundError(
            f"model folder {str(folder)!r} holds only GGUF weights ({', '.join(sorted(weights))}); "
            f"set model.gguf_file={sorted(weights)[0]}"
        )
    raise FileNotFoundError(
        f"model folder {str(folder)!r} holds no weight files "
        f"({', '.join('*' + s for s in WEIGHT_SUFFIXES)}); point model.name_or_path at a "
        "folder with the weights"
    )


def resolve(name_or_path: str, gguf_file=None, hub_fallback=None, revision=None) -> Source:
    """The source to read: the local folder when present, else the hub fallback, else the
    name itself as a hub id.

    Raises:
        FileNotFoundError: a path that does not exist and no hub fallback to use instead.
    """
    if looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if path.exists():
            if gguf_file is not None and not (path / gguf_file).is_file():
                raise FileNotFoundError(f"model.gguf_file {gguf_file!r} is not in {path}")
            return Source(str(path), gguf_file, True)
        if hub_fallback is None:
            raise FileNotFoundError(
                f"model path {name_or_path!r} does not exist (and model.hub_fallback is not set)"
            )
        log.info("model folder %s is absent; using the hub copy %s", name_or_path, hub_fallback)
        return Source(hub_fallback, None, False, revision)
    return Source(name_or_path, None, False, revision)


def dequantized_copy(source: Source, cache_dir: str | Path | None = None) -> Source:
    """A plain Hugging Face folder holding ``source``'s GGUF weights in float32 (made once).

    Non-GGUF sources are returned unchanged. The copy is keyed by the GGUF file's fingerprint,
    so an edited file gets a new copy; it is written to a temporary folder and renamed into
    place, so an interrupted first load leaves nothing half-written.
    """
    if source.gguf_file is None:
        return source
    target = _copy_folder(source, cache_dir)
    if not (target / "config.json").exists():
        _dequantize(source, target)
    return Source(str(target), None, True)


def _copy_folder(source: Source, cache_dir: str | Path | None) -> Path:
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    fingerprint = folder_fingerprint(Path(source.path), source.gguf_file)
    return cache / "gguf" / f"{Path(source.gguf_file).stem}-{fingerprint}"


def config_source(source: Source, cache_dir: str | Path | None = None) -> Source:
    """Where the config is cheapest to read: a GGUF model's dequantized copy once it exists
    (parsing the GGUF file's metadata takes seconds), else the source itself."""
    if source.gguf_file is None:
        return source
    copy = _copy_folder(source, cache_dir)
    return Source(str(copy), None, True) if (copy / "config.json").exists() else source


def _dequantize(source: Source, target: Path) -> None:
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require("gguf", "gguf", f"the GGUF checkpoint {source.gguf_file}")
    log.info("dequantizing %s/%s once into %s", source.path, source.gguf_file, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; others may share the cache
    kwargs = {"gguf_file": source.gguf_file}
    model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source.path, **kwargs)
    # The weights are plain tensors now; without the GGUF marker the folder loads as usual.
    model.config.quantization_config = None
    if hasattr(model.config, "_pre_quantization_dtype"):
        del model.config._pre_quantization_dtype
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text())
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (tmp / "twossp_source.json").write_text(
        json.dumps({"gguf": str(Path(source.path) / source.gguf_file)}, indent=2)
    )
    for f in tmp.iterdir():
        f.chmod(0o666 & ~current_umask())
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first: keep its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
