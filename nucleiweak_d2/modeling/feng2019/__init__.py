"""Feng et al. 2019: Mask R-CNN for partially annotated images (issue 7).

Importing this package registers:

- ``build_nucleiweak_attention_fpn_backbone`` in ``BACKBONE_REGISTRY`` (decomposed self-attention
  on the FPN outputs);
- ``NucleiWeakPartialRPN`` in ``PROPOSAL_GENERATOR_REGISTRY`` (blocked anchors);
- ``NucleiWeakPartialROIHeads`` in ``ROI_HEADS_REGISTRY`` (blocked proposals);
- ``NucleiWeakPartialRCNN`` in ``META_ARCH_REGISTRY`` (centerness/box head, pseudo-boxes).

The partial-mask training data are read by the data layer's ``NucleiDatasetMapper``, which
already keeps only annotations with ``point_labeled == 1`` and puts their masks on the instances.
"""

from .attention import DecomposedSelfAttention, decomposed_attention
from .backbone import AttentionFPN, build_nucleiweak_attention_fpn_backbone
from .centerness import CenternessBoxHead, centerness_targets, union_of_masks
from .config import add_feng2019_config
from .rcnn import NucleiWeakPartialRCNN
from .roi_heads import NucleiWeakPartialROIHeads
from .rpn import NucleiWeakPartialRPN, split_ignored, with_blocked_boxes

__all__ = [
    "DecomposedSelfAttention",
    "decomposed_attention",
    "AttentionFPN",
    "build_nucleiweak_attention_fpn_backbone",
    "CenternessBoxHead",
    "centerness_targets",
    "union_of_masks",
    "add_feng2019_config",
    "NucleiWeakPartialRCNN",
    "NucleiWeakPartialROIHeads",
    "NucleiWeakPartialRPN",
    "split_ignored",
    "with_blocked_boxes",
]
