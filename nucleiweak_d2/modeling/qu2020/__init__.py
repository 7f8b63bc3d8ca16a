"""Qu et al. (IEEE TMI 2020): nuclei detection and segmentation from partial points.

Importing this package registers (side effects only):

- backbone ``build_nucleiweak_resnet_backbone`` and head ``NucleiWeakUNetHead``;
- meta-architectures ``NucleiSemanticSegmentor`` and ``NucleiPointDetector``;
- mappers ``NucleiWeakQu2020SegMapper`` and ``NucleiWeakQu2020DetMapper``.

The pipeline ``Qu2020Pipeline`` lives in :mod:`nucleiweak_d2.engine.qu2020_pipeline`.
"""

from .. import backbone as _backbone  # noqa: F401  (registration side effects)
from . import detector as _detector  # noqa: F401  (registration side effects)
from . import mappers as _mappers  # noqa: F401  (registration side effects)
from . import segmentor as _segmentor  # noqa: F401  (registration side effects)
from .config import add_qu2020_config
from .detector import NucleiPointDetector
from .losses import weighted_mse_loss
from .mappers import NucleiWeakQu2020DetMapper, NucleiWeakQu2020SegMapper
from .postprocess import instances_from_foreground, merge_points, points_from_probability
from .segmentor import NucleiSemanticSegmentor

__all__ = [
    "add_qu2020_config",
    "NucleiPointDetector",
    "NucleiSemanticSegmentor",
    "NucleiWeakQu2020DetMapper",
    "NucleiWeakQu2020SegMapper",
    "instances_from_foreground",
    "merge_points",
    "points_from_probability",
    "weighted_mse_loss",
]
