"""Config keys of the nam2023 method (PROnet), under ``cfg.NUCLEIWEAK.NAM2023``.

Defaults follow Nam et al. (MICCAI 2023) on MoNuSeg: d* = 70, r = 8, delta = 8, centre
threshold 0.2, focal alpha 2 / beta 4, loss weights 1. The schedule is expressed as stages
(``docs/methods/nam2023.md``): ``WARMUP_ITER`` without the offset loss (paper: 20 epochs),
``OFFSET_ITER`` with it but before any point refinement (paper: epochs 20-30), then
``EM.ROUNDS`` rounds of one E-step and ``EM.MAX_ITER`` M-step iterations (paper: refinement
from epoch 30 to 150). The YAML leaves set the iteration counts for their data.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_nam2023_config", "label_settings"]


def label_settings(cfg):
    """Keyword arguments of :func:`~nucleiweak_d2.methods.nam2023.labels.binary_labels` from
    ``cfg.NUCLEIWEAK.NAM2023.LABELS`` (``geodesic``, ``beta``, ``d_max``, ``erode_radius``);
    the mapper and the labels of the benchmark's decomposition both read them here."""
    lab = cfg.NUCLEIWEAK.NAM2023.LABELS
    return {
        "geodesic": lab.GEODESIC,
        "beta": lab.BETA,
        "d_max": lab.D_MAX,
        "erode_radius": lab.ERODE_RADIUS,
    }


def add_nam2023_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.NAM2023`` node (one comment per key)."""
    _C = cfg
    _C.NUCLEIWEAK.NAM2023 = CN()
    _N = _C.NUCLEIWEAK.NAM2023

    _N.LABELS = CN()
    # Voronoi and cluster labels on the geodesic distance of pseudo_labels.geodesic (True; the
    # paper) or on the Euclidean distance of Qu et al. (False; the "geo x" ablation).
    _N.LABELS.GEODESIC = True
    # beta of the shared hybrid geodesic distance D = Euclidean + beta * colour variation.
    _N.LABELS.BETA = 40.0
    # d*: clip of the geodesic distance feature of k-means (paper: MoNuSeg 70, CPM17 90).
    _N.LABELS.D_MAX = 70.0
    # Erosion radius of the cluster label's per-cell refinement, after Qu's dilation by disk(5)
    # (Qu's code and PROnet: 7, which shrinks every nucleus by 2 px; 5 keeps it: a deviation).
    _N.LABELS.ERODE_RADIUS = 7

    _N.HEAD = CN()
    # Residual units (3x3 conv, ReLU, 3x3 conv, identity shortcut) per module
    # (binary, then offset, then centre).
    _N.HEAD.RESIDUAL_UNITS = 1
    # Attention units: the centre prediction gates the offset features, the offset prediction
    # gates the binary features (both start as the identity).
    _N.HEAD.ATTENTION_UNITS = True
    # Offset module (False: the paper's "offset x" ablation: no offset loss, zero offsets, so
    # pixels go to the nearest centre, and points are never refined).
    _N.HEAD.OFFSET = True

    _N.CENTER = CN()
    # r: radius of the Gaussian of each point in the centre map (paper: MoNuSeg 8, CPM17 6).
    _N.CENTER.RADIUS = 8.0
    # Inference: heatmap peaks above this value are nucleus centres (paper: 0.2).
    _N.CENTER.THRESHOLD = 0.2
    # Thresholds scored on val after training (stage select_center); the best replaces THRESHOLD.
    _N.CENTER.THRESHOLD_CANDIDATES = []

    _N.LOSS = CN()
    # lambda_C: weight of the centre focal loss (paper: 1).
    _N.LOSS.CENTER_WEIGHT = 1.0
    # lambda_O: weight of the offset L1 loss (paper: 1).
    _N.LOSS.OFFSET_WEIGHT = 1.0
    # alpha of the CornerNet focal loss (paper: 2).
    _N.LOSS.FOCAL_ALPHA = 2.0
    # beta of the CornerNet focal loss (penalty reduction near a centre; paper: 4).
    _N.LOSS.FOCAL_BETA = 4.0
    # Weight of background pixels (target offset 0) in the offset loss; 1 = every pixel as in
    # the paper's Eq. (4), 0 = nucleus pixels only (Panoptic-DeepLab).
    _N.LOSS.OFFSET_BACKGROUND_WEIGHT = 1.0

    # Iterations of the first stage: binary and centre losses only (paper: 20 epochs).
    _N.WARMUP_ITER = 960
    # Iterations with the offset loss before the first E-step (paper: epochs 20-30); > 0.
    _N.OFFSET_ITER = 480

    _N.EM = CN()
    # E-step + M-step rounds after OFFSET_ITER (0 = no refinement stage).
    _N.EM.ROUNDS = 12
    # M-step iterations of each round.
    _N.EM.MAX_ITER = 480
    # delta (pixels): a point moves to its offset-voted centre only when the move is shorter.
    _N.EM.DELTA = 8.0
    # Update the points in the E-step; False keeps the schedule but never moves a point
    # (the "refine x" ablation at equal training length).
    _N.EM.REFINE_POINTS = True

    # Metric (key in the evaluator's results) that selects the final checkpoint on val.
    _N.SELECT_METRIC = "nuclei/AJI"
    # JSON {image_id: [[x, y], ...]} of the training images' starting points, replacing their
    # annotated points for the labels, the centre map and the E-steps (not in the paper, which
    # clicks every nucleus: with a partial annotation, e.g. Qu et al.'s detect/points_merged.json,
    # the annotated points plus the detected ones); "" = the annotated points.
    _N.POINTS_FILE = ""
