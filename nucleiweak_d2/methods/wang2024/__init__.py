"""Wang et al. (MICCAI 2024), DoNuSeg: dynamic CAM pseudo-labels on a task-decoupled FCOS.

Importing this package registers (side effects only):

- ``NucleiWeakWang2024DoNuSeg`` in ``META_ARCH_REGISTRY`` (FCOS + localisation, segmentation
  and projector heads, dynamic CAM selection, CAM-guided contrastive loss);
- the pipeline ``NucleiWeakWang2024Pipeline``;
- the method ``wang2024`` (config node ``NUCLEIWEAK.WANG2024``).

Training data come from the data layer's ``NucleiDatasetMapper`` (annotated points as
``gt_points``); every pseudo-label is made inside the model. See ``docs/methods/wang2024.md``.
"""

from .. import register_method
from . import donuseg as _donuseg  # noqa: F401  (registration side effects)
from .cam import binarize_cam, grad_cam, normalize_cam
from .ccl_loss import cam_contrastive_loss, info_nce
from .config import add_wang2024_config
from .dcs import select_cam, similarity_rate
from .donuseg import NucleiWeakWang2024DoNuSeg
from .fcos import IgnoreAwareFCOS
from .instances import split_mask_by_boxes
from .pipeline import NucleiWeakWang2024Pipeline
from .pseudo_boxes import point_boxes
from .seg_loss import dcs_loss, masked_bce

__all__ = [
    "add_wang2024_config",
    "binarize_cam",
    "cam_contrastive_loss",
    "dcs_loss",
    "grad_cam",
    "IgnoreAwareFCOS",
    "info_nce",
    "masked_bce",
    "normalize_cam",
    "NucleiWeakWang2024DoNuSeg",
    "NucleiWeakWang2024Pipeline",
    "point_boxes",
    "select_cam",
    "similarity_rate",
    "split_mask_by_boxes",
]

register_method(
    "wang2024",
    add_config=add_wang2024_config,
    pipelines=("NucleiWeakWang2024Pipeline",),
    description="Wang et al., MICCAI 2024 (DoNuSeg): FCOS + segmentation from points, Grad-CAMs "
    "of the encoder blocks dynamically selected as pseudo-labels, CAM-guided contrastive loss",
)
