"""Config keys of the nuclei evaluator, under ``cfg.NUCLEIWEAK.EVAL``."""

from detectron2.config import CfgNode as CN


def add_evaluation_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.EVAL`` node (one comment per key)."""
    _C = cfg
    _C.NUCLEIWEAK.EVAL = CN()
