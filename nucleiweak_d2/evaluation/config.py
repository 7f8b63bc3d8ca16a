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
    # "instances" outputs: masks scored below this are left out of the instance map that the
    # nuclei metrics score (0.0 = every detection the model returns, i.e. all above
    # MODEL.ROI_HEADS.SCORE_THRESH_TEST). Low-score fragments and false positives lower AJI,
    # PQ and object precision, by an amount that differs between models: choose it on val per
    # model (benchmarks/feng2019_monuseg.py --score-thresh-candidates), never on test.
    _C.NUCLEIWEAK.EVAL.INSTANCE_SCORE_THRESH = 0.0
    # "instances" outputs: how overlapping masks share pixels. "score": the higher score wins
    # each pixel (masks painted in ascending score order); "mask_nms": in descending score
    # order each mask keeps its unclaimed pixels, and is dropped when more than
    # INSTANCE_OVERLAP_THRESH of its area is already claimed.
    _C.NUCLEIWEAK.EVAL.INSTANCE_OVERLAP = "score"
    # "instances" outputs, rule "mask_nms": largest fraction of a mask's area that higher-score
    # masks may cover before the mask is dropped (1.0 = never dropped: same map as "score").
    _C.NUCLEIWEAK.EVAL.INSTANCE_OVERLAP_THRESH = 0.5


def instance_map_options(cfg):
    """Keyword arguments of :func:`~nucleiweak_d2.evaluation.outputs.output_instance_map` for
    ``instances`` outputs, from ``cfg.NUCLEIWEAK.EVAL.INSTANCE_*``.

    Parameters
    ----------
    cfg : detectron2.config.CfgNode
        With :func:`add_evaluation_config` applied.

    Returns
    -------
    dict
        ``score_thresh``, ``overlap`` and ``overlap_thresh``.
    """
    ev = cfg.NUCLEIWEAK.EVAL
    return {
        "score_thresh": float(ev.INSTANCE_SCORE_THRESH),
        "overlap": str(ev.INSTANCE_OVERLAP),
        "overlap_thresh": float(ev.INSTANCE_OVERLAP_THRESH),
    }
