"""Configs of nucleiweak_d2: ``add_nucleiweak_config`` and ``setup_cfg``.

Every key of nucleiweak_d2 lives under ``cfg.NUCLEIWEAK``. Each part of the package owns its
sub-node (``DATA``, ``EVAL``, ``UNET``, ``LOSSES``, the engine's keys, one node per method);
:func:`add_nucleiweak_config` composes them, the way ``add_panoptic_deeplab_config`` calls
``add_deeplab_config``. This module sits above every layer: it is the one place that imports
the methods (to compose their configs); nothing in the core packages imports it.
"""

import logging
import os

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .data.config import add_data_config
from .engine.config import add_engine_config
from .evaluation.config import add_evaluation_config
from .methods import add_methods_config
from .modeling.config import add_modeling_config

__all__ = ["add_nucleiweak_config", "setup_cfg", "load_yaml_with_bases"]

# Keys of the layout before methods/ (old name -> new name); an old YAML gets a clear error.
RENAMED_KEYS = {
    "SOLVER.OPTIMIZER": "NUCLEIWEAK.SOLVER.OPTIMIZER",
    "SOLVER.BETAS": "NUCLEIWEAK.SOLVER.BETAS",
}


def add_nucleiweak_config(cfg):
    """Add the ``cfg.NUCLEIWEAK`` node with every part's and every registered method's keys.

    Parameters
    ----------
    cfg : detectron2.config.CfgNode
        A config from ``detectron2.config.get_cfg()``; modified in place. Detectron2's own
        defaults (``SEED`` included) are left alone; our base YAMLs set what they need.
    """
    cfg.NUCLEIWEAK = CN()
    add_engine_config(cfg)
    add_data_config(cfg)
    add_evaluation_config(cfg)
    add_modeling_config(cfg)
    add_methods_config(cfg)
    for old, new in RENAMED_KEYS.items():
        cfg.register_renamed_key(old, new)


def _merge_dicts(base, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_dicts(base[key], value)
        else:
            base[key] = value
    return base


def load_yaml_with_bases(path):
    """Read a YAML config whose ``_BASE_`` is a file or a list of files (merged in order).

    Detectron2's loader takes one base; a list lets a method leaf pull in a method base and a
    dataset file (``configs/datasets/*.yaml``). Relative base paths are relative to ``path``.

    Returns
    -------
    dict
    """
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    bases = data.pop("_BASE_", [])
    merged = {}
    for base in [bases] if isinstance(bases, str) else list(bases):
        base = os.path.expanduser(base)
        if not os.path.isabs(base):
            base = os.path.join(os.path.dirname(path), base)
        _merge_dicts(merged, load_yaml_with_bases(base))
    return _merge_dicts(merged, data)


def setup_cfg(config_file=None, opts=None, freeze=True):
    """Build a config: Detectron2 defaults + nucleiweak keys + a YAML file + overrides.

    Parameters
    ----------
    config_file : str or None
        YAML file to merge (``_BASE_`` may be a list); None keeps the defaults.
    opts : list of str or None
        ``["KEY", "VALUE", ...]`` overrides, as on the command line.
    freeze : bool
        Freeze the returned config.

    Notes
    -----
    A CUDA ``MODEL.DEVICE`` (Detectron2's default) falls back to ``"cpu"``, with a warning,
    on a machine without CUDA, so every config runs on either.

    Returns
    -------
    detectron2.config.CfgNode
    """
    cfg = get_cfg()
    add_nucleiweak_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        cfg.merge_from_other_cfg(CN(load_yaml_with_bases(config_file)))
    if opts:
        cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            logging.getLogger(__name__).warning(
                "MODEL.DEVICE is %r but CUDA is not available: running on the CPU", cfg.MODEL.DEVICE
            )
            cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg
