"""Config keys of the qu2020 method, under ``cfg.NUCLEIWEAK.QU2020``.

Defaults follow Qu et al. (TMI 2020) on MoNuSeg (MO): r1 = 11, r2 = 22, sigma = 2.75,
3 self-training rounds, alpha = 0.5 (``NUCLEIWEAK.UNET.TARGET_WEIGHTS``), CRF weight 0.005 with
(sigma_xy, sigma_rgb) = (9, 0.1) (``NUCLEIWEAK.LOSSES.CRF``) and lr x 0.1 for the fine-tuning.
Iteration counts are per stage; the YAML leaves set them. The shared UNet keys (post-processing,
detection threshold and area limits) live in ``NUCLEIWEAK.UNET``.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_qu2020_config", "label_settings"]

# Keys of the layout before methods/ (old name -> new name); an old YAML gets a clear error.
RENAMED_KEYS = {
    "NUCLEIWEAK.QU2020.MIN_AREA": "NUCLEIWEAK.UNET.MIN_AREA",
    "NUCLEIWEAK.QU2020.FILL_HOLES": "NUCLEIWEAK.UNET.FILL_HOLES",
    "NUCLEIWEAK.QU2020.SPLIT_TOUCHING": "NUCLEIWEAK.UNET.SPLIT_TOUCHING",
    "NUCLEIWEAK.QU2020.SPLIT_MIN_DISTANCE": "NUCLEIWEAK.UNET.SPLIT_MIN_DISTANCE",
    "NUCLEIWEAK.QU2020.OUTPUT_INSTANCES": "NUCLEIWEAK.UNET.OUTPUT_INSTANCES",
    "NUCLEIWEAK.QU2020.EVAL_DATASETS": "NUCLEIWEAK.EVAL_DATASETS",
    "NUCLEIWEAK.QU2020.SAVE_PREDICTIONS": "NUCLEIWEAK.SAVE_PREDICTIONS",
    "NUCLEIWEAK.QU2020.SEG_SELECT_METRIC": "NUCLEIWEAK.QU2020.SEG.SELECT_METRIC",
    "NUCLEIWEAK.QU2020.DET_SELECT_METRIC": "NUCLEIWEAK.QU2020.DET.SELECT_METRIC",
    "NUCLEIWEAK.QU2020.DET.THRESHOLD": "NUCLEIWEAK.UNET.POINT_THRESHOLD",
    "NUCLEIWEAK.QU2020.DET.MIN_AREA": "NUCLEIWEAK.UNET.POINT_MIN_AREA",
    "NUCLEIWEAK.QU2020.DET.MAX_AREA": "NUCLEIWEAK.UNET.POINT_MAX_AREA",
    "NUCLEIWEAK.QU2020.CRF.WEIGHT": "NUCLEIWEAK.LOSSES.CRF.WEIGHT",
    "NUCLEIWEAK.QU2020.CRF.SIGMA_XY": "NUCLEIWEAK.LOSSES.CRF.SIGMA_XY",
    "NUCLEIWEAK.QU2020.CRF.SIGMA_RGB": "NUCLEIWEAK.LOSSES.CRF.SIGMA_RGB",
}
# Keys only the pipeline used to write; they are constructor arguments now.
REMOVED_KEYS = (
    "NUCLEIWEAK.QU2020.POINTS_FILE",
    "NUCLEIWEAK.QU2020.LABEL_CACHE_DIR",
    "NUCLEIWEAK.QU2020.DET.BACKGROUND_DIR",
    "NUCLEIWEAK.QU2020.CRF.ENABLED",
)


def label_settings(cfg):
    """Keyword arguments of :func:`~nucleiweak_d2.methods.qu2020.labels.cluster_label_of` from
    ``cfg.NUCLEIWEAK.QU2020.LABEL`` (``kind``, ``d_max``, ``dilate_radius``, ``erode_radius``);
    the seg mapper and the labels of the benchmark's decomposition both read them here."""
    lab = cfg.NUCLEIWEAK.QU2020.LABEL
    return {
        "kind": lab.KIND,
        "d_max": lab.D_MAX,
        "dilate_radius": lab.DILATE_RADIUS,
        "erode_radius": lab.ERODE_RADIUS,
    }


def add_qu2020_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.QU2020`` node (one comment per key)."""
    _C = cfg
    _C.NUCLEIWEAK.QU2020 = CN()

    _C.NUCLEIWEAK.QU2020.DET = CN()
    # r1: mean nucleus radius (pixels); Gaussian support, and merge radius of detections.
    _C.NUCLEIWEAK.QU2020.DET.R1 = 11.0
    # r2: outer radius of the background annulus of the extended Gaussian mask (2 * r1).
    _C.NUCLEIWEAK.QU2020.DET.R2 = 22.0
    # Gaussian bandwidth sigma of the extended Gaussian mask.
    _C.NUCLEIWEAK.QU2020.DET.SIGMA = 2.75
    # MSE weight of pixels with target > 0 (background pixels weigh 1).
    _C.NUCLEIWEAK.QU2020.DET.FG_WEIGHT = 10.0
    # False: every nucleus carries a point, so no detector is trained and the segmentation
    # learns from the annotated points alone (Qu et al.'s 100 % results, "all ground-truth
    # points without the detection"); with partial points it leaves the unclicked nuclei out.
    _C.NUCLEIWEAK.QU2020.DET.ENABLED = True
    # Self-training rounds with background propagation after the initial training (paper: 3).
    _C.NUCLEIWEAK.QU2020.DET.ROUNDS = 3
    # Detectors trained per round (seeds SEED + k + 1000 m) whose mean probability map gives the
    # background, the val score and the points (a deviation for short schedules; paper: 1).
    _C.NUCLEIWEAK.QU2020.DET.ENSEMBLE = 1
    # Which round's detector finds the training points: "last" (the paper) or "best_val" (the
    # round with the best DET.SELECT_METRIC on the val split; for short schedules).
    _C.NUCLEIWEAK.QU2020.DET.SELECT_ROUND = "last"
    # Choose the detector's threshold and minimum blob area (NUCLEIWEAK.UNET.POINT_THRESHOLD,
    # POINT_MIN_AREA) on val by detection F1 before it finds the training points (a deviation:
    # the paper fixes them).
    _C.NUCLEIWEAK.QU2020.DET.CALIBRATE = True
    # Choose the threshold and minimum area on val before every periodic evaluation of a
    # detection round, so the checkpoint kept has the best val F1 at its own best
    # post-processing (a deviation: without it checkpoints are scored at the fixed threshold).
    _C.NUCLEIWEAK.QU2020.DET.CALIBRATE_EVAL = False
    # Metric (key in the evaluator's results) that selects the detection checkpoint on val.
    _C.NUCLEIWEAK.QU2020.DET.SELECT_METRIC = "nuclei/det_F1"
    # Background propagation: pixels with probability below this become background.
    _C.NUCLEIWEAK.QU2020.DET.BG_LOW = 0.1
    # Background propagation: components above this probability and larger than
    # BG_MIN_AREA (paper: pi * r1^2) become background too.
    _C.NUCLEIWEAK.QU2020.DET.BG_HIGH = 0.7
    # Area (pixels) above which a high-probability component counts as background (0 = pi r1^2).
    _C.NUCLEIWEAK.QU2020.DET.BG_MIN_AREA = 0
    # Iterations of each detection round.
    _C.NUCLEIWEAK.QU2020.DET.MAX_ITER = 2000
    # Learning rate of the detection rounds (paper, MO: 1e-3 with Adam).
    _C.NUCLEIWEAK.QU2020.DET.BASE_LR = 1e-3

    _C.NUCLEIWEAK.QU2020.SEG = CN()
    # Iterations of the segmentation stage (before CRF fine-tuning).
    _C.NUCLEIWEAK.QU2020.SEG.MAX_ITER = 2000
    # Learning rate of the segmentation stage (Qu et al.: 1e-4 with Adam).
    _C.NUCLEIWEAK.QU2020.SEG.BASE_LR = 1e-4
    # Metric that selects the segmentation (and CRF) checkpoint on val.
    _C.NUCLEIWEAK.QU2020.SEG.SELECT_METRIC = "nuclei/AJI"
    # Choose the foreground threshold of the final model on val (stage "calibrate"; the paper
    # takes the argmax, i.e. 0.5, which a short CPU schedule leaves badly calibrated).
    _C.NUCLEIWEAK.QU2020.SEG.CALIBRATE_THRESHOLD = True
    # Test-time flips (1, 2, 4 or 8) of the final segmentor alone: the calibrate stage's val
    # choice and the scoring of the eval sets, not the detector or the val evaluations during
    # training (a deviation; 0 keeps NUCLEIWEAK.UNET.TEST_FLIPS everywhere).
    _C.NUCLEIWEAK.QU2020.SEG.FINAL_TEST_FLIPS = 0
    # Config overrides [KEY, VALUE, ...] of the segmentation stages alone (seg, crf, calibrate
    # and the final model), e.g. a wider segmentor than the detector (a deviation: the paper
    # uses one ResNet-34 for both); [] keeps the detector's model.
    _C.NUCLEIWEAK.QU2020.SEG.MODEL_OPTS = []

    _C.NUCLEIWEAK.QU2020.LABEL = CN()
    # Colour feature of the cluster label: "kmeans" (Qu et al.: RGB / 10) or "adaptive" (Liu et
    # al. ISBI 2022: RGB scaled per image, MoNuSeg lambda 0.2 and L 60; a deviation).
    _C.NUCLEIWEAK.QU2020.LABEL.KIND = "kmeans"
    # Clip (pixels) of the distance-to-point feature of the cluster label (Qu: 20).
    _C.NUCLEIWEAK.QU2020.LABEL.D_MAX = 20.0
    # Per-Voronoi-cell refinement of the nucleus cluster: dilate by this disk radius (Qu: 5) ...
    _C.NUCLEIWEAK.QU2020.LABEL.DILATE_RADIUS = 5
    # ... fill holes, then erode by this one (Qu's code: 7, which shrinks every nucleus by 2 px).
    _C.NUCLEIWEAK.QU2020.LABEL.ERODE_RADIUS = 7

    _C.NUCLEIWEAK.QU2020.CRF = CN()
    # Learning-rate factor of the fine-tuning stage relative to SEG.BASE_LR (paper: 0.1).
    _C.NUCLEIWEAK.QU2020.CRF.LR_FACTOR = 0.1
    # Iterations of the CRF fine-tuning stage (0 skips the stage).
    _C.NUCLEIWEAK.QU2020.CRF.MAX_ITER = 400

    for old, new in RENAMED_KEYS.items():
        _C.register_renamed_key(old, new)
    for old in REMOVED_KEYS:
        _C.register_renamed_key(
            old,
            "(removed)",
            "the pipeline passes it to the mapper or model "
            "as a constructor argument; it is not a user setting",
        )
