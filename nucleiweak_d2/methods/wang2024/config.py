"""Config keys of the wang2024 method (DoNuSeg), under ``cfg.NUCLEIWEAK.WANG2024``.

Wang et al., "Dynamic Pseudo Label Optimization in Point-Supervised Nuclei Segmentation"
(MICCAI 2024). Defaults are the paper's (Sec. 3.2: r = 4, d = 20, theta = 0.8, tau = 1,
omega1 = 0.5, omega2 = 2) where it gives a value; every other default is a choice documented
in ``docs/methods/wang2024.md``. The FCOS head itself reads Detectron2's ``MODEL.RETINANET``
keys (``IN_FEATURES``, ``NUM_CONVS``, ``NORM``, ``PRIOR_PROB``, focal-loss and test keys), as
Detectron2's own FCOS config does (``configs/Base-Nuclei-FCOS.yaml``).
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_wang2024_config"]


def add_wang2024_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.WANG2024`` node (one comment per key).

    Parameters
    ----------
    cfg : detectron2.config.CfgNode
        Config that already has ``cfg.NUCLEIWEAK``; modified in place.
    """
    _C = cfg
    _C.NUCLEIWEAK.WANG2024 = CN()
    _W = _C.NUCLEIWEAK.WANG2024
    # Initial label M: pixels within R of an annotated point are nucleus (paper: 4).
    _W.R = 4.0
    # Initial label M: pixels farther than D from every annotated point are background (paper:
    # 20); pixels in between are ignored.
    _W.D = 20.0
    # Metric (key of the evaluator's results) that selects the checkpoint on the val split.
    _W.SELECT_METRIC = "nuclei/AJI"

    _W.LOSS = CN()
    # Weight of the three FCOS losses (L_det; paper: 1).
    _W.LOSS.DET_WEIGHT = 1.0
    # Weight of L_seg, the BCE of the segmentation against M (Eq. 1; paper: 1).
    _W.LOSS.SEG_WEIGHT = 1.0
    # Weight of L_loc, the MSE of the localisation head (paper: 1).
    _W.LOSS.LOC_WEIGHT = 1.0
    # omega1: weight of L_dcs, the BCE against the selected CAM (Eq. 5; paper: 0.5).
    _W.LOSS.DCS_WEIGHT = 0.5
    # omega2: weight of L_ccl, the CAM-guided contrastive loss (Eq. 6; paper: 2).
    _W.LOSS.CCL_WEIGHT = 2.0

    _W.LOC = CN()
    # Encoder block read by the localisation head (the encoder's output).
    _W.LOC.IN_FEATURE = "res5"
    # Width of the two hidden layers of the three fully connected layers (applied per location).
    _W.LOC.HIDDEN_DIM = 256

    _W.CAM = CN()
    # Encoder blocks whose Grad-CAM enters the dynamic selection (paper: the 4 blocks).
    _W.CAM.BLOCKS = ["res2", "res3", "res4", "res5"]
    # theta of Eq. 3: CAM > theta is nucleus, CAM <= 1 - theta background, else ignored (0.8).
    _W.CAM.THETA = 0.8
    # CAM scaling before theta: 0 = min-max over the image (pytorch_grad_cam); odd > 0 = each
    # pixel over the CAM's maximum in that window (a deviation: every local peak reaches 1).
    _W.CAM.NORM_WINDOW = 0

    _W.SEG = CN()
    # FPN levels the shared segmentation head runs on; its hidden features are upsampled to the
    # first (finest) of them and summed before the last convolution predicts the logit.
    _W.SEG.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # Number of 3x3 convolutions of the segmentation head, the last one predicting the logit
    # (paper: four convolutional layers).
    _W.SEG.NUM_CONVS = 4
    # Channels of the hidden convolutions of the segmentation head.
    _W.SEG.CONV_DIM = 256
    # Normalisation of the hidden convolutions of the segmentation head and projector.
    _W.SEG.NORM = "GN"
    # Inference: pixels with nucleus probability above this are foreground.
    _W.SEG.THRESHOLD = 0.5

    _W.CCL = CN()
    # Encoder block fed to the projector g ("the features outputted by the encoder"); an FPN
    # level (e.g. "p2") is accepted too, as a variant.
    _W.CCL.IN_FEATURE = "res5"
    # Channels of the projector's four 3x3 convolutions.
    _W.CCL.CONV_DIM = 256
    # Width of the hidden layers of the projector's three-layer MLP.
    _W.CCL.MLP_DIM = 256
    # Dimension of the projected features Z.
    _W.CCL.OUT_DIM = 128
    # tau of Eq. 7 (paper: 1).
    _W.CCL.TAU = 1.0
    # Fraction of the positive and negative pixels of each image used as keys, drawn at random
    # each iteration (1.0: all of them, as Eq. 7 is written).
    _W.CCL.KEY_FRACTION = 1.0

    _W.BOXES = CN()
    # Pseudo-box of each annotated point for the FCOS losses: "nearest_neighbor" (square of
    # side NN_FACTOR x distance to the nearest other annotated point, clipped to
    # [MIN_SIZE, MAX_SIZE]), "fixed" (square of side SIZE; the authors' other code: 50) or
    # "given" (the mapper's gt_boxes).
    _W.BOXES.RULE = "nearest_neighbor"
    # Side in pixels of the "fixed" squares.
    _W.BOXES.SIZE = 50.0
    # "nearest_neighbor": side = NN_FACTOR x nearest-neighbour distance (1.0: the square around
    # the largest disc centred on the point inside its Voronoi cell).
    _W.BOXES.NN_FACTOR = 1.0
    # "nearest_neighbor": smallest side in pixels.
    _W.BOXES.MIN_SIZE = 8.0
    # "nearest_neighbor": largest side in pixels (also the side of a point without neighbour).
    _W.BOXES.MAX_SIZE = 40.0

    _W.FCOS = CN()
    # Centre-sampling radius of FCOS in strides (Detectron2 and the authors' FCOS code: 1.5).
    _W.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Where unmatched anchor points are ignored instead of negative: "initial_label" (the
    # foreground and ignore band of M, i.e. within D of an annotated point) and/or
    # "pseudo_label" (the foreground of the selected CAM P). [] = plain FCOS, right when every
    # nucleus has a point (the paper); with partial points set both (unannotated nuclei).
    _W.FCOS.IGNORE = []

    _W.SELECT = CN()
    # Candidate SEG.THRESHOLD values that the "select_postprocess" stage pairs with every
    # SCORE_THRESHOLDS value after training; the pair of the best mean per-image val AJI wins.
    # Both lists [] = no such stage (the config's values are used); one [] = the config's value.
    _W.SELECT.SEG_THRESHOLDS = []
    # Candidate FCOS score thresholds (MODEL.RETINANET.SCORE_THRESH_TEST) of that stage.
    _W.SELECT.SCORE_THRESHOLDS = []
    # Also make that choice before every periodic val evaluation of the training stage, so the
    # checkpoint kept is the best at its own thresholds rather than at the config's (needs a grid).
    _W.SELECT.DURING_TRAINING = False

    _W.INSTANCES = CN()
    # Owner of a foreground pixel inside several boxes: "nearest_center" (the box whose centre
    # is nearest) or "score" (the highest-scoring box).
    _W.INSTANCES.SPLIT_RULE = "nearest_center"
    # Foreground pixels inside no box: "drop" (the boxes define the instances) or "components"
    # (their connected components become extra instances).
    _W.INSTANCES.UNBOXED = "drop"
    # Keep only the largest 8-connected piece of each instance.
    _W.INSTANCES.KEEP_LARGEST = True
    # Instances smaller than this (pixels) are removed.
    _W.INSTANCES.MIN_AREA = 10
    # Also return "instances" (dense pred_masks, for COCOEvaluator) besides "instance_map"
    # (memory: one full-size mask per nucleus).
    _W.INSTANCES.OUTPUT_INSTANCES = True
