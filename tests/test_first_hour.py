"""A new user's first hour: every failure is one line, output is quiet, saved models are shareable.

The cases of issue 17 (items 4 to 6) a user meets first: a missing device, Ctrl-C, a SLURM
launcher off a cluster, ``python -m twossp.export --model <key>``, settings that are not
numbers; each metric printed once and no progress bars in redirected output; saved folders
that honour the umask and a tokenizer that loads as docs/pruned-models.md shows; ``threads``.
The command line's functions are called in-process; one subprocess sends a real SIGINT.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from experiments import run as cli_run
from tests.conftest import STORIES, needs_shared, run_spec
from twossp import logs, pipeline
from twossp.devices import check_device, use_threads
from twossp.plan import PrunePlan
from twossp.results import read_run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_shared()


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.fixture
def no_data(monkeypatch):
    """Reading the tokenizer (the first step of data preparation) or weights fails the test."""

    def refuse(*a, **k):
        raise AssertionError("data was prepared before the bad setting was reported")

    monkeypatch.setattr(pipeline, "load_tokenizer", refuse)
    monkeypatch.setattr(pipeline, "load_model", refuse)


# -- 4. every failure is one line ------------------------------------------------------------


def test_a_missing_cuda_is_refused_in_one_line_before_data_preparation(
    tmp_path, monkeypatch, no_data, capsys
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = run_spec(f"paths.results_dir={tmp_path}", "model.device=cuda", "model.dtype=float32")
    with pytest.raises(ValueError, match="^model.device=cuda but CUDA is not available") as info:
        pipeline.run(spec)
    with pytest.raises(SystemExit) as code:  # what the command line does with it
        logs.exit_on_user_error(info.value)
    assert code.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("[twossp] error: model.device=cuda but CUDA is not available")
    assert "model.device=cpu" in line


def test_a_device_index_beyond_the_gpus_and_a_misspelt_device_are_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"model.device=cuda:3 but .* 1 CUDA device\(s\)"):
        check_device("cuda:3")
    assert check_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="^model.device=gpu is not a device; use auto, cpu"):
        check_device("gpu")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sparsity=abc", "sparsity must be a number, got 'abc'"),
        ("seed=abc", "seed must be an integer, got 'abc'"),
        ("seed=1.5", "seed must be an integer, got 1.5"),
        ("calib.n_samples=many", "calib.n_samples must be an integer, got 'many'"),
        ("eval.max_windows=abc", "eval.max_windows must be an integer, got 'abc'"),
        ("threads=0", "threads must be a positive integer or null, got 0"),
        ("threads=two", "threads must be an integer, got 'two'"),
    ],
)
def test_settings_that_are_not_numbers_are_named(override, message):
    with pytest.raises(ValueError) as info:
        run_spec(override)
    assert str(info.value) == message


def test_ctrl_c_is_one_line_and_exit_130_in_process(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_run, "main", interrupted)
    monkeypatch.setattr(sys, "argv", ["twossp-run", "method=dense"])
    with pytest.raises(SystemExit) as code:
        cli_run.cli()
    assert code.value.code == 130
    assert _one_line(capsys.readouterr().err).startswith("[twossp] interrupted: ")


def test_ctrl_c_during_a_run_prints_one_line_and_exits_130(tmp_path):
    """A real SIGINT while the run evaluates (after its stage line says so)."""
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "run.py"),
        f"paths.results_dir={tmp_path}",
        "method=dense",
        "progress=false",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background jobs with SIGINT ignored, and Python
        # then never raises KeyboardInterrupt: give the run the default handler, as a terminal
        # would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []  # the stage lines, up to the longest stage (evaluation): interrupted there
    for line in proc.stdout:
        seen.append(line)
        if "evaluate:" in line:
            break
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("no exit 120 s after SIGINT:\n" + "".join(seen) + out + err) from None
    first = "".join(seen)
    assert "[twossp.pipeline]" in first and "evaluate:" in first, first + out + err
    assert proc.returncode == 130, out + err
    assert _one_line(err).startswith("[twossp] interrupted: the run in progress wrote no result")
    assert "[twossp] results:" not in out
    assert not list((tmp_path / "runs").glob("*.parquet"))


def test_a_slurm_launcher_off_a_cluster_is_one_line(capsys):
    with pytest.raises(SystemExit) as code:
        cli_run.check_launcher(["-m", "hydra/launcher=slurm", "method=dense"], which=lambda c: None)
    assert code.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("[twossp] error: hydra/launcher=slurm needs a SLURM cluster")
    assert "sbatch and srun are not on PATH" in line
    on_cluster = {"sbatch": "/usr/bin/sbatch", "srun": "/usr/bin/srun"}.get
    cli_run.check_launcher(["-m", "hydra/launcher=slurm"], which=on_cluster)  # no exit
    cli_run.check_launcher(["-m", "hydra/launcher=local"], which=lambda c: None)


def test_a_submitit_launcher_without_its_extra_is_one_line(monkeypatch, capsys):
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda m, *a: None if "submitit" in m else find(m, *a)
    )
    with pytest.raises(SystemExit) as code:
        cli_run.check_launcher(["-m", "hydra/launcher=local"], which=lambda c: "/bin/x")
    assert code.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("[twossp] error: hydra/launcher=local needs the") and "[slurm]" in line


def test_export_takes_a_model_key_as_twossp_run_does(tmp_path):
    from transformers import AutoModelForCausalLM

    from twossp.export import base_model_spec, export
    from twossp.modeling import ModelSpec, load_model
    from twossp.surgery import apply_plan

    for key in ("stories260k", "smollm2_135m"):
        assert base_model_spec(key) == run_spec(f"model={key}", "model.device=cpu").model
    with pytest.raises(ValueError, match="did you mean stories260k"):
        base_model_spec("storiez260k")
    plan = tmp_path / "plan.json"
    PrunePlan(attention=[1]).save(plan)
    out = export(plan, "stories260k", tmp_path / "out")
    loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    expected, _ = load_model(ModelSpec(str(STORIES), device="cpu"), with_tokenizer=False)
    apply_plan(expected, PrunePlan(attention=[1]))
    ids = torch.arange(3, 35).unsqueeze(0)
    assert torch.equal(loaded(input_ids=ids).logits, expected(input_ids=ids).logits)


def test_export_failures_are_one_line(tmp_path, capsys):
    from twossp.export import cli

    with pytest.raises(SystemExit) as code:
        cli(["--plan", str(tmp_path / "none.json"), "--model", "stories260k", "--out", "x"])
    assert code.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("[twossp-export] error: ") and "none.json" in line


# -- 5. quiet by default ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """One dense stories260K run with one thread, as the command line runs it."""
    tmp = tmp_path_factory.mktemp("dense")
    spec = run_spec(f"paths.results_dir={tmp}", "method=dense", "eval.max_windows=1", "threads=1")
    before = torch.get_num_threads(), {v: os.environ.get(v) for v in _THREAD_VARS}
    try:
        yield spec, pipeline.run(spec)
    finally:
        _restore_threads(*before)


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _restore_threads(threads: int, env: dict) -> None:
    torch.set_num_threads(threads)
    for var, value in env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def test_each_metric_is_printed_once(dense_run, caplog, capsys):
    spec, _ = dense_run
    caplog.set_level(logging.INFO)
    outcome = pipeline.run(dataclasses.replace(spec, force=True))  # its logs, captured
    cli_run.report(outcome)
    printed = capsys.readouterr().out + "\n".join(r.getMessage() for r in caplog.records)
    for ds in ("wikitext2", "c4", "ptb"):
        mentions = [line for line in printed.splitlines() if re.search(rf"ppl\W+{ds}\b", line)]
        assert len(mentions) == 1, mentions
    assert sum("achieved" in line for line in printed.splitlines()) == 1


class _Stream(io.StringIO):
    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def test_progress_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(terminal=False))
    assert run_spec("progress=true").progress is False  # redirected output
    monkeypatch.setattr(sys, "stderr", _Stream(terminal=True))
    assert run_spec("progress=true").progress is True
    assert run_spec("progress=false").progress is False


def test_progress_bars_off_silences_bars_that_libraries_force_on():
    from tqdm.auto import tqdm

    def drawn(**kwargs) -> str:
        out = io.StringIO()
        list(tqdm(range(3), file=out, mininterval=0, **kwargs))
        return out.getvalue()

    assert "3/3" in drawn(disable=False)  # the checks below can fail
    with logs.progress_bars(False):
        assert drawn(disable=False) == ""  # lm-eval passes disable=False
        assert drawn(desc="Converting GGUF") == ""  # transformers passes nothing
    assert "3/3" in drawn(disable=False)  # put back after the block
    with logs.progress_bars(True):
        assert "3/3" in drawn()


# -- 6. shareable folders, the tokenizer as the manual shows, threads ---------------------------


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


def test_saved_models_and_result_files_honour_the_umask(tmp_path, umask_002):
    from twossp.modeling import ModelSpec, load_model, save_pruned
    from twossp.results import Metric, RunRecord, to_frame, write_run

    model, tokenizer = load_model(ModelSpec(str(STORIES), device="cpu"))
    folder = save_pruned(model, tmp_path / "saved", tokenizer)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [folder, *folder.iterdir()]}
    assert modes["model.safetensors"] == "0o664"  # safetensors writes it 0o600
    assert modes["saved"] == "0o775"
    assert set(modes.values()) == {"0o775", "0o664"}, modes
    record = RunRecord("r", "h", "e", "m", "/m", "dense", {}, 0.0, 0.0, 1, 1, 1, 1, 0.0, 0)
    path = write_run(to_frame(record, [Metric("ppl", "c4", 1.0)]), tmp_path / "runs" / "h.parquet")
    assert oct(path.stat().st_mode & 0o777) == "0o664"


def test_a_custom_code_folder_loads_as_the_manual_shows_without_prompt_or_warning(
    tmp_path, monkeypatch, capsys
):
    import transformers

    from twossp.modeling import ModelSpec, load_model, save_pruned
    from twossp.surgery import apply_plan

    model, tokenizer = load_model(ModelSpec(str(STORIES), device="cpu"))
    apply_plan(model, PrunePlan(attention=[1]))
    folder = save_pruned(model, tmp_path / "custom", tokenizer)
    page = (ROOT / "docs" / "pruned-models.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "AutoTokenizer" in b]
    code = block.replace("results/models/<hash>", str(folder))
    loading, _, generating = code.partition("out = ")
    prompts = []
    monkeypatch.setattr("builtins.input", lambda *a: prompts.append(a) or "n")
    said = io.StringIO()
    handler = logging.StreamHandler(said)
    library = logging.getLogger("transformers")
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    library.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scope: dict = {}
            exec(loading, scope)  # the manual's lines, as a user pastes them
    finally:
        library.removeHandler(handler)
        transformers.logging.set_verbosity(level)
    assert prompts == [] and "[y/N]" not in capsys.readouterr().out
    assert said.getvalue() == "", said.getvalue()
    assert [str(w.message) for w in caught if "model of type" in str(w.message)] == []
    assert type(scope["tokenizer"]).__name__ == type(tokenizer).__name__
    exec("out = " + generating, scope)
    assert scope["out"].shape[1] > 1


def test_threads_are_applied_and_recorded_but_not_hashed(dense_run, tmp_path):
    spec, outcome = dense_run
    assert spec.threads == 1
    assert (
        spec.config_hash
        == run_spec(
            f"paths.results_dir={spec.results_dir}", "method=dense", "eval.max_windows=1"
        ).config_hash
    )
    frame = read_run(outcome.path)
    assert set(frame["threads"]) == {1}
    assert pq.read_schema(outcome.path).field("threads").type == pa.int64()
    # A file written before the column existed reads back with threads None.
    old = tmp_path / "old.parquet"
    pq.write_table(pq.read_table(outcome.path).drop(["threads"]), old)
    assert read_run(old)["threads"].isna().all()
    before = torch.get_num_threads(), {v: os.environ.get(v) for v in _THREAD_VARS}
    try:
        assert use_threads(2) == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        assert os.environ["MKL_NUM_THREADS"] == "2"
        assert use_threads(None) == 2  # null keeps what is set
    finally:
        _restore_threads(*before)


def test_byte_counts_print_as_integers_for_every_method():
    """weight_bytes printed 698880.0000 for a pruned stories260K and 1040128 for dense."""
    from types import SimpleNamespace

    def row(value):
        return SimpleNamespace(
            metric="weight_bytes", dataset=None, phase=None, value=value, unit="bytes",
            ci_low=None, ci_high=None,
        )  # fmt: skip

    assert cli_run._metric_line(row(698880.0)) == "weight_bytes = 698880 bytes"
    assert cli_run._metric_line(row(1040128.0)) == "weight_bytes = 1040128 bytes"
