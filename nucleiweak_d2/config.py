"""``add_nucleiweak_config``: every config key of nucleiweak_d2 lives under ``cfg.NUCLEIWEAK``.

Each part of the package owns its sub-node (``DATA``, ``EVAL``, one per method); this function
composes them, the way ``add_panoptic_deeplab_config`` calls ``add_deeplab_config``.
"""

from detectron2.config import CfgNode as CN


def add_nucleiweak_config(cfg):
    """Add the ``cfg.NUCLEIWEAK`` node and the solver keys nucleiweak_d2 needs.

    Parameters
    ----------
    cfg : detectron2.config.CfgNode
        A config from ``detectron2.config.get_cfg()``; modified in place.
    """
    from .data.config import add_data_config
    from .evaluation.config import add_evaluation_config
    from .modeling.feng2019.config import add_feng2019_config
    from .modeling.qu2020.config import add_qu2020_config

    _C = cfg
    _C.NUCLEIWEAK = CN()
    # Name of the dataset mapper in NUCLEIWEAK_MAPPER_REGISTRY used by the train and test loaders.
    _C.NUCLEIWEAK.MAPPER = "NucleiDatasetMapper"
    # Name of a multi-stage pipeline in NUCLEIWEAK_PIPELINE_REGISTRY; "" trains one model.
    _C.NUCLEIWEAK.PIPELINE = ""
    # Add COCOEvaluator (bbox/segm AP) beside NucleiEvaluator when the dataset has masks.
    _C.NUCLEIWEAK.COCO_EVAL = True
    # COCO files to register before training: every <COCO_DIR>/<split>.json becomes the dataset
    # "<PREFIX>_<split>" (e.g. nuclei_train), file names relative to IMAGE_ROOT. "" = register nothing.
    _C.NUCLEIWEAK.DATASETS = CN()
    # Folder of the COCO JSON files written by tools/prepare_dataset.py.
    _C.NUCLEIWEAK.DATASETS.COCO_DIR = ""
    # Folder the JSON's file_name / label_file_name are relative to (the dataset folder).
    _C.NUCLEIWEAK.DATASETS.IMAGE_ROOT = ""
    # Prefix of the registered names.
    _C.NUCLEIWEAK.DATASETS.PREFIX = "nuclei"
    # Seed of everything random in data preparation and training (-1: Detectron2 picks one).
    _C.SEED = 0
    # Optimiser: "SGD" (Detectron2's default) or "ADAM" (the UNet methods use Adam).
    _C.SOLVER.OPTIMIZER = "SGD"
    # Adam betas, used when SOLVER.OPTIMIZER is "ADAM".
    _C.SOLVER.BETAS = (0.9, 0.999)

    add_data_config(_C)
    add_evaluation_config(_C)
    add_qu2020_config(_C)
    add_feng2019_config(_C)
