"""The methods of nucleiweak_d2, one package each, and their registry.

A method is a folder ``methods/<name>/`` whose ``__init__.py`` imports its components (so they
register in Detectron2's registries and ours) and calls :func:`register_method` once; adding it
to the project is one line in :data:`BUILTIN_METHODS`. Methods outside this package (a user's
own) are imported from the comma-separated module names in ``$NUCLEIWEAK_PLUGINS``.
``nucleiweak_d2.config.add_nucleiweak_config`` composes every registered method's config.

The core packages (``data``, ``pseudo_labels``, ``modeling``, ``evaluation``, ``engine``) never
import this package.
"""

import importlib
import os
from dataclasses import dataclass, field
from typing import Callable, Tuple

__all__ = [
    "MethodSpec",
    "BUILTIN_METHODS",
    "register_method",
    "registered_methods",
    "add_methods_config",
]


@dataclass(frozen=True)
class MethodSpec:
    """What a method registers.

    Attributes
    ----------
    name : str
        Short name (the folder name for built-in methods).
    add_config : callable
        ``add_config(cfg)`` adds the method's node under ``cfg.NUCLEIWEAK``.
    pipelines : tuple of str
        Names of its pipelines in ``NUCLEIWEAK_PIPELINE_REGISTRY`` (empty: a single model
        trained by ``tools/train_net.py``).
    description : str
        One line: paper and what the method does.
    """

    name: str
    add_config: Callable
    pipelines: Tuple[str, ...] = field(default_factory=tuple)
    description: str = ""


_METHODS = {}

#: Built-in methods, imported in this order. A new method: one folder plus one entry here.
BUILTIN_METHODS = (
    "classical",
    "qu2020",
    "feng2019",
    "nam2023",
    "wang2024",
    "liu2022",
)


def register_method(name, *, add_config, pipelines=(), description=""):
    """Register a method (called once from its package's ``__init__.py``).

    Raises
    ------
    KeyError
        When another method has this name.
    """
    spec = MethodSpec(name, add_config, tuple(pipelines), description)
    old = _METHODS.get(name)
    if old is not None and old.add_config is not add_config:
        raise KeyError(f"a method named {name!r} is already registered")
    _METHODS[name] = spec
    return spec


def _import_methods():
    for name in BUILTIN_METHODS:
        importlib.import_module(f"{__name__}.{name}")
    for module in os.environ.get("NUCLEIWEAK_PLUGINS", "").split(","):
        if module.strip():
            importlib.import_module(module.strip())


def registered_methods():
    """``{name: MethodSpec}`` of every registered method (built-in and plug-in)."""
    _import_methods()
    return dict(_METHODS)


def add_methods_config(cfg):
    """Add every registered method's config node, and record which pipelines own each node
    (a run's fingerprint leaves out the nodes of the methods it does not use)."""
    from ..engine.pipeline import NUCLEIWEAK_PIPELINE_REGISTRY
    from ..engine.run_dir import METHOD_NODES

    for spec in registered_methods().values():
        before = set(cfg.NUCLEIWEAK.keys())
        spec.add_config(cfg)
        own = {NUCLEIWEAK_PIPELINE_REGISTRY.get(p) for p in spec.pipelines}
        names = frozenset(n for n, obj in NUCLEIWEAK_PIPELINE_REGISTRY if obj in own)
        for node in set(cfg.NUCLEIWEAK.keys()) - before:
            METHOD_NODES[f"NUCLEIWEAK.{node}"] = names


_import_methods()
