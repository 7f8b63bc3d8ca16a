"""Config keys of the feng2019 method, under ``cfg.NUCLEIWEAK.FENG2019``.

Feng et al., "Mask R-CNN with partially labeled exemplars" (IEEE Access 2019). The keys configure
the decomposed self-attention on the FPN outputs, the centerness/box head on the stride-4 level,
the pseudo-boxes it produces and how they are used (blocked negatives in training, extra
proposals at inference). The Mask R-CNN itself is configured by the usual ``MODEL.*`` keys.
"""

from detectron2.config import CfgNode as CN


def add_feng2019_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.FENG2019`` node (one comment per key).

    Parameters
    ----------
    cfg : detectron2.config.CfgNode
        Config that already has ``cfg.NUCLEIWEAK``; modified in place.
    """
    _C = cfg
    _C.NUCLEIWEAK.FENG2019 = CN()
    _F = _C.NUCLEIWEAK.FENG2019
    # FPN outputs that get a decomposed self-attention block (backbone
    # "build_nucleiweak_feng2019_attention_fpn_backbone"); Feng et al. use every level P2-P5.
    _F.ATTENTION_LEVELS = ["p2", "p3", "p4", "p5"]
    # C_b: channels of the attention basis and coefficients (paper: 64).
    _F.ATTENTION_BASIS_CHANNELS = 64
    # C_v: channels of the attention values (paper: 64).
    _F.ATTENTION_VALUE_CHANNELS = 64
    # Feature map of the centerness/box head: the stride-4 FPN level ("fpn1" in the paper).
    _F.CENTERNESS_IN_FEATURE = "p2"
    # Channels of the 3x3 convolution shared by the centerness and box branches (unused with
    # SHARE_RPN_CONV).
    _F.CENTERNESS_CONV_DIM = 256
    # The centerness and box branches read the RPN head's 3x3 convolution (shared with the RPN
    # and trained by both losses), as the Feng lab code does (rpn/rpn.py, PRED_TARGETS);
    # False: the head has its own 3x3 convolution of CENTERNESS_CONV_DIM channels.
    _F.SHARE_RPN_CONV = False
    # Side of the positive centre box as a fraction of the instance box (paper: 0.3).
    _F.CENTER_FRACTION = 0.3
    # (width, height) in input pixels of the anchor box at every location; the paper uses the
    # median box size of the training set (benchmarks/feng2019_monuseg.py computes it), the
    # Feng lab code a fixed 32x32.
    _F.ANCHOR_SIZE = [32.0, 32.0]
    # Pipeline (NucleiWeakFeng2019Pipeline): set ANCHOR_SIZE to the median (w, h) of the
    # annotated training boxes, the paper's rule (recorded by the train stage).
    _F.ANCHOR_FROM_DATA = False
    # Pipeline: val metric that selects the checkpoint and the instance score threshold.
    _F.SELECT_METRIC = "nuclei/AJI"
    # Pipeline: instance score thresholds (NUCLEIWEAK.EVAL.INSTANCE_SCORE_THRESH) scored on val
    # after training, the best used on the eval sets; [] keeps INSTANCE_SCORE_THRESH.
    _F.INSTANCE_SCORE_CANDIDATES = []
    # Pipeline: overlap fractions of the "mask_nms" rule (NUCLEIWEAK.EVAL.INSTANCE_OVERLAP_THRESH;
    # 1.0 drops no mask: the map of the "score" rule) scored on val with every score candidate,
    # the best pair used on the eval sets; [] keeps NUCLEIWEAK.EVAL.INSTANCE_OVERLAP(_THRESH).
    _F.INSTANCE_OVERLAP_CANDIDATES = []
    # Pipeline: after training, the mean weights of the last N periodic checkpoints
    # (SOLVER.CHECKPOINT_PERIOD apart) replace the selected checkpoint when their val
    # SELECT_METRIC is higher (weight averaging, not in the paper); 0 or 1 = off.
    _F.AVERAGE_CHECKPOINTS = 0
    # Pipeline, partial model only: every QUALITY_PERIOD iterations of the train stage (and after
    # the last) the pseudo-boxes on the training images are scored against the unannotated
    # training nuclei (train/pseudo_box_quality.jsonl, the stage info, metrics.json); 0 = never.
    _F.QUALITY_PERIOD = 0
    # Centerness thresholds of those checks besides SCORE_THRESH (one forward for all).
    _F.QUALITY_THRESHOLDS = []
    # Locations sampled per batch (all images together) for the centerness loss (paper: 128).
    _F.BATCH_SIZE_PER_BATCH = 128
    # Largest fraction of positives among the sampled locations (paper: 1:1, i.e. 0.5).
    _F.POSITIVE_FRACTION = 0.5
    # Weights (wx, wy, ww, wh) of the box deltas relative to the anchor box (Feng code: 10,10,5,5).
    _F.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # Beta of the smooth-L1 box loss (Feng code: 1/9).
    _F.SMOOTH_L1_BETA = 1.0 / 9.0
    # Weight of the centerness (BCE) loss.
    _F.CENTERNESS_LOSS_WEIGHT = 1.0
    # Weight of the centre-box (smooth-L1) loss.
    _F.BOX_LOSS_WEIGHT = 1.0
    # Centerness probability above which a location belongs to a pseudo-box seed (paper: 0.95).
    _F.SCORE_THRESH = 0.95
    # IoU threshold of the NMS over pseudo-boxes of one image.
    _F.NMS_THRESH = 0.5
    # Keep at most this many pseudo-boxes per image (highest peak centerness first).
    _F.MAX_PSEUDO_BOXES = 2000
    # Training: anchors (RPN) and proposals (ROI heads) that match a pseudo-box but no annotated
    # instance are ignored in sampling instead of being negatives.
    _F.BLOCK_FALSE_NEGATIVES = True
    # Inference: the pseudo-boxes join the RPN proposals.
    _F.PSEUDO_PROPOSALS_AT_TEST = True
    # Inference: dilate every output mask by a 3x3 square (after pasting at image size; boxes
    # unchanged), the paper's post-processing (section III). Read by NucleiWeakFeng2019RCNN and
    # by the baseline meta-architecture NucleiWeakFeng2019BaselineRCNN; off by default (our
    # protocol: no post-processing unless the method's own, which this is: switch it on for
    # every model of a comparison or for none).
    _F.DILATE_MASKS = False
    # Objectness logit given to the pseudo-box proposals ("high score"; Feng code: objectness 2
    # on a 0-1 probability scale, i.e. above every RPN proposal).
    _F.PSEUDO_PROPOSAL_LOGIT = 10.0
