"""Fitting the stain normalisation target on the training images before training.

``NUCLEIWEAK.DATA.STAIN_NORM.TARGET`` empty with a method set means "fit it on the training
set" (Qu et al. normalise every image to a reference; here the reference is the mean colour
statistics of the training images, :meth:`~nucleiweak_d2.data.stain.StainNormalizer.fit`).
The pipeline fits it once when a training run starts, so every stage's config carries the same
target, and the models keep it in their weights for inference.
"""

import logging

from detectron2.data import DatasetCatalog

from ..data.io import read_image
from ..data.stain import StainNormalizer

__all__ = ["MAX_FIT_IMAGES", "fit_stain_target"]

logger = logging.getLogger(__name__)

# At most this many training images (evenly spaced in the dataset order) are read for the fit.
MAX_FIT_IMAGES = 64


def fit_stain_target(cfg):
    """``cfg`` with ``NUCLEIWEAK.DATA.STAIN_NORM.TARGET`` fitted on ``DATASETS.TRAIN[0]``.

    Returns ``cfg`` itself when there is nothing to fit (method "none", or a target already
    set), else a clone with the target (``cfg`` is not modified).

    Raises
    ------
    ValueError
        A method to fit without a training set, or a training set without images.
    """
    stain = cfg.NUCLEIWEAK.DATA.STAIN_NORM
    if stain.METHOD == "none" or len(stain.TARGET):
        return cfg
    if not cfg.DATASETS.TRAIN:
        raise ValueError(
            f"NUCLEIWEAK.DATA.STAIN_NORM.METHOD is {stain.METHOD!r} with an empty TARGET, and "
            "there is no DATASETS.TRAIN to fit it on: set STAIN_NORM.TARGET"
        )
    records = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    if not records:
        raise ValueError(f"training set {cfg.DATASETS.TRAIN[0]} has no image to fit stains on")
    step = max(1, -(-len(records) // MAX_FIT_IMAGES))
    images = [read_image(r["file_name"]) for r in records[::step]]
    normalizer = StainNormalizer.fit(stain.METHOD, images)
    out = cfg.clone()
    out.defrost()
    out.NUCLEIWEAK.DATA.STAIN_NORM.TARGET = normalizer.target_list()
    if cfg.is_frozen():
        out.freeze()
    logger.info(
        "stain normalisation %s fitted on %d images of %s: %s",
        stain.METHOD,
        len(images),
        cfg.DATASETS.TRAIN[0],
        [round(v, 4) for v in normalizer.target_list()],
    )
    return out
