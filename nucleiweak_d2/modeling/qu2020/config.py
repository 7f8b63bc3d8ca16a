"""Config keys of the qu2020 method, under ``cfg.NUCLEIWEAK.QU2020``.

Defaults follow Qu et al. (TMI 2020) on MoNuSeg (MO): r1 = 11, r2 = 22, sigma = 2.75,
3 self-training rounds, alpha = 0.5, CRF weight 0.005 with (sigma_xy, sigma_rgb) = (9, 0.1)
and lr x 0.1 for the fine-tuning. Iteration counts are per stage; the YAML leaves set them.
"""

from detectron2.config import CfgNode as CN

from ..backbone.config import add_unet_config


def add_qu2020_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.QU2020`` node (one comment per key) and the UNet keys."""
    add_unet_config(cfg)
    _C = cfg
    _C.NUCLEIWEAK.QU2020 = CN()
    # JSON {image_id: [[x, y], ...]} of the points the segmentation mapper builds pseudo-labels
    # from (the pipeline writes the merged annotated + detected points); "" = annotated points.
    _C.NUCLEIWEAK.QU2020.POINTS_FILE = ""
    # Folder caching the pseudo-labels / detection targets per image ("" = in memory only).
    _C.NUCLEIWEAK.QU2020.LABEL_CACHE_DIR = ""
    # Post-processing: objects smaller than this (pixels) are removed (Qu et al.: 20).
    _C.NUCLEIWEAK.QU2020.MIN_AREA = 20
    # Post-processing: fill holes of every object.
    _C.NUCLEIWEAK.QU2020.FILL_HOLES = True
    # Post-processing: split touching nuclei by a distance-transform watershed (not in Qu et al.).
    _C.NUCLEIWEAK.QU2020.SPLIT_TOUCHING = False
    # Minimum distance (pixels) between watershed seeds when SPLIT_TOUCHING is on.
    _C.NUCLEIWEAK.QU2020.SPLIT_MIN_DISTANCE = 5
    # Also return "instances" (dense pred_masks, for COCOEvaluator) besides "instance_map".
    _C.NUCLEIWEAK.QU2020.OUTPUT_INSTANCES = True
    # Datasets the pipeline evaluates its final models on (e.g. test, testA, testB);
    # model selection always uses DATASETS.TEST[0] (the val split).
    _C.NUCLEIWEAK.QU2020.EVAL_DATASETS = []
    # Metric (key in the evaluator's results) that selects the segmentation checkpoint on val.
    _C.NUCLEIWEAK.QU2020.SEG_SELECT_METRIC = "nuclei/AJI"
    # Metric that selects the detection checkpoint on val.
    _C.NUCLEIWEAK.QU2020.DET_SELECT_METRIC = "nuclei/det_F1"
    # Write predicted instance maps / points of the final evaluation as files (overlays, demo).
    _C.NUCLEIWEAK.QU2020.SAVE_PREDICTIONS = True

    _C.NUCLEIWEAK.QU2020.DET = CN()
    # r1: mean nucleus radius (pixels); Gaussian support, and merge radius of detections.
    _C.NUCLEIWEAK.QU2020.DET.R1 = 11.0
    # r2: outer radius of the background annulus of the extended Gaussian mask (2 * r1).
    _C.NUCLEIWEAK.QU2020.DET.R2 = 22.0
    # Gaussian bandwidth sigma of the extended Gaussian mask.
    _C.NUCLEIWEAK.QU2020.DET.SIGMA = 2.75
    # MSE weight of pixels with target > 0 (background pixels weigh 1).
    _C.NUCLEIWEAK.QU2020.DET.FG_WEIGHT = 10.0
    # Probability threshold of the detection map.
    _C.NUCLEIWEAK.QU2020.DET.THRESHOLD = 0.35
    # Detected components smaller than this (pixels) are dropped.
    _C.NUCLEIWEAK.QU2020.DET.MIN_AREA = 12
    # Detected components larger than this (pixels) are dropped (0 = no limit).
    _C.NUCLEIWEAK.QU2020.DET.MAX_AREA = 200
    # Self-training rounds with background propagation after the initial training (paper: 3).
    _C.NUCLEIWEAK.QU2020.DET.ROUNDS = 3
    # Which round's detector finds the training points: "last" (the paper) or "best_val" (the
    # round with the best DET_SELECT_METRIC on the val split; for short schedules).
    _C.NUCLEIWEAK.QU2020.DET.SELECT_ROUND = "last"
    # Background propagation: pixels with probability below this become background.
    _C.NUCLEIWEAK.QU2020.DET.BG_LOW = 0.1
    # Background propagation: components above this probability and larger than
    # BG_MIN_AREA (paper: pi * r1^2) become background too.
    _C.NUCLEIWEAK.QU2020.DET.BG_HIGH = 0.7
    # Area (pixels) above which a high-probability component counts as background (0 = pi r1^2).
    _C.NUCLEIWEAK.QU2020.DET.BG_MIN_AREA = 0
    # Folder of background maps (<image_id>.png, 1 = background) from the previous round
    # ("" = none, the initial round).
    _C.NUCLEIWEAK.QU2020.DET.BACKGROUND_DIR = ""
    # Iterations of each detection round.
    _C.NUCLEIWEAK.QU2020.DET.MAX_ITER = 2000
    # Learning rate of the detection rounds (paper, MO: 1e-3 with Adam).
    _C.NUCLEIWEAK.QU2020.DET.BASE_LR = 1e-3

    _C.NUCLEIWEAK.QU2020.SEG = CN()
    # Iterations of the segmentation stage (before CRF fine-tuning).
    _C.NUCLEIWEAK.QU2020.SEG.MAX_ITER = 2000
    # Learning rate of the segmentation stage (Qu et al.: 1e-4 with Adam).
    _C.NUCLEIWEAK.QU2020.SEG.BASE_LR = 1e-4

    _C.NUCLEIWEAK.QU2020.CRF = CN()
    # Add the dense-CRF loss to the segmentation loss (the pipeline turns it on for fine-tuning).
    _C.NUCLEIWEAK.QU2020.CRF.ENABLED = False
    # Weight beta of the dense-CRF loss (MO: 0.005).
    _C.NUCLEIWEAK.QU2020.CRF.WEIGHT = 0.005
    # Spatial bandwidth sigma_xy (pixels) of the bilateral kernel (MO: 9).
    _C.NUCLEIWEAK.QU2020.CRF.SIGMA_XY = 9.0
    # Colour bandwidth sigma_rgb of the bilateral kernel, image in [0, 1] (MO: 0.1).
    _C.NUCLEIWEAK.QU2020.CRF.SIGMA_RGB = 0.1
    # Learning-rate factor of the fine-tuning stage relative to SEG.BASE_LR (paper: 0.1).
    _C.NUCLEIWEAK.QU2020.CRF.LR_FACTOR = 0.1
    # Iterations of the CRF fine-tuning stage (0 skips the stage).
    _C.NUCLEIWEAK.QU2020.CRF.MAX_ITER = 400
