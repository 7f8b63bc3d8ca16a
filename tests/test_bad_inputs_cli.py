"""The CLI guard (nucleiweak_d2.cli): bad input -> one ``error:`` line and exit code 2.

Also checks the wiring of the guard in tools/predict.py, tools/make_synthetic.py and
tools/make_pseudo_labels.py through real subprocesses (exit code, stderr, no traceback, no
file written).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_tool(name, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value\nsecond line"),
        FileNotFoundError("no such file: x.png"),
        FileExistsError("x.png exists"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(exc, capsys):
    from nucleiweak_d2.cli import run_cli

    seen = []

    def main(argv):
        seen.append(argv)
        raise exc

    assert run_cli(main, ["--a", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert " ".join(str(exc).split()) in err
    assert seen == [["--a", "1"]]


def test_user_input_error_debug_and_other_exceptions(capsys):
    from nucleiweak_d2.cli import UserInputError, cli_guard, run_cli

    def bad(argv):
        raise UserInputError(f"bad option in {argv}")

    assert issubclass(UserInputError, ValueError)
    assert run_cli(bad, []) == 2
    assert capsys.readouterr().err == "error: bad option in []\n"
    with pytest.raises(UserInputError, match=r"bad option in \['-x'\]"):  # --debug removed
        run_cli(bad, ["--debug", "-x"])

    def bug(argv):
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):
        run_cli(bug, [])

    @cli_guard
    def guarded(argv=None):
        raise FileExistsError("out.png exists")

    assert guarded([]) == 2
    assert capsys.readouterr().err == "error: out.png exists\n"


def test_exit_code_from_the_return_value():
    from nucleiweak_d2.cli import run_cli

    class Result(dict):
        exit_code = 1

    assert run_cli(lambda argv: None, []) == 0
    assert run_cli(lambda argv: 3, []) == 3
    assert run_cli(lambda argv: {"a": 1}, []) == 0
    assert run_cli(lambda argv: Result(), []) == 1


def test_cli_module_imports_no_torch():
    code = (
        "import sys, nucleiweak_d2.cli; "
        "assert not {'torch', 'detectron2'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_predict_bad_input_exit_2(tmp_path):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"not read before the config check")
    missing = tmp_path / "missing.yaml"
    proc = _run_tool(
        "predict.py",
        "--config-file",
        missing,
        "--input",
        image.parent,
        "--output",
        tmp_path / "out",
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: config file not found: {missing}"
    assert not (tmp_path / "out").exists()
    proc = _run_tool(
        "predict.py",
        "--config-file",
        missing,
        "--input",
        image.parent,
        "--output",
        tmp_path / "out",
        "--debug",
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr  # --debug: the traceback


def test_make_synthetic_bad_input_exit_2(tmp_path):
    target = tmp_path / "data"
    target.write_text("a file, not a folder")
    proc = _run_tool("make_synthetic.py", target, "--n-images", "1", "--size", "16", "16")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: {target} exists and is not a folder"
    assert target.read_text() == "a file, not a folder"


def test_make_pseudo_labels_bad_input_exit_2(tmp_path):
    missing = tmp_path / "train.json"
    proc = _run_tool(
        "make_pseudo_labels.py", missing, "--image-root", tmp_path, "--out", tmp_path / "pl"
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: cannot read COCO file {missing}")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "pl").exists()
