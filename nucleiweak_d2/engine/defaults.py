"""Config setup shared by the command-line tools and the tests."""

import logging

from detectron2.config import get_cfg

from ..config import add_nucleiweak_config


def setup_cfg(config_file=None, opts=None, freeze=True):
    """Build a config: Detectron2 defaults + nucleiweak keys + a YAML file + overrides.

    Parameters
    ----------
    config_file : str or None
        YAML file to merge (may use ``_BASE_``); None keeps the defaults.
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
    import nucleiweak_d2.modeling  # noqa: F401  (registers our components)

    cfg = get_cfg()
    add_nucleiweak_config(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
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


def register_datasets_from_cfg(cfg):
    """Register the COCO files named by ``cfg.NUCLEIWEAK.DATASETS`` (no-op when COCO_DIR is "").

    Returns
    -------
    list of str
        The registered dataset names.
    """
    node = cfg.NUCLEIWEAK.DATASETS
    if not node.COCO_DIR:
        return []
    from ..data.datasets import register_nuclei_splits

    return register_nuclei_splits(node.PREFIX, node.COCO_DIR, node.IMAGE_ROOT or node.COCO_DIR)
