"""Config keys of the qu2020 method, under ``cfg.NUCLEIWEAK.QU2020``."""

from detectron2.config import CfgNode as CN


def add_qu2020_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.QU2020`` node (one comment per key)."""
    _C = cfg
    _C.NUCLEIWEAK.QU2020 = CN()
