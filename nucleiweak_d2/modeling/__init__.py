"""Shared Detectron2 components of nucleiweak_d2 (backbones, heads, meta-architectures, losses).

Importing this package registers them (side effects only). Method-specific components live in
:mod:`nucleiweak_d2.methods`; nothing here imports a method.
"""

from . import backbone as _backbone  # noqa: F401  (registration side effects)
from . import meta_arch as _meta_arch  # noqa: F401  (registration side effects)
from .config import add_modeling_config

__all__ = ["add_modeling_config"]
