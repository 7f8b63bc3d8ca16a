"""Registry of dataset mappers, so a config picks the mapper by name.

Every mapper registered here is a ``@configurable`` class whose constructor accepts
``(cfg, is_train)``; :class:`nucleiweak_d2.engine.trainer.Trainer` builds the one named by
``cfg.NUCLEIWEAK.MAPPER``.
"""

from detectron2.utils.registry import Registry

NUCLEIWEAK_MAPPER_REGISTRY = Registry("NUCLEIWEAK_MAPPER")
NUCLEIWEAK_MAPPER_REGISTRY.__doc__ = """
Dataset mappers of nucleiweak_d2. Each is called as ``mapper(cfg, is_train)``.
"""


def build_mapper(cfg, is_train):
    """Build the mapper named by ``cfg.NUCLEIWEAK.MAPPER``."""
    return NUCLEIWEAK_MAPPER_REGISTRY.get(cfg.NUCLEIWEAK.MAPPER)(cfg, is_train)
