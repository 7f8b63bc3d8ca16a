"""Config keys of the data layer, under ``cfg.NUCLEIWEAK.DATA``."""

from detectron2.config import CfgNode as CN


def add_data_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.DATA`` node (one comment per key)."""
    _C = cfg
    _C.NUCLEIWEAK.DATA = CN()
    # Range of the random isotropic resize factor applied first in training ([1, 1] = off;
    # Qu et al. use [0.8, 1.25]).
    _C.NUCLEIWEAK.DATA.RESIZE_SCALE = [0.8, 1.25]
    # Probability of a horizontal flip in training (0 = off).
    _C.NUCLEIWEAK.DATA.HFLIP_PROB = 0.5
    # Probability of a vertical flip in training (0 = off).
    _C.NUCLEIWEAK.DATA.VFLIP_PROB = 0.5
    # Rotate training images by a random multiple of 90 degrees.
    _C.NUCLEIWEAK.DATA.ROT90 = True
    # (height, width) of the random training crop, after resizing; [] or [0, 0] = no crop
    # (Qu et al. crop 224).
    _C.NUCLEIWEAK.DATA.CROP_SIZE = [224, 224]
    # When the mapper puts gt_masks on the instances: "auto" (only for files exported with
    # annotation="partial_mask"), "always" (full-mask baselines) or "never" (points only).
    _C.NUCLEIWEAK.DATA.USE_MASKS = "auto"
    # Keep only annotations with point_labeled == 1 in training (False keeps all and marks
    # them in gt_point_labeled; only for analysis, it leaks unlabeled instances).
    _C.NUCLEIWEAK.DATA.LABELED_ONLY = True
    # Side in pixels of the square gt_boxes centred on each point when masks are not used
    # (a point-derived box, not ground truth); 0 = no gt_boxes in that case.
    _C.NUCLEIWEAK.DATA.POINT_BOX_SIZE = 16
