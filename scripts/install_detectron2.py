#!/usr/bin/env python
"""Install detectron2 into the running interpreter's environment, choosing a route in this order:

(a) ``installed``: an importable detectron2 is already there: keep it;
(b) ``pip_spec``:  ``$DETECTRON2_PIP_SPEC`` is set (e.g. ``git+https://github.com/facebookresearch/detectron2.git``):
    ``pip install --no-build-isolation $DETECTRON2_PIP_SPEC``;
(c) ``sal_wheel``: the PyPI package ``sal-detectron2==0.7.2`` (upstream detectron2, 2024,
    republished as one ``cp310-none-any`` wheel): download it for Python 3.10, rename it to
    ``py3-none-any`` and install it with ``--no-deps`` (its compiled ``_C`` cannot load on other
    Pythons and is not needed: Mask R-CNN, FCOS, SemanticSegmentor and COCOEvaluator run without it).
    detectron2's own requirements come from requirements.txt.

Standard library only, so it runs before anything else is installed. Prints the route it took.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SAL_SPEC = "sal-detectron2==0.7.2"


def choose_route(env, detectron2_importable):
    """Pick the installation route.

    Parameters
    ----------
    env : Mapping[str, str]
        Environment variables (``DETECTRON2_PIP_SPEC`` is read).
    detectron2_importable : bool
        Whether ``import detectron2`` would succeed in the target environment.

    Returns
    -------
    tuple of (str, str or None)
        ``("installed", None)``, ``("pip_spec", spec)`` or ``("sal_wheel", "sal-detectron2==0.7.2")``.
    """
    if detectron2_importable:
        return "installed", None
    spec = (env.get("DETECTRON2_PIP_SPEC") or "").strip()
    if spec:
        return "pip_spec", spec
    return "sal_wheel", SAL_SPEC


def route_commands(route, arg, python, download_dir):
    """The pip commands of a route, as argument lists (the renaming step is done in Python).

    Returns
    -------
    list of list of str
    """
    pip = [python, "-m", "pip"]
    if route == "installed":
        return []
    if route == "pip_spec":
        return [pip + ["install", "--no-build-isolation", arg]]
    if route == "sal_wheel":
        return [
            pip
            + [
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.10",
                "-d",
                str(download_dir),
                arg,
            ],
            pip
            + [
                "install",
                "--no-deps",
                str(Path(download_dir) / "sal_detectron2-0.7.2-py3-none-any.whl"),
            ],
        ]
    raise ValueError(f"unknown route {route!r}")


def _renamed_wheel(download_dir):
    wheels = sorted(Path(download_dir).glob("sal_detectron2-0.7.2-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"no sal_detectron2 wheel was downloaded into {download_dir}")
    target = Path(download_dir) / "sal_detectron2-0.7.2-py3-none-any.whl"
    if wheels[0] != target:
        wheels[0].rename(target)
    return target


def main():
    importable = importlib.util.find_spec("detectron2") is not None
    route, arg = choose_route(os.environ, importable)
    print(f"[nucleiweak] detectron2 route: {route}" + (f" ({arg})" if arg else ""), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        commands = route_commands(route, arg, sys.executable, tmp)
        for i, cmd in enumerate(commands):
            if route == "sal_wheel" and i == 1:
                _renamed_wheel(tmp)
            print("[nucleiweak] $ " + " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
