"""The column reference of the record, written from its schema: ``docs/columns.md``.

The run file's columns and the unit file's columns are documented where they are defined
(:data:`twossp.results.RUN_COLUMNS`, :data:`~twossp.results.METRIC_COLUMNS`,
:data:`twossp.items.ITEM_COLUMNS_DOC`); the keys of a row's ``variant`` JSON are documented
here, by the rows that carry them. ``tests/test_columns.py`` checks that the page is current
and that every column and variant key of a real run is on it.

    python -m twossp.columns            # rewrite docs/columns.md
    python -m twossp.columns --check    # exit 1 when the page is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twossp.items import ITEM_COLUMNS_DOC
from twossp.results import METRIC_COLUMNS, PATTERN_COLUMNS, RUN_COLUMNS

PAGE = Path(__file__).resolve().parents[1] / "docs" / "columns.md"

# variant key -> (rows that carry it, meaning)
VARIANT_KEYS: dict[str, tuple[str, str]] = {
    "dataset": ("ppl", "the corpus's name"),
    "source": ("ppl, acc", "where the text or task data came from (file name, or hub id)"),
    "split": ("ppl", "the corpus split"),
    "join": ("ppl", "string joining the documents into one stream"),
    "special_tokens": ("ppl", "whether the tokenizer added special tokens"),
    "docs": ("ppl", "documents joined into the stream"),
    "stream_windows": ("ppl", "cap on the stream's windows set by the dataset (null: none)"),
    "seqlen": ("ppl, prefill", "tokens per evaluation window"),
    "windows": ("ppl", "windows scored"),
    "windows_available": ("ppl", "whole windows in the stream"),
    "max_windows": ("ppl", "eval.max_windows (null: every window)"),
    "window_sample": ("ppl", "which windows when fewer than all: spread or first"),
    "tokens": ("ppl", "tokens predicted over all windows"),
    "window_nll": ("ppl", "mean NLL of each scored window, nats per token, in stream order"),
    "task_version": ("acc", "lm-eval's version of the task"),
    "num_fewshot": ("acc", "shots per prompt"),
    "limit": ("acc", "documents per (sub)task kept (null: all)"),
    "samples": ("acc", "documents scored"),
    "subtasks": ("acc", "leaf tasks of a group (MMLU: 57)"),
    "stderr": ("acc", "lm-eval's standard error of the value"),
    "device": ("inference", "device kind"),
    "device_name": ("inference", "the processor or GPU the timing ran on"),
    "dtype": ("inference", "dtype of the timed model"),
    "batch_size": ("inference", "sequences per forward (1)"),
    "threads": ("inference", "CPU threads torch used"),
    "torch": ("inference", "torch version"),
    "clock": ("prefill_latency", "perf_counter (CPU) or cuda events"),
    "warmup": ("prefill_latency", "untimed forwards before timing"),
    "repeats": ("prefill_latency, decode", "timed repetitions"),
    "times_ms": ("prefill_latency", "every timed forward, ms"),
    "min": ("prefill_latency, decode", "smallest of the repetitions"),
    "q1": ("prefill_latency, decode", "first quartile of the repetitions"),
    "q3": ("prefill_latency, decode", "third quartile of the repetitions"),
    "max": ("prefill_latency, decode", "largest of the repetitions"),
    "prompt_tokens": ("decode_throughput", "tokens of the prompt"),
    "new_tokens": ("decode_throughput", "tokens generated per timed call"),
    "warmup_tokens": ("decode_throughput", "tokens of the untimed warm-up generate"),
    "greedy": ("decode_throughput", "greedy decoding"),
    "kv_cache": ("decode_throughput", "decoding with the KV cache"),
    "includes_prompt_prefill": ("decode_throughput", "whether the rate counts the prompt"),
    "seconds": ("decode_throughput", "each timed generate call, s"),
    "first_token_seconds": ("decode_throughput", "each one-token generate call, s"),
    "end_to_end_tokens_per_s": ("decode_throughput", "rate of the whole call, prompt included"),
    "attention_blocks": ("kv_cache_bytes_per_token", "blocks that keep attention"),
    "blocks": ("kv_cache_bytes_per_token", "decoder blocks"),
    "kv_heads": ("kv_cache_bytes_per_token", "key/value heads per attention"),
    "head_dim": ("kv_cache_bytes_per_token", "dimension of a head"),
    "measured_bytes_per_token": ("kv_cache_bytes_per_token", "the same read off a real cache"),
    "measure": ("prefill_peak_bytes", "how the peak was measured"),
    "total_bytes": ("prefill_peak_bytes", "peak including what was allocated before (CUDA)"),
    "per_device_bytes": ("peak_memory_gib", "peak per CUDA device"),
}


def _cell(value) -> str:
    return "" if value is None else str(value).replace("|", "\\|")


def _rows(columns) -> list[str]:
    return [
        f"| `{name}` | {_cell(kind)} | {_cell(unit)} | {_cell(meaning)} |"
        for name, kind, unit, meaning in columns
    ]


def render() -> str:
    """The page's Markdown."""
    head = "| column | type | unit | meaning |\n|---|---|---|---|"
    lines = [
        "# The record's columns",
        "",
        "Generated from the schema by `python -m twossp.columns`; do not edit by hand.",
        "",
        "## Run files: `results/runs/<config_hash>.parquet`",
        "",
        "One row per measured value. The run's columns repeat on every row of the run.",
        "",
        head,
        *_rows(RUN_COLUMNS + METRIC_COLUMNS + PATTERN_COLUMNS),
        "",
        "## Keys of `variant` (JSON)",
        "",
        "| key | rows | meaning |\n|---|---|---|",
        *[f"| `{k}` | {rows} | {_cell(m)} |" for k, (rows, m) in VARIANT_KEYS.items()],
        "",
        "## Unit files: `results/items/<config_hash>.parquet`",
        "",
        "One row per evaluation window or document, for paired comparisons between runs "
        "scored on the same units (`twossp/items.py`).",
        "",
        head,
        *_rows(ITEM_COLUMNS_DOC),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/columns.md from the schema.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is out of date: run python -m twossp.columns", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
