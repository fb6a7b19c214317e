"""Text for perplexity and calibration, from the hub or from local files.

Each corpus is a :class:`TextDataset`: where it lives on the hub, optionally a local copy
(a ``.txt`` file with one document per line, a ``.jsonl`` file, or a folder written by
``datasets.save_to_disk``), and how its documents are joined into one token stream. With a
``local_path`` set the hub is never contacted.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class MissingDatasetError(FileNotFoundError):
    """A configured local dataset path does not exist."""


@dataclass
class TextDataset:
    """One text corpus.

    Attributes:
        name: short key (``wikitext2``, ``c4``, ``ptb``, ``fineweb_edu``).
        hub_path / hub_name / split / data_files / revision: ``datasets.load_dataset`` args;
            ``data_files`` (files inside the repo) are read as the ``split`` split.
        field: the text column.
        local_path: a local copy; when set it is used instead of the hub.
        join: string placed between documents.
        max_docs: keep only the first ``max_docs`` documents (C4 validation: 1100).
        max_windows: cap the token stream at this many evaluation windows (C4: 256).
        streaming: stream from the hub (large corpora such as FineWeb-Edu).
    """

    name: str
    hub_path: str | None = None
    hub_name: str | None = None
    split: str = "test"
    data_files: str | None = None
    revision: str | None = None
    field: str = "text"
    local_path: str | None = None
    join: str = "\n\n"
    max_docs: int | None = None
    max_windows: int | None = None
    streaming: bool = False

    def check(self) -> None:
        """Fail before any heavy work if the data cannot be found."""
        if self.local_path is not None and not Path(self.local_path).expanduser().exists():
            raise MissingDatasetError(
                f"dataset {self.name!r}: local path {self.local_path!r} does not exist "
                "(unset local_path to read it from the hub)"
            )
        if self.local_path is None and self.hub_path is None:
            raise ValueError(f"dataset {self.name!r} has neither local_path nor hub_path")

    def source(self) -> str:
        return f"local:{self.local_path}" if self.local_path else f"hub:{self.hub_path}"


def load_documents(ds: TextDataset) -> list[str]:
    """The corpus as a list of documents, in file order, truncated to ``max_docs``."""
    ds.check()
    docs = _read_local(ds) if ds.local_path else _read_hub(ds)
    return docs[: ds.max_docs] if ds.max_docs else docs


def _read_local(ds: TextDataset) -> list[str]:
    path = Path(ds.local_path).expanduser()
    if path.is_dir():
        import datasets

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            data = data[ds.split]
        return list(data[ds.field])
    if path.suffix == ".jsonl":
        docs = []
        with path.open() as f:
            for line in f:
                if line.strip():
                    docs.append(json.loads(line)[ds.field])
                if ds.max_docs and len(docs) >= ds.max_docs:
                    break
        return docs
    return [line for line in path.read_text().splitlines() if line.strip()]


def _read_hub(ds: TextDataset) -> list[str]:
    import datasets

    data = datasets.load_dataset(
        ds.hub_path,
        ds.hub_name,
        split=ds.split,
        # A bare file list becomes datasets' "train" split; name it after the split we want.
        data_files={ds.split: ds.data_files} if ds.data_files else None,
        revision=ds.revision,
        streaming=ds.streaming,
    )
    if ds.streaming:
        rows = data.take(ds.max_docs) if ds.max_docs else data
        return [row[ds.field] for row in rows]
    if ds.max_docs:
        data = data.select(range(min(ds.max_docs, len(data))))
    return list(data[ds.field])


_STREAMS: dict[tuple, tuple[torch.Tensor, dict]] = {}


def token_stream(tokenizer, ds: TextDataset, seqlen: int) -> tuple[torch.Tensor, dict]:
    """Tokenize the joined corpus; returns the 1-D ids and a description of the variant.

    Results are memoised per (tokenizer, dataset, seqlen) so a multirun tokenizes once.
    """
    key = (getattr(tokenizer, "name_or_path", id(tokenizer)), json.dumps(asdict(ds)), seqlen)
    if key not in _STREAMS:
        docs = load_documents(ds)
        text = ds.join.join(docs)
        ids = tokenizer(text, return_tensors="pt").input_ids.reshape(-1)
        if ds.max_windows:
            ids = ids[: ds.max_windows * seqlen]
        variant = {
            "dataset": ds.name,
            "source": ds.source(),
            "split": ds.split,
            "join": ds.join,
            "docs": len(docs),
            "max_windows": ds.max_windows,
        }
        _STREAMS[key] = (ids, variant)
    return _STREAMS[key]


@dataclass
class CalibrationSpec:
    """Calibration samples: ``n_samples`` windows of ``seqlen`` tokens from ``dataset``."""

    dataset: TextDataset
    n_samples: int = 32
    seqlen: int = 2048
    seed: int = 0


def calibration_samples(tokenizer, spec: CalibrationSpec) -> torch.Tensor:
    """``[n_samples, seqlen]`` token ids.

    As in the 2SSP authors' code, documents are shuffled, joined with the dataset's join
    string, tokenized without special tokens and cut into consecutive windows. (Their code
    shuffles only when the seed is non-zero; here every seed, 0 included, shuffles.)
    """
    if spec.n_samples < 1 or spec.seqlen < 2:
        raise ValueError(
            f"need n_samples >= 1 and seqlen >= 2, got {spec.n_samples}, {spec.seqlen}"
        )
    docs = load_documents(spec.dataset)
    order = list(range(len(docs)))
    random.Random(spec.seed).shuffle(order)
    need = spec.n_samples * spec.seqlen
    ids = torch.empty(0, dtype=torch.long)
    take = 16
    while True:
        text = spec.dataset.join.join(docs[j] for j in order[:take])
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.reshape(-1)
        if ids.numel() >= need or take >= len(order):
            break
        take *= 2
    if ids.numel() < need:
        raise ValueError(
            f"calibration needs {need} tokens ({spec.n_samples} x {spec.seqlen}); "
            f"{spec.dataset.name} has only {ids.numel()}"
        )
    return ids[:need].view(spec.n_samples, spec.seqlen)
