"""Meta-architectures shared by the UNet methods; importing this package registers them.

- ``NucleiWeakUNetSegmentor`` (alias ``NucleiSemanticSegmentor``): semantic segmentation with
  ignore-aware multi-target loss, optional dense-CRF loss, instance post-processing;
- ``NucleiWeakUNetPointDetector`` (alias ``NucleiPointDetector``): 1-channel detection map with a
  weighted MSE, points from its components; ``NucleiWeakPointDetectorEnsemble``: the mean
  probability map of several trained detectors;
- ``NucleiWeakStainRCNN``: ``GeneralizedRCNN`` with inference-time stain normalisation, the base
  of the methods' Mask R-CNN meta-architectures (not registered).
"""

from .point_detector import NucleiWeakPointDetectorEnsemble, NucleiWeakUNetPointDetector
from .postprocess import instances_from_foreground, points_from_probability
from .rcnn import NucleiWeakStainRCNN
from .segmentor import NucleiWeakUNetSegmentor
from .stain_input import StainInputMixin, model_normalises_stains
from .unet import UNetModelMixin, instances_from_map

__all__ = [
    "NucleiWeakPointDetectorEnsemble",
    "NucleiWeakUNetPointDetector",
    "NucleiWeakStainRCNN",
    "NucleiWeakUNetSegmentor",
    "StainInputMixin",
    "UNetModelMixin",
    "instances_from_foreground",
    "instances_from_map",
    "model_normalises_stains",
    "points_from_probability",
]
