"""Config keys of the nuclei evaluator, under ``cfg.NUCLEIWEAK.EVAL``."""

from detectron2.config import CfgNode as CN


def add_evaluation_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.EVAL`` node (one comment per key).

    Read by :func:`nucleiweak_d2.evaluation.evaluator.build_nuclei_evaluator`.
    """
    _C = cfg
    _C.NUCLEIWEAK.EVAL = CN()
    # Detection radius in pixels: a detected point within (strictly) this distance of a
    # ground-truth point is a hit. Qu et al. 2020: 11 on MoNuSeg/MO (40x), 8 on LC (20x).
    _C.NUCLEIWEAK.EVAL.DET_RADIUS = 11.0
    # Point matching of the detection metrics: "greedy" (Qu et al.) or "hungarian".
    _C.NUCLEIWEAK.EVAL.DET_MATCHING = "greedy"
    # Point of each nucleus for detection metrics: "bbox_center" (the papers) or "centroid".
    # Used for the ground truth, and for predictions whose outputs have no "pred_points".
    _C.NUCLEIWEAK.EVAL.POINT_MODE = "bbox_center"
    # Also compute the object-level Hausdorff distance (slower; off by default).
    _C.NUCLEIWEAK.EVAL.HAUSDORFF = False
    # "sem_seg" outputs: classes (after argmax over channels) that are nucleus foreground.
    _C.NUCLEIWEAK.EVAL.SEM_SEG_FOREGROUND_CLASSES = [1]
    # "sem_seg" outputs: connected-component neighbourhood, 1 = 4-connected, 2 = 8-connected
    # (8 as skimage.measure.label in Qu et al.'s post-processing).
    _C.NUCLEIWEAK.EVAL.CONNECTIVITY = 2
    # "instances" outputs: threshold of float pred_masks (boolean masks are used as they are).
    _C.NUCLEIWEAK.EVAL.MASK_THRESHOLD = 0.5
    # Subtracted from model "pred_points" before matching with the ground-truth points (integer
    # pixel indices): 0.0 for outputs in pixel indices (docs/CONTRACTS.md, qu2020 detector),
    # 0.5 for Detectron2's continuous coordinates (pixel centre at +0.5, as the mapper's
    # gt_points).
    _C.NUCLEIWEAK.EVAL.PRED_POINTS_OFFSET = 0.0
