"""Config keys of the classical baseline, under ``cfg.NUCLEIWEAK.CLASSICAL``.

One key per step of :func:`~nucleiweak_d2.methods.classical.segment.classical_instances`;
the defaults are the fixed baseline (hematoxylin, sigma 1, Otsu, holes filled, watershed with
seeds 5 px apart). Change them on the val split only, never on test.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_classical_config"]


def add_classical_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.CLASSICAL`` node (one comment per key)."""
    _C = cfg
    _C.NUCLEIWEAK.CLASSICAL = CN()
    # Channel thresholded: "hematoxylin" (colour deconvolution, skimage rgb2hed) or "grey"
    # (1 - luminance, for stains other than H&E).
    _C.NUCLEIWEAK.CLASSICAL.CHANNEL = "hematoxylin"
    # Standard deviation (pixels) of the Gaussian smoothing of the channel; 0 = none.
    _C.NUCLEIWEAK.CLASSICAL.SIGMA = 1.0
    # Global threshold of the smoothed channel: skimage.filters.threshold_<name>, one of
    # "otsu", "li", "yen", "triangle", "mean".
    _C.NUCLEIWEAK.CLASSICAL.THRESHOLD = "otsu"
    # Fill the holes of each foreground object.
    _C.NUCLEIWEAK.CLASSICAL.FILL_HOLES = True
    # Objects smaller than this many pixels are removed before the split (0 keeps all).
    _C.NUCLEIWEAK.CLASSICAL.MIN_AREA = 0
    # Split touching nuclei: watershed on the negated distance transform of the foreground.
    _C.NUCLEIWEAK.CLASSICAL.SPLIT = True
    # Minimum distance (pixels) between two watershed seeds (local maxima of the distance).
    _C.NUCLEIWEAK.CLASSICAL.MIN_DISTANCE = 5
    # Also output Detectron2 "instances" (dense masks; needed by COCOEvaluator, costs memory).
    _C.NUCLEIWEAK.CLASSICAL.OUTPUT_INSTANCES = False
