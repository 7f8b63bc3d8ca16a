"""Imports run only downward: data < pseudo_labels < modeling < evaluation < engine < methods.

Every import of every module of a layer, at module level or inside a function, is read with
``ast``; importing a higher layer fails the test. Modules at the top of the package
(``config.py``, ``cli.py``) sit above every layer.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nucleiweak_d2"
LAYERS = ["data", "pseudo_labels", "modeling", "evaluation", "engine", "methods"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def imported_modules(path):
    """``(line, module relative to the package)`` of every import of ``path`` into the package."""
    parts = path.relative_to(PACKAGE).parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[:-1])[: len(parts) - 1 - (node.level - 1)]
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:  # "from .. import x": x may be a subpackage
                    names = [".".join(base + [a.name]) for a in node.names]
            elif node.module and node.module.startswith("nucleiweak_d2"):
                rest = node.module[len("nucleiweak_d2") :].lstrip(".")
                names = [rest] if rest else [a.name for a in node.names]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [
                a.name[len("nucleiweak_d2.") :]
                for a in node.names
                if a.name.startswith("nucleiweak_d2.")
            ]
        else:
            continue
        found += [(node.lineno, n) for n in names if n]
    return found


def upward_imports():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2 or parts[0] not in RANK:
            continue
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in RANK and RANK[top] > RANK[parts[0]]:
                bad.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} imports nucleiweak_d2.{module}"
                )
            if top in ("config",):  # the top-level config imports every method
                bad.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} imports nucleiweak_d2.{module}"
                )
    return bad


def test_no_upward_imports():
    assert upward_imports() == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The parser sees relative, absolute and function-level imports (the test can fail)."""
    fake = tmp_path / "nucleiweak_d2"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "a.py").write_text("from ..engine import Trainer\n")
    (fake / "data" / "b.py").write_text("def f():\n    import nucleiweak_d2.methods.qu2020\n")
    (fake / "data" / "c.py").write_text("from nucleiweak_d2 import modeling\n")
    (fake / "modeling").mkdir()
    (fake / "modeling" / "d.py").write_text(
        "from ..data import io\nfrom . import meta_arch\n"
    )  # fine
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    bad = upward_imports()
    assert len(bad) == 3, bad
    assert any("a.py:1 imports nucleiweak_d2.engine" in b for b in bad)
    assert any("b.py:2 imports nucleiweak_d2.methods.qu2020" in b for b in bad)
    assert any("c.py:1 imports nucleiweak_d2.modeling" in b for b in bad)
