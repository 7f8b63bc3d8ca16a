"""Config keys of the ResNet-UNet, under ``cfg.NUCLEIWEAK.UNET`` (shared by every UNet method)."""

from detectron2.config import CfgNode as CN


def add_unet_config(cfg):
    """Add the ``cfg.NUCLEIWEAK.UNET`` node; idempotent, so several methods may call it.

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
    # Overlap of inference tiles in pixels (Qu et al.: 224 tiles, overlap 80).
    _C.NUCLEIWEAK.UNET.INFERENCE_OVERLAP = 80
