"""Every bad input fails in ``prepare`` (before any weights load) with a message naming the file
or setting, and the command line prints it as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import STORIES, TEXT, needs_shared, run_spec
from twossp import pipeline
from twossp.data import DatasetFormatError, MissingDatasetError
from twossp.results import run_path
from twossp.sparsity import UnreachableSparsityError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_shared()


def _spec(tmp_path, *overrides):
    return run_spec(f"paths.results_dir={tmp_path}", "progress=false", *overrides)


@pytest.fixture
def no_weights(monkeypatch):
    """Any attempt to load weights fails the test."""

    def refuse(*a, **k):
        raise AssertionError("weights were loaded before the bad input was reported")

    monkeypatch.setattr(pipeline, "load_model", refuse)


def _bad_file(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


CASES = {
    "seqlen": (["eval.seqlen=1"], ValueError, "eval.seqlen must be >= 2"),
    "max_windows": (["eval.max_windows=0"], ValueError, "eval.max_windows must be >= 1"),
    "window_sample": (["eval.window_sample=random"], ValueError, "one of spread, first"),
    "document_sample": (
        ["eval=downstream", "eval.downstream.sample=head"],
        ValueError,
        "downstream.sample must be one of random, first",
    ),
    "batch_size": (["eval.batch_size=lots"], ValueError, "batch_size must be a positive"),
    "calib_n": (["calib.n_samples=0"], ValueError, "calib.n_samples=0"),
    "sparsity": (["sparsity=1.2"], ValueError, r"\(0, 1\)"),
    "unreachable": (["method=shortgpt", "sparsity=0.95"], UnreachableSparsityError, "all 5"),
    "slicegpt_width": (["method=slicegpt", "sparsity=0.99"], UnreachableSparsityError, "dim"),
    "model": (["model.name_or_path=/nonexistent/model"], FileNotFoundError, "/nonexistent"),
    "missing_corpus": (
        ["eval.datasets.ptb.local_path=/nonexistent/ptb.txt"],
        MissingDatasetError,
        "/nonexistent/ptb.txt",
    ),
    "nothing": (["eval.use=[]"], ValueError, "nothing to evaluate"),
    "too_few_windows": (
        ["method.n_calib_stage1=3000", "method.n_calib_stage2=3000", "calib.n_samples=3000"],
        ValueError,
        "holds 2583 complete .* needs method.n_calib_stage2=3000",
    ),
    "unknown_setting": (["+method.alfa=2"], ValueError, "Did you mean alpha"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_settings_fail_before_loading(case, tmp_path, no_weights):
    overrides, error, message = CASES[case]
    with pytest.raises(error, match=message):
        pipeline.run(_spec(tmp_path, *overrides))
    assert not run_path(tmp_path, "x").parent.exists() or not any(
        run_path(tmp_path, "x").parent.iterdir()
    )


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "holds no documents"),
        (b'{"text": "a"}\nnot json\n', r":2: not JSON"),
        (b'{"body": "a"}\n', r":1: no field 'text'"),
        (b'{"text": "caf\xe9"}\n', r":1: not UTF-8"),
    ],
)
def test_bad_corpus_files_name_the_file_and_line(content, message, tmp_path, no_weights):
    path = _bad_file(tmp_path, "c4.jsonl", content)
    with pytest.raises(DatasetFormatError, match=message) as info:
        pipeline.run(_spec(tmp_path, f"calib.dataset.local_path={path}"))
    assert path in str(info.value)


def test_a_text_file_that_is_not_utf8_is_named(tmp_path, no_weights):
    path = _bad_file(tmp_path, "wiki.txt", b"ok\n\xff\xfe broken\n")
    with pytest.raises(DatasetFormatError, match="not UTF-8"):
        pipeline.run(_spec(tmp_path, f"eval.datasets.wikitext2.local_path={path}"))


def test_an_unreachable_hub_corpus_fails_before_pruning(tmp_path, no_weights, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(OSError) as info:  # offline and not cached
        pipeline.run(_spec(tmp_path, "eval.use=[wikitext2,fineweb_edu]"))
    assert str(info.value).startswith(
        "dataset 'fineweb_edu': cannot read HuggingFaceFW/fineweb-edu"
    )
    assert "local_path" in str(info.value)


def _cli(tmp_path, *args, env=None):
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)


def test_the_command_line_prints_one_line(tmp_path):
    out = _cli(tmp_path, f"paths.results_dir={tmp_path}", "method=shortgpt", "sparsity=0.95")
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "[twossp] error" in line]
    assert len(errors) == 1 and "remove all 5" in errors[0]
    assert "Traceback" not in out.stderr


def test_a_mistyped_method_setting_gets_did_you_mean(tmp_path):
    out = _cli(tmp_path, "method.alfa=2")
    assert out.returncode == 2 and "did you mean alpha?" in out.stderr
    assert "+method.alfa" not in out.stderr


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("method=twosp", "no method 'twosp' in conf/method/; did you mean twossp?"),
        (
            "model=stories260k,smollm2_13m",
            "no model 'smollm2_13m' in conf/model/; did you mean smollm2_135m?",
        ),
        ("protocol=fair", "no protocol 'fair' in conf/protocol/; known: matched, paper"),
    ],
)
def test_an_unknown_config_choice_gets_one_line(capsys, arg, expected):
    from experiments.run import check_group_choices  # what the CLI calls before Hydra

    with pytest.raises(SystemExit) as info:
        check_group_choices([arg])
    stderr = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in stderr
    [line] = [x for x in stderr.splitlines() if x.strip()]
    assert line == f"[twossp] error: {expected}"


def test_missing_assets_and_no_hub_fail_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _cli(tmp_path, "model=smollm2_135m", env={"TWOSSP_SHARED": str(empty)})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    [line] = [x for x in out.stderr.splitlines() if "[twossp] error" in x]
    assert "TWOSSP_SHARED" in line and "does not exist" in line


def test_a_corrupt_result_file_is_recomputed(tmp_path):
    spec = _spec(tmp_path, "method=dense", "eval.max_windows=1", "eval.use=[ptb]")
    path = run_path(tmp_path, spec.config_hash)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 truncated")
    assert pipeline.run(spec).status == "done"
    assert pipeline.run(spec).status == "skipped"


def test_save_model_on_a_finished_run_saves_it(tmp_path):
    spec = _spec(tmp_path, "method=twossp", "eval.max_windows=1", "eval.use=[ptb]")
    assert pipeline.run(spec).status == "done"
    again = _spec(
        tmp_path, "method=twossp", "eval.max_windows=1", "eval.use=[ptb]", "save_model=true"
    )
    assert pipeline.run(again).status == "skipped"
    saved = json.loads((again.save_model_dir / "config.json").read_text())
    assert saved["num_hidden_layers"] == 5


def test_a_local_corpus_copy_is_read_without_the_hub():
    assert (TEXT / "ptb_test.txt").exists()


# Inputs that were accepted (issue 27): each is refused in one line with exit status 2, before
# any weights load. Placeholders: {file} a regular file, {bare} a model folder without weights.
REFUSED = {
    "inference": (["eval.inference=maybe"], "eval.inference must be true or false, got 'maybe'"),
    "force": (["force=maybe"], "force must be true or false, got 'maybe'"),
    "save_model": (["save_model=2"], "save_model must be true or false, got 2"),
    "progress": (["progress=sometimes"], "progress must be true or false, got 'sometimes'"),
    "trust_remote_code": (
        ["model.trust_remote_code=maybe"],
        "model.trust_remote_code must be true or false, got 'maybe'",
    ),
    "peak_memory": (
        ["eval.inference_settings.peak_memory=maybe"],
        "eval.inference_settings.peak_memory must be true or false, got 'maybe'",
    ),
    "streaming": (
        ["eval.datasets.fineweb_edu.streaming=maybe"],
        "eval.datasets.fineweb_edu.streaming must be true or false, got 'maybe'",
    ),
    "slicegpt_larger": (
        ["method=slicegpt", "sparsity=0.1"],
        "SliceGPT at sparsity 0.1 slices the hidden size 64 to 56, which leaves the decoder "
        "blocks no smaller (231424 parameters against 227200: each block gains two shortcut "
        "matrices); use a sparsity above 0.125 (width 48 or less)",
    ),
    "twossp_nothing": (
        ["sparsity=0.001"],
        "2SSP at sparsity 0.001 removes nothing from this model (no attention module, and all "
        "172 FFN neurons of every block kept); use a higher target",
    ),
    "blockpruner_nothing": (
        ["method=blockpruner", "protocol=matched", "sparsity=0.01"],
        "BlockPruner at sparsity 0.01 removes nothing: its budget of 2272 block params is "
        "nearer to no removal than to the smallest submodule (12352 params); use a higher target",
    ),
    "results_unwritable": (
        ["paths.results_dir={file}/results"],
        "folder '{file}/results/runs' (run files) is not writable: {file} is a file; set "
        "paths.results_dir to a folder you can write",
    ),
    "models_unwritable": (
        ["save_model=true", "paths.models_dir={file}"],
        "folder '{file}' (pruned models) is not writable: {file} is a file; set "
        "paths.models_dir to a folder you can write",
    ),
    "no_weights": (
        ["model.name_or_path={bare}"],
        "model folder '{bare}' holds no weight files (*.safetensors, *.bin, *.gguf, *.pt, "
        "*.pth); point model.name_or_path at a folder with the weights",
    ),
}


@pytest.fixture
def places(tmp_path) -> dict[str, str]:
    """``{file}``: a regular file where a folder would go; ``{bare}``: stories260K's config
    and tokenizer without its weights."""
    import shutil

    file, bare = tmp_path / "a_file", tmp_path / "bare"
    file.write_text("not a folder")
    bare.mkdir()
    for p in STORIES.iterdir():
        if p.suffix != ".safetensors":
            shutil.copy(p, bare)
    return {"file": str(file), "bare": str(bare)}


def _one_error_line(capsys, call) -> str:
    """Run ``call`` as the command line does (a user error: one line, exit 2); the line."""
    from twossp.logs import exit_on_user_error

    with pytest.raises(SystemExit) as info:
        try:
            call()
        except Exception as exc:
            exit_on_user_error(exc)
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert info.value.code == 2
    return line


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_inputs_accepted_before_are_refused_in_one_line(case, tmp_path, places, no_weights, capsys):
    overrides, message = REFUSED[case]
    overrides = [o.format(**places) for o in overrides]
    results = [] if any(o.startswith("paths.results_dir") for o in overrides) else [str(tmp_path)]
    line = _one_error_line(
        capsys,
        lambda: pipeline.run(run_spec(*(f"paths.results_dir={r}" for r in results), *overrides)),
    )
    expected = f"[twossp] error: {message.format(**places)} (TWOSSP_DEBUG=1 shows the traceback)"
    assert line == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["paths.results_dir=/tmp/a", "b"],  # the shell split an unquoted space
            "cannot parse the override 'b' (missing EQUAL at '<EOF>'); a value that contains "
            "spaces must be quoted as one argument, e.g. 'paths.results_dir=/tmp/a b'",
        ),
        (
            ["method.use_cache=maybe"],
            "method.use_cache (twossp) must be true or false, got 'maybe'",
        ),
        (
            ["method=blockpruner", "method.n_calib=two"],
            "method.n_calib (blockpruner) must be of type int, got 'two'",
        ),
    ],
)
def test_overrides_hydra_would_reject_get_one_line(capsys, argv, expected):
    from experiments.run import check_method_overrides, check_overrides  # before Hydra

    with pytest.raises(SystemExit) as info:
        check_overrides(argv)
        check_method_overrides(argv)
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert info.value.code == 2 and line == f"[twossp] error: {expected}"


@pytest.mark.parametrize(
    "args",
    [
        ["eval.inference=maybe"],
        ["method=slicegpt", "sparsity=0.1"],
        ["paths.results_dir=/tmp/a", "b"],  # an unquoted space
    ],
)
def test_the_command_line_refuses_them_with_exit_2(tmp_path, args):
    out = _cli(tmp_path, f"paths.results_dir={tmp_path}", *args)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len([x for x in out.stderr.splitlines() if x.strip()]) == 1, out.stderr
    assert "prune: " not in out.stdout and "load: " not in out.stdout


def test_a_folder_with_only_gguf_weights_names_the_file_to_set(tmp_path):
    from twossp.model_source import Source, check_weights

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.Q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(FileNotFoundError, match=r"only GGUF weights .*set model.gguf_file="):
        check_weights(Source(str(tmp_path)))
    check_weights(Source(str(tmp_path), gguf_file="model.Q4.gguf"))  # named: fine
