"""Config keys of the training glue: mapper and pipeline names, dataset registration, our solver
keys, training speed options, and what a pipeline evaluates at its end. All under
``cfg.NUCLEIWEAK``.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_engine_config"]


def add_engine_config(cfg):
    """Add the engine's keys to ``cfg.NUCLEIWEAK`` (one comment per key)."""
    _C = cfg
    # Name of the dataset mapper in NUCLEIWEAK_MAPPER_REGISTRY used by the train and test loaders.
    _C.NUCLEIWEAK.MAPPER = "NucleiDatasetMapper"
    # Name of a multi-stage pipeline in NUCLEIWEAK_PIPELINE_REGISTRY; "" trains one model.
    _C.NUCLEIWEAK.PIPELINE = ""
    # Add COCOEvaluator (bbox/segm AP) beside NucleiEvaluator when the dataset has masks.
    _C.NUCLEIWEAK.COCO_EVAL = True
    # Datasets a pipeline scores its final model on (e.g. test, testA, testB); [] = DATASETS.TEST.
    # Model selection always uses DATASETS.TEST[0] (the val split), never these.
    _C.NUCLEIWEAK.EVAL_DATASETS = []
    # A pipeline writes the predicted instance maps of its final evaluation as 16-bit PNGs.
    _C.NUCLEIWEAK.SAVE_PREDICTIONS = True

    _C.NUCLEIWEAK.DATASETS = CN()
    # Folder of the COCO JSON files written by tools/prepare_dataset.py: every
    # <COCO_DIR>/<split>.json becomes the dataset "<PREFIX>_<split>"; "" registers nothing.
    _C.NUCLEIWEAK.DATASETS.COCO_DIR = ""
    # Folder the JSON's file_name / label_file_name are relative to (the dataset folder).
    _C.NUCLEIWEAK.DATASETS.IMAGE_ROOT = ""
    # Prefix of the registered names.
    _C.NUCLEIWEAK.DATASETS.PREFIX = "nuclei"

    _C.NUCLEIWEAK.SOLVER = CN()
    # Optimiser: "SGD" (Detectron2's, from SOLVER.*) or "ADAM" (the UNet papers use Adam).
    _C.NUCLEIWEAK.SOLVER.OPTIMIZER = "SGD"
    # Adam betas, used when NUCLEIWEAK.SOLVER.OPTIMIZER is "ADAM".
    _C.NUCLEIWEAK.SOLVER.BETAS = (0.9, 0.999)

    _C.NUCLEIWEAK.TRAIN = CN()
    # Convert the model the Trainer builds to the channels_last (NHWC) memory format; the conv
    # activations follow the weights' format. Any device; same arithmetic up to rounding.
    _C.NUCLEIWEAK.TRAIN.CHANNELS_LAST = False
    # MODEL.DEVICE "cpu" only: run the training forward under torch.autocast("cpu",
    # dtype=torch.bfloat16) (the UNet losses cast their logits back to float32); weights,
    # gradients and the optimiser stay float32, no grad scaler. Ignored on CUDA, where SOLVER.AMP.ENABLED (Detectron2's
    # AMPTrainer) is the mixed-precision switch.
    _C.NUCLEIWEAK.TRAIN.CPU_BF16 = False
    # torch intra-op CPU threads (torch.set_num_threads) set when the Trainer is built;
    # 0 leaves the process' setting (torch's default, or an entry point's --threads).
    _C.NUCLEIWEAK.TRAIN.NUM_THREADS = 0
