"""Post-processing of DoNuSeg chosen on val: the segmentation threshold and the FCOS score
threshold (numpy).

Why: the paper gives neither value (we use 0.5 and Detectron2's FCOS 0.2), and a model trained
for a few hundred CPU iterations is not calibrated. Measured on two MoNuSeg val images with the
600-iteration CPU model at 100 % points (commit 63dde01, seed 0): the nucleus probability
stays low, so ``Y > 0.5`` keeps 23 % of the nucleus pixels at 93 % precision (pixel F1 0.37),
``Y > 0.2`` keeps 45-51 % at 85-86 % (pixel F1 0.59-0.64); and the detector at 0.2 gives twice
as many boxes as there are nuclei (805 for 405, 945 for 444). Both thresholds decide what the
instance maps contain, so they are chosen together, by the evaluator's mean per-image AJI.

The network runs once, at the lowest score candidate: FCOS keeps ``score > threshold`` before
its top-k and non-maximum suppression, and both commute with a higher score cut (a box is
only ever suppressed by a higher-scoring one), so filtering the kept boxes by ``score > t``
gives exactly the detections the model returns at threshold ``t``.
"""

import numpy as np

from ...evaluation.metrics import aji
from .instances import split_mask_by_boxes

__all__ = ["select_postprocess"]


def _check(probs, detections, gts, seg_thresholds, score_thresholds):
    if not probs or not len(probs) == len(detections) == len(gts):
        raise ValueError(
            "post-processing selection needs one probability map, detection set and ground "
            f"truth per image and at least one image, got {len(probs)}, {len(detections)} and "
            f"{len(gts)}"
        )
    if not seg_thresholds or any(not 0.0 < t < 1.0 for t in seg_thresholds):
        raise ValueError(
            f"segmentation thresholds must be a non-empty list in (0, 1), got {seg_thresholds}"
        )
    if not score_thresholds or any(not 0.0 <= t < 1.0 for t in score_thresholds):
        raise ValueError(
            f"score thresholds must be a non-empty list in [0, 1), got {score_thresholds}"
        )
    for p, (boxes, scores), g in zip(probs, detections, gts):
        if np.shape(p) != np.shape(g):
            raise ValueError(
                f"probability map {np.shape(p)} and ground truth {np.shape(g)} differ in size"
            )
        if np.shape(boxes) != (len(scores), 4):
            raise ValueError(
                f"boxes must be (K, 4) for K scores, got {np.shape(boxes)} and {len(scores)}"
            )


def select_postprocess(probs, detections, gts, seg_thresholds, score_thresholds, split_args=None):
    """The (segmentation threshold, score threshold) pair of the best mean per-image AJI.

    Parameters
    ----------
    probs : list of numpy.ndarray
        ``(H, W)`` nucleus probability of each image.
    detections : list of (numpy.ndarray, numpy.ndarray)
        ``(boxes (K, 4) x0 y0 x1 y1, scores (K,))`` of each image, made at a score threshold
        no higher than the lowest candidate.
    gts : list of numpy.ndarray
        ``(H, W)`` ground-truth instance maps.
    seg_thresholds : sequence of float
        Candidates in (0, 1): foreground is ``prob > t``.
    score_thresholds : sequence of float
        Candidates in [0, 1): a box is kept when ``score > t``.
    split_args : dict or None
        Keyword arguments of :func:`~.instances.split_mask_by_boxes` (the model's).

    Returns
    -------
    best : (float, float)
        The chosen pair; ties go to the first in candidate order (segmentation thresholds
        outer, score thresholds inner).
    scores : dict
        ``{"<seg>/<score>": mean AJI}`` of every pair.

    Raises
    ------
    ValueError
        No image, mismatched lists or shapes, an empty candidate list or one out of range.
    """
    seg_thresholds = [float(t) for t in seg_thresholds]
    score_thresholds = [float(t) for t in score_thresholds]
    _check(probs, detections, gts, seg_thresholds, score_thresholds)
    scores, best, best_value = {}, None, -np.inf
    for s in seg_thresholds:
        for c in score_thresholds:
            values = []
            for p, (boxes, conf), g in zip(probs, detections, gts):
                keep = np.asarray(conf) > c
                inst, _ = split_mask_by_boxes(
                    np.asarray(p) > s,
                    np.asarray(boxes, dtype=np.float64)[keep],
                    np.asarray(conf)[keep],
                    **(split_args or {}),
                )
                values.append(aji(g, inst))
            value = float(np.mean(values))
            scores[f"{s:g}/{c:g}"] = value
            if round(value, 12) > round(best_value, 12):
                best, best_value = (s, c), value
    return best, scores
