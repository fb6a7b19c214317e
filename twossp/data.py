"""Text for perplexity and calibration, from the hub or from local files.

Each corpus is a :class:`TextDataset`: where it lives on the hub, optionally a local copy
(a ``.txt`` file with one document per line, a ``.jsonl`` file, or a folder written by
``datasets.save_to_disk``), and how its documents become one token stream. With a
``local_path`` set the hub is never contacted.

The streams follow the 2SSP authors' code (``main.py``, ``src/utilities.py``): documents in
file order, joined with ``join`` ("\\n\\n"), tokenized once without special tokens; evaluation
scores every non-overlapping window of the stream; calibration cuts the first ``n_samples``
consecutive windows (fewer when the corpus holds fewer), after shuffling the documents only
for a non-zero seed.
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


class DatasetFormatError(ValueError):
    """A local dataset file that cannot be read as documents (names the file and line)."""


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
        special_tokens: let the tokenizer add its special tokens (BOS) to the stream; the
            2SSP authors tokenize without them.
        max_docs: keep only the first ``max_docs`` documents (C4 validation: 1100).
        stream_windows: keep only the first ``stream_windows`` windows of the token stream
            (the SparseGPT convention for C4 is 256; the 2SSP authors keep them all).
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
    special_tokens: bool = False
    max_docs: int | None = None
    stream_windows: int | None = None
    streaming: bool = False

    def check(self) -> None:
        """Fail before any heavy work if the data cannot be found or read."""
        if self.local_path is not None and not Path(self.local_path).expanduser().exists():
            raise MissingDatasetError(
                f"dataset {self.name!r}: local path {self.local_path!r} does not exist "
                "(unset local_path to read it from the hub)"
            )
        if self.local_path is None and self.hub_path is None:
            raise ValueError(f"dataset {self.name!r} has neither local_path nor hub_path")
        for key in ("max_docs", "stream_windows"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"dataset {self.name!r}: {key} must be >= 1 or null, got {value}")

    def source(self) -> str:
        """Where the text is read from on this machine (for messages)."""
        return f"local:{self.local_path}" if self.local_path else f"hub:{self.hub_path}"

    def recorded_source(self) -> str:
        """Where the text came from, as a record keeps it: a local copy by its file name and
        the fingerprint of its contents (``local:ptb_test.txt@3f2a...``; no path of this
        machine, and a moved copy records alike), a hub dataset by its id."""
        if not self.local_path:
            return f"hub:{self.hub_path}"
        from twossp.model_source import path_fingerprint

        path = Path(self.local_path).expanduser()
        return f"local:{path.name}@{path_fingerprint(path)}"


_DOCS: dict[str, list[str]] = {}


def load_documents(ds: TextDataset) -> list[str]:
    """The corpus as a list of documents, in file order, truncated to ``max_docs``.

    Read once per process and dataset. Raises :class:`DatasetFormatError` naming the file
    (and line) of a local file that is empty, not UTF-8, not JSON or lacks the field.
    """
    ds.check()
    key = json.dumps(asdict(ds), sort_keys=True)
    if key not in _DOCS:
        docs = _read_local(ds) if ds.local_path else _read_hub(ds)
        docs = docs[: ds.max_docs] if ds.max_docs else docs
        if not docs:
            raise DatasetFormatError(f"dataset {ds.name!r} ({ds.source()}) holds no documents")
        _DOCS[key] = docs
    return _DOCS[key]


def _read_local(ds: TextDataset) -> list[str]:
    path = Path(ds.local_path).expanduser()
    if path.is_dir():
        import datasets

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            data = data[ds.split]
        if ds.field not in data.column_names:
            raise DatasetFormatError(
                f"{path}: no column {ds.field!r} (columns: {data.column_names}); set the "
                "dataset's field"
            )
        return list(data[ds.field])
    if path.suffix == ".jsonl":
        return _read_jsonl(path, ds.field, ds.max_docs)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    return [line for line in text.splitlines() if line.strip()]


def _read_jsonl(path: Path, field: str, max_docs: int | None) -> list[str]:
    docs = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetFormatError(f"{where}: not UTF-8 ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or field not in row:
                keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise DatasetFormatError(f"{where}: no field {field!r} (has {keys})")
            docs.append(str(row[field]))
            if max_docs and len(docs) >= max_docs:
                break
    return docs


def _read_hub(ds: TextDataset) -> list[str]:
    import datasets

    try:
        data = datasets.load_dataset(
            ds.hub_path,
            ds.hub_name,
            split=ds.split,
            # A bare file list becomes datasets' "train" split; name it after the split we want.
            data_files={ds.split: ds.data_files} if ds.data_files else None,
            revision=ds.revision,
            streaming=ds.streaming,
        )
    except OSError as exc:  # offline, unreachable, not cached (ConnectionError is an OSError)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(
            f"dataset {ds.name!r}: cannot read {ds.hub_path} from the hub ({reason}); run "
            "where the hub is reachable or give the dataset a local_path"
        ) from exc
    if ds.streaming:
        rows = data.take(ds.max_docs) if ds.max_docs else data
        return [row[ds.field] for row in rows]
    if ds.max_docs:
        data = data.select(range(min(ds.max_docs, len(data))))
    return list(data[ds.field])


def tokenize(tokenizer, text: str, special_tokens: bool = False) -> torch.Tensor:
    """1-D token ids of ``text`` (one call, as the authors' code makes it)."""
    # verbose=False: a whole corpus is longer than the model's context on purpose.
    ids = tokenizer(
        text, return_tensors="pt", add_special_tokens=special_tokens, verbose=False
    ).input_ids
    return ids.reshape(-1)


_STREAMS: dict[tuple, tuple[torch.Tensor, dict]] = {}


def token_stream(tokenizer, ds: TextDataset, seqlen: int) -> tuple[torch.Tensor, dict]:
    """Tokenize the joined corpus; returns the 1-D ids and a description of the variant.

    Results are memoised per (tokenizer, dataset, seqlen) so a multirun tokenizes once.
    """
    key = (getattr(tokenizer, "name_or_path", id(tokenizer)), json.dumps(asdict(ds)), seqlen)
    if key not in _STREAMS:
        docs = load_documents(ds)
        ids = tokenize(tokenizer, ds.join.join(docs), ds.special_tokens)
        if ds.stream_windows:
            ids = ids[: ds.stream_windows * seqlen]
        variant = {
            "dataset": ds.name,
            "source": ds.recorded_source(),
            "split": ds.split,
            "join": ds.join,
            "special_tokens": ds.special_tokens,
            "docs": len(docs),
            "stream_windows": ds.stream_windows,
        }
        _STREAMS[key] = (ids, variant)
    return _STREAMS[key]


PACKINGS = ("stream", "documents")


@dataclass
class CalibrationSpec:
    """Calibration samples: ``n_samples`` windows of ``seqlen`` tokens from ``dataset``.

    Attributes:
        packing: ``stream`` joins every document with the dataset's join string, tokenizes
            the whole text once and cuts consecutive windows (the 2SSP authors'
            ``get_calibration``); ``documents`` tokenizes document by document, appends the
            tokens of the join string after each, and closes a window once it holds
            ``seqlen`` tokens, dropping the overflow (EvoPress's ``collect_samples_with_join``,
            used by the authors for EvoPress's calibration pool).
        seed: 0 keeps the documents in file order; any other value shuffles them first with
            ``random.Random(seed)`` (the authors' rule: their seed 0 means no shuffle).
    """

    dataset: TextDataset
    n_samples: int = 256
    seqlen: int = 2048
    seed: int = 0
    packing: str = "stream"

    def check(self) -> None:
        if self.n_samples < 1 or self.seqlen < 2:
            raise ValueError(
                f"calibration needs n_samples >= 1 and seqlen >= 2, got "
                f"calib.n_samples={self.n_samples}, calib.seqlen={self.seqlen}"
            )
        if self.packing not in PACKINGS:
            raise ValueError(f"calib.packing must be one of {PACKINGS}, got {self.packing!r}")
        self.dataset.check()


def document_order(n_docs: int, seed: int) -> list[int]:
    """File order for seed 0, else a ``random.Random(seed)`` shuffle of it."""
    order = list(range(n_docs))
    if seed != 0:
        random.Random(seed).shuffle(order)
    return order


_CALIBRATION: dict[tuple, torch.Tensor] = {}


def calibration_samples(tokenizer, spec: CalibrationSpec) -> torch.Tensor:
    """``[n, seqlen]`` token ids, ``n = min(n_samples, complete windows the corpus holds)``
    (see :class:`CalibrationSpec` for the packing).

    A corpus with fewer complete windows than ``n_samples`` gives those it holds (possibly
    none): the caller decides whether that is enough and says so. The authors'
    ``get_calibration`` does not check either: past the end of the stream it hands out a
    partial window and then empty ones; here only complete windows are returned.

    Memoised per (tokenizer, spec); the ``stream`` packing tokenizes the corpus once per
    (tokenizer, dataset, seed), so the methods of a sweep that read different numbers of
    windows share one tokenization.
    """
    spec.check()
    key = (getattr(tokenizer, "name_or_path", id(tokenizer)), json.dumps(asdict(spec)))
    if key not in _CALIBRATION:
        _CALIBRATION[key] = _calibration_samples(tokenizer, spec)
    return _CALIBRATION[key]


_CALIBRATION_STREAMS: dict[tuple, torch.Tensor] = {}


def _calibration_stream(tokenizer, ds: TextDataset, seed: int) -> torch.Tensor:
    key = (getattr(tokenizer, "name_or_path", id(tokenizer)), json.dumps(asdict(ds)), seed)
    if key not in _CALIBRATION_STREAMS:
        docs = load_documents(ds)
        docs = [docs[j] for j in document_order(len(docs), seed)]
        _CALIBRATION_STREAMS[key] = tokenize(tokenizer, ds.join.join(docs))
    return _CALIBRATION_STREAMS[key]


def _calibration_samples(tokenizer, spec: CalibrationSpec) -> torch.Tensor:
    if spec.packing == "documents":
        docs = load_documents(spec.dataset)
        docs = [docs[j] for j in document_order(len(docs), spec.seed)]
        return _pack_documents(tokenizer, docs, spec)
    ids = _calibration_stream(tokenizer, spec.dataset, spec.seed)
    n = min(spec.n_samples, ids.numel() // spec.seqlen)
    return ids[: n * spec.seqlen].view(n, spec.seqlen)


def _pack_documents(tokenizer, docs: list[str], spec: CalibrationSpec) -> torch.Tensor:
    separator = tokenize(tokenizer, spec.dataset.join)
    windows, current = [], []
    size = 0
    for doc in docs:
        ids = tokenize(tokenizer, doc)
        current.append(ids)
        size += ids.numel()
        if size >= spec.seqlen:
            windows.append(torch.cat(current)[: spec.seqlen])
            current, size = [], 0
            if len(windows) >= spec.n_samples:
                break
        else:
            current.append(separator)
            size += separator.numel()
    if not windows:
        return torch.empty(0, spec.seqlen, dtype=torch.long)
    return torch.stack(windows)
