"""Detectron2's ResNet-FPN backbone with the project's ImageNet initialisation.

Registered in ``BACKBONE_REGISTRY`` as ``build_nucleiweak_resnet_fpn_backbone`` (the
``MODEL.BACKBONE.NAME`` of ``configs/Base-Nuclei-RCNN-FPN.yaml`` and
``configs/Base-Nuclei-FCOS.yaml``). It is ``build_resnet_fpn_backbone`` unchanged (same modules,
parameter names and random initialisation), then ``NUCLEIWEAK.UNET.IMAGENET_WEIGHTS`` (a local
torchvision ResNet ``.pth``) is loaded into its ResNet, so every detector meta-architecture,
Detectron2's ``GeneralizedRCNN`` included, gets the same loader as the UNet encoders.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

from .imagenet import imagenet_weights_into_backbone

__all__ = ["build_nucleiweak_resnet_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_nucleiweak_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """``build_resnet_fpn_backbone(cfg, input_shape)`` with ImageNet weights in its ResNet.

    Parameters
    ----------
    cfg : detectron2.config.CfgNode
    input_shape : detectron2.layers.ShapeSpec

    Returns
    -------
    detectron2.modeling.backbone.FPN
    """
    backbone = build_resnet_fpn_backbone(cfg, input_shape)
    imagenet_weights_into_backbone(cfg, backbone)
    return backbone
