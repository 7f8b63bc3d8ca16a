"""Config keys of the shared model parts: ``cfg.NUCLEIWEAK.UNET`` (the ResNet-UNet
meta-architectures and their post-processing) and ``cfg.NUCLEIWEAK.LOSSES`` (shared losses).

No method node is read by anything in :mod:`nucleiweak_d2.modeling`; a method sets these keys in
its YAML files or passes constructor arguments from its pipeline.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_modeling_config", "add_unet_config", "add_losses_config"]


def add_unet_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.UNET`` node (one comment per key); idempotent.

    The encoder is configured by Detectron2's ``MODEL.RESNETS`` keys (``DEPTH`` 18/34/50,
    ``NORM``, ``STEM_OUT_CHANNELS``, ``RES2_OUT_CHANNELS``) and the head by
    ``MODEL.SEM_SEG_HEAD`` (``IN_FEATURES``, ``NUM_CLASSES``, ``IGNORE_VALUE``, ``NORM``,
    ``LOSS_WEIGHT``); the keys below are the UNet-specific ones.
    """
    if "UNET" in cfg.NUCLEIWEAK:
        return
    _C = cfg
    _C.NUCLEIWEAK.UNET = CN()
    # Output channels of each decoder level, from the deepest skip (stride 16) to stride 1;
    # one entry per SEM_SEG_HEAD.IN_FEATURES feature.
    _C.NUCLEIWEAK.UNET.DECODER_CHANNELS = [256, 128, 64, 64, 32]
    # Dropout after every decoder block (Qu et al.: 0.1).
    _C.NUCLEIWEAK.UNET.DROPOUT = 0.1
    # Weight of each target map in the segmentation loss; Qu et al.: (Voronoi, cluster) =
    # (alpha, 1 - alpha) = (0.5, 0.5). Its length is the number of target maps the mapper gives.
    _C.NUCLEIWEAK.UNET.TARGET_WEIGHTS = [1.0]
    # Inference tile size in pixels (square); 0 runs on the whole (padded) image.
    _C.NUCLEIWEAK.UNET.INFERENCE_TILE = 0
    # CPU inference in bfloat16 autocast with channels_last weights (probabilities differ by
    # ~1e-4 from float32; ~3x faster on CPUs with bf16 units, benchmarks/bench_training_speed.py).
    _C.NUCLEIWEAK.UNET.FAST_CPU_INFERENCE = False
    # Overlap of inference tiles in pixels (Qu et al.: 224 tiles, overlap 80).
    _C.NUCLEIWEAK.UNET.INFERENCE_OVERLAP = 80
    # Test-time augmentation (not in the papers): logits averaged over 1 (off), 2, 4 or 8
    # flips/transposes of the input; segmentors and point detectors only. Costs that many forwards.
    _C.NUCLEIWEAK.UNET.TEST_FLIPS = 1
    # Segmentor: foreground probability threshold forced at inference, in (0, 1); <= 0 uses the
    # threshold saved in the weights (chosen on val by a pipeline's calibration, else 0.5 = argmax).
    _C.NUCLEIWEAK.UNET.FG_THRESHOLD = -1.0
    # Segmentor post-processing: objects smaller than this (pixels) are removed (Qu et al.: 20).
    _C.NUCLEIWEAK.UNET.MIN_AREA = 20
    # Segmentor post-processing: fill holes of every object.
    _C.NUCLEIWEAK.UNET.FILL_HOLES = True
    # Segmentor post-processing: split touching nuclei by a distance-transform watershed.
    _C.NUCLEIWEAK.UNET.SPLIT_TOUCHING = False
    # Minimum distance (pixels) between watershed seeds when SPLIT_TOUCHING is on.
    _C.NUCLEIWEAK.UNET.SPLIT_MIN_DISTANCE = 5
    # Split distances a pipeline's val calibration tries with each threshold (0 = no split);
    # about half to one nucleus radius (MoNuSeg: r ~ 11 px).
    _C.NUCLEIWEAK.UNET.CALIBRATION_SPLITS = [0, 6, 8, 10, 12]
    # A pipeline's segmentor training stages: calibrate the threshold and split on val before
    # every periodic evaluation, so checkpoints are selected at their own best post-processing
    # (one more pass over val and the calibration grid per evaluation; never in --eval-only).
    _C.NUCLEIWEAK.UNET.CALIBRATE_EVAL = False
    # Segmentor: also return "instances" (dense pred_masks, for COCOEvaluator) besides
    # "instance_map" (memory: one dense mask per object).
    _C.NUCLEIWEAK.UNET.OUTPUT_INSTANCES = True
    # Point detector: probability threshold of the detection map.
    _C.NUCLEIWEAK.UNET.POINT_THRESHOLD = 0.35
    # Point detector: components of the thresholded map smaller than this (pixels) are dropped.
    _C.NUCLEIWEAK.UNET.POINT_MIN_AREA = 12
    # Point detector: components larger than this (pixels) are dropped (0 = no limit).
    _C.NUCLEIWEAK.UNET.POINT_MAX_AREA = 200
    # Local torchvision ResNet .pth (resnet18/34/50-*.pth) loaded into the encoder when the model
    # is built ("" = random encoder; skipped when MODEL.WEIGHTS is set); also the ResNet of the
    # Mask R-CNN (feng2019) and FCOS (wang2024) models, whose FPN and heads stay random. Needs torchvision's widths
    # and depth, INPUT.FORMAT RGB/BGR with ImageNet PIXEL_MEAN/STD in that order (see
    # modeling/backbone/imagenet.py) and, for R50+, RESNETS.STRIDE_IN_1X1 False.
    _C.NUCLEIWEAK.UNET.IMAGENET_WEIGHTS = ""
    # Append the standardised hematoxylin optical density (colour deconvolution, rgb2hed's H)
    # to the model's input as a 4th channel; with IMAGENET_WEIGHTS its stem weights start at 0.
    _C.NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT = False


def add_losses_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.LOSSES`` node (one comment per key); idempotent."""
    if "LOSSES" in cfg.NUCLEIWEAK:
        return
    _C = cfg
    _C.NUCLEIWEAK.LOSSES = CN()
    _C.NUCLEIWEAK.LOSSES.CRF = CN()
    # Weight beta of the dense-CRF loss when a pipeline stage turns it on (Qu et al., MO: 0.005).
    _C.NUCLEIWEAK.LOSSES.CRF.WEIGHT = 0.005
    # Spatial bandwidth sigma_xy (pixels) of the bilateral kernel (Qu et al., MO: 9).
    _C.NUCLEIWEAK.LOSSES.CRF.SIGMA_XY = 9.0
    # Colour bandwidth sigma_rgb of the bilateral kernel, image in [0, 1] (Qu et al., MO: 0.1).
    _C.NUCLEIWEAK.LOSSES.CRF.SIGMA_RGB = 0.1


def add_modeling_config(cfg):
    """Add every node of the shared model parts (``UNET``, ``LOSSES``)."""
    add_unet_config(cfg)
    add_losses_config(cfg)
