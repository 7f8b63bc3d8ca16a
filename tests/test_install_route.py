"""The detectron2 route selection of scripts/install_detectron2.py, without network."""

import sys
from pathlib import Path

import pytest
from conftest import load_script  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_detectron2.py"


@pytest.fixture(scope="module")
def route_mod():
    return load_script("install_detectron2", SCRIPT)


def test_installed_detectron2_wins_over_everything(route_mod):
    env = {"DETECTRON2_PIP_SPEC": "git+https://github.com/facebookresearch/detectron2.git"}
    assert route_mod.choose_route(env, True) == ("installed", None)
    assert route_mod.route_commands("installed", None, "py", "/tmp/x") == []


def test_pip_spec_is_honoured(route_mod):
    spec = "git+https://github.com/facebookresearch/detectron2.git"
    assert route_mod.choose_route({"DETECTRON2_PIP_SPEC": f"  {spec} "}, False) == (
        "pip_spec",
        spec,
    )
    cmds = route_mod.route_commands("pip_spec", spec, "/v/bin/python", "/tmp/x")
    assert cmds == [["/v/bin/python", "-m", "pip", "install", "--no-build-isolation", spec]]


def test_sal_wheel_is_the_fallback(route_mod):
    for env in ({}, {"DETECTRON2_PIP_SPEC": ""}, {"DETECTRON2_PIP_SPEC": "   "}):
        assert route_mod.choose_route(env, False) == ("sal_wheel", "sal-detectron2==0.7.2")
    download, install = route_mod.route_commands("sal_wheel", "sal-detectron2==0.7.2", "py", "/d")
    assert download[:3] == ["py", "-m", "pip"] and "download" in download
    assert download[download.index("--python-version") + 1] == "3.10"
    assert "--no-deps" in download and "--only-binary=:all:" in download
    assert install[-1] == "/d/sal_detectron2-0.7.2-py3-none-any.whl" and "--no-deps" in install


def test_wheel_is_renamed_to_py3_none_any(route_mod, tmp_path):
    (tmp_path / "sal_detectron2-0.7.2-cp310-none-any.whl").write_bytes(b"zip")
    target = route_mod._renamed_wheel(tmp_path)
    assert target.name == "sal_detectron2-0.7.2-py3-none-any.whl" and target.read_bytes() == b"zip"
    assert not (tmp_path / "sal_detectron2-0.7.2-cp310-none-any.whl").exists()


def test_missing_wheel_is_a_clear_error(route_mod, tmp_path):
    with pytest.raises(FileNotFoundError, match="sal_detectron2"):
        route_mod._renamed_wheel(tmp_path)


def test_unknown_route_rejected(route_mod):
    with pytest.raises(ValueError, match="unknown route"):
        route_mod.route_commands("conda", None, sys.executable, "/tmp")
