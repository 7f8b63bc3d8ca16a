"""ResNet encoder + UNet decoder shared by the UNet-based methods (Qu et al., SPN+IEN, PROnet).

Importing this package registers:

- ``build_nucleiweak_resnet_backbone`` in Detectron2's ``BACKBONE_REGISTRY``;
- ``NucleiWeakUNetHead`` in ``SEM_SEG_HEADS_REGISTRY``.
"""

from .resnet_encoder import NucleiWeakResNet, build_nucleiweak_resnet_backbone
from .tiling import sliding_window_apply
from .unet_head import NucleiWeakUNetHead, ignore_aware_cross_entropy

__all__ = [
    "NucleiWeakResNet",
    "build_nucleiweak_resnet_backbone",
    "NucleiWeakUNetHead",
    "ignore_aware_cross_entropy",
    "sliding_window_apply",
]
