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
    # Bound of Qu et al.'s random affine perturbation: each entry of the 2x2 matrix gets
    # U(-AFFINE, AFFINE) added, about the image centre, in [0, 0.5) (0 = off; Qu et al.: 0.3).
    _C.NUCLEIWEAK.DATA.AFFINE = 0.0
    # Rotate training images by a uniform angle in [0, 360) degrees about their centre, after
    # the resize and in the same resampling as AFFINE (corners from outside: black / ignore).
    _C.NUCLEIWEAK.DATA.ROTATE_ANY = False
    # Simard-style elastic deformation after the rotation (RandomElastic).
    _C.NUCLEIWEAK.DATA.ELASTIC = CN()
    # Probability of deforming a training image (0 = off).
    _C.NUCLEIWEAK.DATA.ELASTIC.PROB = 0.0
    # Scale of the displacements in pixels (RMS per axis about 0.17 * ALPHA / SIGMA pixels).
    _C.NUCLEIWEAK.DATA.ELASTIC.ALPHA = 50.0
    # Standard deviation in pixels of the Gaussian smoothing the random displacement field.
    _C.NUCLEIWEAK.DATA.ELASTIC.SIGMA = 6.0
    # Probability that the training crop is centred (jitter up to 1/4 of the crop) on a random
    # annotated point instead of uniform; needs a mapper that passes NucleiAugInput(points=...)
    # (0 = plain T.RandomCrop).
    _C.NUCLEIWEAK.DATA.CROP_AT_POINTS = 0.0
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
    _C.NUCLEIWEAK.DATA.STAIN_NORM = CN()
    # Stain normalisation of every image: "none", "reinhard" or "macenko" (data/stain.py; Qu et
    # al. normalise every image). Training mappers normalise the whole image before augmenting
    # it; the model normalises its inputs at inference and keeps method and target in its weights.
    _C.NUCLEIWEAK.DATA.STAIN_NORM.METHOD = "none"
    # Flat target (Reinhard: 6 floats, Macenko: 8); [] = fitted on the images of
    # DATASETS.TRAIN when training starts.
    _C.NUCLEIWEAK.DATA.STAIN_NORM.TARGET = []
    _C.NUCLEIWEAK.DATA.STAIN_JITTER = CN()
    # Training stain augmentation: half-width of the multiplicative jitter of each HED channel
    # (Tellez et al.; 0 = off).
    _C.NUCLEIWEAK.DATA.STAIN_JITTER.SIGMA = 0.0
    # Half-width of the additive jitter of each HED channel.
    _C.NUCLEIWEAK.DATA.STAIN_JITTER.BIAS = 0.0
    # Probability that a training image is jittered.
    _C.NUCLEIWEAK.DATA.STAIN_JITTER.PROB = 1.0
