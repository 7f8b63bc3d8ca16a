"""ResNet encoder + UNet decoder shared by the UNet-based methods (Qu et al., SPN+IEN, PROnet).

Importing this package registers:

- ``build_nucleiweak_resnet_backbone`` and ``build_nucleiweak_resnet_fpn_backbone`` (the
  detectors' ResNet-FPN with ImageNet initialisation) in Detectron2's ``BACKBONE_REGISTRY``;
- ``NucleiWeakUNetHead`` in ``SEM_SEG_HEADS_REGISTRY``.
"""

from .hematoxylin import hematoxylin_channel, hematoxylin_density
from .imagenet import (
    check_imagenet_normalisation,
    convert_torchvision_resnet,
    imagenet_weights_from_cfg,
    imagenet_weights_into_backbone,
    load_imagenet_weights,
)
from .resnet_encoder import NucleiWeakResNet, build_nucleiweak_resnet_backbone
from .resnet_fpn import build_nucleiweak_resnet_fpn_backbone
from .tiling import sliding_window_apply
from .unet_head import NucleiWeakUNetHead, ignore_aware_cross_entropy

__all__ = [
    "NucleiWeakResNet",
    "build_nucleiweak_resnet_backbone",
    "build_nucleiweak_resnet_fpn_backbone",
    "NucleiWeakUNetHead",
    "ignore_aware_cross_entropy",
    "sliding_window_apply",
    "convert_torchvision_resnet",
    "load_imagenet_weights",
    "check_imagenet_normalisation",
    "imagenet_weights_from_cfg",
    "imagenet_weights_into_backbone",
    "hematoxylin_density",
    "hematoxylin_channel",
]
