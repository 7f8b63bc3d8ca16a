"""Feng et al. 2019: Mask R-CNN for partially annotated images.

Importing this package registers:

- ``build_nucleiweak_feng2019_attention_fpn_backbone`` in ``BACKBONE_REGISTRY`` (decomposed
  self-attention on the FPN outputs);
- ``NucleiWeakFeng2019RPN`` in ``PROPOSAL_GENERATOR_REGISTRY`` (blocked anchors);
- ``NucleiWeakFeng2019ROIHeads`` in ``ROI_HEADS_REGISTRY`` (blocked proposals);
- ``NucleiWeakFeng2019RCNN`` in ``META_ARCH_REGISTRY`` (centerness/box head, pseudo-boxes);
- ``NucleiWeakFeng2019BaselineRCNN`` in ``META_ARCH_REGISTRY`` (``GeneralizedRCNN`` with the
  paper's optional 3x3 mask dilation, for the baselines);
- ``NucleiWeakFeng2019Pipeline`` in ``NUCLEIWEAK_PIPELINE_REGISTRY`` (train, instance score
  threshold chosen on val, evaluation: how ``tools/benchmark.py`` runs every Feng model);
- the method ``feng2019`` (config node ``NUCLEIWEAK.FENG2019``; a single model trained by
  ``tools/train_net.py``, or the pipeline when a config names it).

The names before the methods/ layout (``NucleiWeakPartialRCNN``, ``NucleiWeakPartialRPN``,
``NucleiWeakPartialROIHeads``, ``build_nucleiweak_attention_fpn_backbone``) stay registered as
aliases, so older configs load.

The partial-mask training data are read by the data layer's ``NucleiDatasetMapper``, which
already keeps only annotations with ``point_labeled == 1`` and puts their masks on the instances.

Evaluation helpers (no registration): :mod:`.crops` makes the fully annotated crops of the
paper's "DH25crop" baseline (numpy), :mod:`.quality` measures the pseudo-boxes against the
unannotated nuclei, :mod:`.postprocess` holds the 3x3 mask dilation. See docs/methods/feng2019.md.
"""

from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    PROPOSAL_GENERATOR_REGISTRY,
    ROI_HEADS_REGISTRY,
)

from ...data.registry import register_alias
from .. import register_method
from .attention import DecomposedSelfAttention, decomposed_attention
from .backbone import AttentionFPN, build_nucleiweak_feng2019_attention_fpn_backbone
from .centerness import CenternessBoxHead, centerness_targets, union_of_masks
from .config import add_feng2019_config
from .crops import crop_fully_annotated, crop_seed, crop_window
from .pipeline import NucleiWeakFeng2019Pipeline, median_box_size
from .postprocess import dilate_masks, dilate_results
from .quality import evaluate_pseudo_boxes, pseudo_box_quality, sum_quality
from .rcnn import NucleiWeakFeng2019BaselineRCNN, NucleiWeakFeng2019RCNN
from .roi_heads import NucleiWeakFeng2019ROIHeads
from .rpn import NucleiWeakFeng2019RPN, split_ignored, with_blocked_boxes

__all__ = [
    "DecomposedSelfAttention",
    "decomposed_attention",
    "AttentionFPN",
    "build_nucleiweak_feng2019_attention_fpn_backbone",
    "CenternessBoxHead",
    "centerness_targets",
    "union_of_masks",
    "add_feng2019_config",
    "crop_fully_annotated",
    "crop_seed",
    "crop_window",
    "dilate_masks",
    "median_box_size",
    "NucleiWeakFeng2019Pipeline",
    "dilate_results",
    "evaluate_pseudo_boxes",
    "pseudo_box_quality",
    "sum_quality",
    "NucleiWeakFeng2019BaselineRCNN",
    "NucleiWeakFeng2019RCNN",
    "NucleiWeakFeng2019ROIHeads",
    "NucleiWeakFeng2019RPN",
    "split_ignored",
    "with_blocked_boxes",
]

register_alias(
    BACKBONE_REGISTRY,
    "build_nucleiweak_attention_fpn_backbone",
    build_nucleiweak_feng2019_attention_fpn_backbone,
)
register_alias(PROPOSAL_GENERATOR_REGISTRY, "NucleiWeakPartialRPN", NucleiWeakFeng2019RPN)
register_alias(ROI_HEADS_REGISTRY, "NucleiWeakPartialROIHeads", NucleiWeakFeng2019ROIHeads)
register_alias(META_ARCH_REGISTRY, "NucleiWeakPartialRCNN", NucleiWeakFeng2019RCNN)

register_method(
    "feng2019",
    add_config=add_feng2019_config,
    pipelines=("NucleiWeakFeng2019Pipeline",),
    description="Feng et al., IEEE Access 2019: Mask R-CNN with decomposed self-attention and "
    "centerness pseudo-boxes that block false negatives on partially annotated images",
)
