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


def build_mapper(cfg, is_train, **overrides):
    """Build the mapper named by ``cfg.NUCLEIWEAK.MAPPER``.

    Parameters
    ----------
    cfg : CfgNode
    is_train : bool
    **overrides
        Constructor arguments that replace the values ``from_config`` reads (a pipeline stage
        passes the files an earlier stage wrote this way).
    """
    return NUCLEIWEAK_MAPPER_REGISTRY.get(cfg.NUCLEIWEAK.MAPPER)(cfg, is_train, **overrides)


def register_alias(registry, old_name, obj):
    """Register ``obj`` under a second, older name so configs written before a rename still load.

    Parameters
    ----------
    registry : detectron2.utils.registry.Registry
    old_name : str
        The name old configs use; it must not be taken by another object.
    obj : object
        The registered class or function (already registered under its own name).
    """
    if old_name in registry:
        if registry.get(old_name) is not obj:
            raise KeyError(
                f"{old_name!r} is already registered in {registry._name} for another object"
            )
        return
    registry._do_register(old_name, obj)
