"""Config keys of the feng2019 method, under ``cfg.NUCLEIWEAK.FENG2019``."""

from detectron2.config import CfgNode as CN


def add_feng2019_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.FENG2019`` node (one comment per key)."""
    _C = cfg
    _C.NUCLEIWEAK.FENG2019 = CN()
