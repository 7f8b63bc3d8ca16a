"""Nuclei evaluation: exact metrics (numpy/scipy only) and the Detectron2 evaluator.

Importing this package does not import Detectron2 or torch: ``NucleiEvaluator`` and
``build_nuclei_evaluator`` are loaded on first access.
"""

from .metrics import (
    aggregate,
    aji,
    aji_plus,
    detection_counts,
    detection_metrics,
    image_metrics,
    kaggle_map,
    ncs,
    object_dice,
    object_hausdorff,
    panoptic_quality,
    pixel_metrics,
    segmentation_metrics,
)

__all__ = [
    "aggregate",
    "aji",
    "aji_plus",
    "detection_counts",
    "detection_metrics",
    "image_metrics",
    "kaggle_map",
    "ncs",
    "object_dice",
    "object_hausdorff",
    "panoptic_quality",
    "pixel_metrics",
    "segmentation_metrics",
    "NucleiEvaluator",
    "build_nuclei_evaluator",
]


def __getattr__(name):
    if name in ("NucleiEvaluator", "build_nuclei_evaluator"):
        from . import evaluator

        return getattr(evaluator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
