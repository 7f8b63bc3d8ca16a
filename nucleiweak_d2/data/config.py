"""Config keys of the data layer, under ``cfg.NUCLEIWEAK.DATA``."""

from detectron2.config import CfgNode as CN


def add_data_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.DATA`` node (one comment per key)."""
    _C = cfg
    _C.NUCLEIWEAK.DATA = CN()
