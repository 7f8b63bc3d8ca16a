"""Loss functions of the weakly supervised methods (plain torch, no detectron2, no cfg)."""

from .bilateral_grid import BilateralGrid, bilateral_filter
from .dense_crf import QU2020_CRF_PARAMS, dense_crf_loss, dense_crf_postprocess, nonblack_mask
from .mse import weighted_mse_loss

__all__ = [
    "BilateralGrid",
    "QU2020_CRF_PARAMS",
    "bilateral_filter",
    "dense_crf_loss",
    "dense_crf_postprocess",
    "nonblack_mask",
    "weighted_mse_loss",
]
