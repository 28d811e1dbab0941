import subprocess
import sys

import pytest

from benchsuite.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--tasks", "sst"], "unknown task 'sst'; did you mean sst2"),
        (["run", "--tasks", "sst2", "--compressors", "basline"], "unknown compressor 'basline'; did you mean baseline"),
        (["run", "--tasks", "sst2", "--model", "/no/such/model"], "model path /no/such/model does not exist"),
        (["run", "--tasks", ""], "empty"),
        (["run", "--preset", "huge"], "invalid choice: 'huge'"),
        (["run", "--tasks", "sst2", "--threads", "0"], "--threads must be >= 1"),
        (["report", "--results-dir", "/no/such/results"], "does not exist"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv, message, capsys, data_env, tiny_model):
    if "--model" not in argv and argv[0] == "run":
        argv = argv + ["--model", str(tiny_model)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_mirror_without_the_split_names_the_file(capsys, data_env, tiny_model, tmp_path):
    assert main(["run", "--tasks", "qqp", "--model", str(tiny_model), "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    # The mirror holds no qqp split at all; the first one looked for is named.
    assert "nyu-mll/glue/qqp/validation.parquet" in err and "unset BENCHSUITE_DATA_DIR to use the Hub" in err


def test_usage_error_in_a_real_process_has_no_traceback(data_env):
    done = subprocess.run([sys.executable, "-m", "benchsuite.cli", "run", "--tasks", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("benchsuite: error: unknown task 'nope'")
    assert "Traceback" not in done.stderr


def test_list_tasks_and_compressors(capsys):
    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    for task in ("sst2", "mrpc", "stsb", "cola", "qqp", "mnli", "mnli_mismatched", "qnli", "rte", "wnli",
                 "squad", "conll2003"):
        assert f"\n{task} " in f"\n{out}"
    assert main(["list", "compressors"]) == 0
    assert "baseline" in capsys.readouterr().out


def test_version_describe_and_list_say_what_a_user_needs(capsys, mirror, monkeypatch):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("benchsuite ")
    assert main(["describe", "dynamic_int8"]) == 0
    out = capsys.readouterr().out
    assert "reduce_range" in out and "bool" in out and "default True" in out and "7-bit activations" in out
    assert main(["describe", "nope"]) == 2
    assert main(["describe", "csr"]) == 0  # a last stage says what it follows
    assert "the conformance tests run 'magnitude:epochs=0+csr'" in capsys.readouterr().out
    assert main(["list", "compressors"]) == 0
    assert "quantisation" in capsys.readouterr().out
    monkeypatch.setenv("BENCHSUITE_DATA_DIR", str(mirror))
    assert main(["list", "tasks"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["sst2"].endswith("offline") and "not offline" in lines["qqp"]
    assert "held apart" in lines["qnli"]


def test_describe_says_what_benchsuite_optimise_searches(capsys):
    assert main(["describe", "distill"]) == 0
    assert "\nsearched by 'benchsuite optimise': layers in (2, 3, 4)\n" in capsys.readouterr().out + "\n"
    assert main(["describe", "baseline"]) == 0
    assert "\nnot searched by 'benchsuite optimise' (it declares no search_space)" in capsys.readouterr().out
    assert main(["describe", "fp16"]) == 0
    assert "\nsearched by 'benchsuite optimise' at its defaults" in capsys.readouterr().out


def test_every_built_in_option_says_what_it_means():
    from benchsuite.compressors.describe import options
    from benchsuite.compressors.registry import get_compressor_class, registered

    for name, entry in registered().items():
        if entry.origin.startswith("benchsuite "):
            missing = [d.name for d in options(get_compressor_class(name).config_class) if not d.meaning]
            assert not missing, f"{name}: options without a comment beside their field: {missing}"


def test_every_flag_of_every_command_has_help():
    from benchsuite.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"benchsuite {name} {action.option_strings or action.dest}: no help text"
