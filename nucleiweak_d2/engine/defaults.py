"""Setup shared by the entry points (``tools/train_net.py``, ``tools/demo.py``, benchmarks)."""

import logging
from pathlib import Path

from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

__all__ = ["register_datasets_from_cfg", "setup_loggers", "entry_setup"]


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


def setup_loggers(output_dir=None, rank=None):
    """Send the ``nucleiweak_d2`` logger (pipelines' stage lines, tables) to the console and to
    ``<output_dir>/log.txt`` beside Detectron2's, as ``default_setup`` does for ``detectron2``."""
    rank = comm.get_rank() if rank is None else rank
    out = str(output_dir) if output_dir else None
    setup_logger(out, distributed_rank=rank, name="nucleiweak_d2", abbrev_name="nw")
    return logging.getLogger("nucleiweak_d2")


def entry_setup(output_dir, threads=None):
    """Setup of a script that runs in one process (demo, benchmarks): torch threads, and the
    ``detectron2`` + ``nucleiweak_d2`` loggers to the console and ``<output_dir>/log.txt``."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    setup_logger(str(Path(output_dir) / "log.txt"), name="detectron2")
    return setup_loggers(Path(output_dir) / "log.txt", rank=0)
