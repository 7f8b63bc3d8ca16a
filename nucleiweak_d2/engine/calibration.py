"""Post-processing calibrated on the val split: the segmentor's foreground threshold and the
point detector's threshold and minimum blob area.

A network trained for a few hundred CPU iterations on weak labels is not calibrated: on
MoNuSeg its foreground probability on background sits near 0.2-0.3 and nuclei often stay below
0.5, so Qu et al.'s argmax (a 0.5 threshold) loses pixels and whole nuclei (measured: val AJI
0.27-0.35 at 0.5 against 0.32-0.36 at 0.25-0.3 for the three seeds of the leaderboard's CPU
runs). :func:`calibrate_fg_threshold` runs the trained model once over the val split, keeps its
foreground probabilities, and picks the threshold of the highest mean per-image AJI (the
evaluator's aggregation) from a grid; ties go to the threshold nearest 0.5. The choice is
written into the model's ``fg_threshold`` buffer, so it is saved with the weights.

The point detector has the same problem (Qu et al.'s 0.35 threshold and 12-pixel minimum area
were set for their GPU schedule): :func:`select_point_postprocess` picks both on val by the
detection F1 of the summed counts (the evaluator's ``det_F1``). Val only: the test splits are
never read.
"""

import logging

import numpy as np
import torch

from ..evaluation.detection import detection_counts, scores_from_counts
from ..evaluation.ground_truth import gt_label_map
from ..evaluation.metrics import aji

__all__ = [
    "DEFAULT_THRESHOLDS",
    "POINT_THRESHOLDS",
    "POINT_MIN_AREAS",
    "select_threshold",
    "calibrate_fg_threshold",
    "select_point_postprocess",
]

logger = logging.getLogger(__name__)

# Candidate foreground thresholds (0.5 is the uncalibrated argmax).
DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.15, 0.751, 0.05), 2).tolist())
# Candidate detection thresholds and minimum blob areas (pixels) of the point detector.
POINT_THRESHOLDS = tuple(np.round(np.arange(0.15, 0.651, 0.05), 2).tolist())
POINT_MIN_AREAS = (2, 4, 8, 12, 20)


def select_threshold(probs, gts, to_instances, thresholds=DEFAULT_THRESHOLDS):
    """The threshold of the highest mean per-image AJI.

    Parameters
    ----------
    probs : list of numpy.ndarray
        ``(H, W)`` foreground probabilities, one per image.
    gts : list of numpy.ndarray
        ``(H, W)`` ground-truth instance maps of the same images.
    to_instances : callable
        ``to_instances(foreground_bool) -> instance map`` (the model's post-processing).
    thresholds : sequence of float
        Candidates in (0, 1).

    Returns
    -------
    best : float
        The chosen threshold (ties: the one nearest 0.5, then the lower).
    scores : dict of float to float
        Mean AJI of every candidate.

    Raises
    ------
    ValueError
        No image, no candidate, mismatched lists or shapes, a candidate outside (0, 1).
    """
    thresholds = [float(t) for t in thresholds]
    if not probs or len(probs) != len(gts):
        raise ValueError(
            f"calibration needs one ground truth per probability map and at least one image, "
            f"got {len(probs)} maps and {len(gts)} ground truths"
        )
    if not thresholds or any(not 0.0 < t < 1.0 for t in thresholds):
        raise ValueError(f"thresholds must be a non-empty list in (0, 1), got {thresholds}")
    for p, g in zip(probs, gts):
        if np.shape(p) != np.shape(g):
            raise ValueError(
                f"probability map {np.shape(p)} and ground truth {np.shape(g)} differ in size"
            )
    scores = {
        t: float(np.mean([aji(g, to_instances(p > t)) for p, g in zip(probs, gts)]))
        for t in thresholds
    }
    best = max(thresholds, key=lambda t: (round(scores[t], 12), -abs(t - 0.5), -t))
    return best, scores


def calibrate_fg_threshold(model, records, run_model, thresholds=DEFAULT_THRESHOLDS):
    """Choose the foreground threshold of ``model`` on ``records`` and store it in the model.

    Parameters
    ----------
    model : NucleiWeakUNetSegmentor
        A trained segmentor (its ``fg_threshold`` buffer is set in place; its instance
        post-processing is reused).
    records : list of dict
        Val dataset dicts with ground truth (masks or label files).
    run_model : callable
        ``run_model(record) -> output dict`` with ``"prob"`` (the model's inference output).
    thresholds : sequence of float
        Candidates.

    Returns
    -------
    dict
        ``{"fg_threshold": chosen, "val_aji": {threshold: mean AJI}, "images": n}``.
    """
    from ..modeling.meta_arch.postprocess import instances_from_foreground

    probs, gts = [], []
    for record in records:
        probs.append(run_model(record)["prob"].float().cpu().numpy())
        gts.append(gt_label_map(record))

    def to_instances(fg):
        return instances_from_foreground(
            fg, model.min_area, model.fill_holes, model.split_touching, model.split_min_distance
        )

    best, scores = select_threshold(probs, gts, to_instances, thresholds)
    with torch.no_grad():
        model.fg_threshold.fill_(best)
    logger.info(
        "foreground threshold on val (%d images): %.2f (AJI %.4f; 0.5 gives %s)",
        len(records),
        best,
        scores[best],
        f"{scores[0.5]:.4f}" if 0.5 in scores else "n/a",
    )
    return {
        "fg_threshold": best,
        "val_aji": {str(t): s for t, s in scores.items()},
        "images": len(records),
    }


def select_point_postprocess(
    probs, gt_points, radius, to_points, thresholds=POINT_THRESHOLDS, min_areas=POINT_MIN_AREAS
):
    """The (threshold, minimum area) of the best detection F1 over all images.

    Parameters
    ----------
    probs : list of numpy.ndarray
        ``(H, W)`` detection probabilities, one per image.
    gt_points : list of numpy.ndarray
        ``(N, 2)`` ground-truth (x, y) points of the same images.
    radius : float
        Detection radius (``NUCLEIWEAK.EVAL.DET_RADIUS``).
    to_points : callable
        ``to_points(prob, threshold, min_area) -> (K, 2) points`` (the model's rule).
    thresholds, min_areas : sequence
        Candidates.

    Returns
    -------
    best : tuple of (float, int)
        Chosen ``(threshold, min_area)``; ties: the lower threshold distance to 0.35 (Qu et
        al.'s value), then the larger area.
    scores : dict of str to float
        F1 of every candidate, keyed ``"<threshold>/<min_area>"``.
    """
    if not probs or len(probs) != len(gt_points):
        raise ValueError(
            f"calibration needs ground-truth points for every probability map and at least one "
            f"image, got {len(probs)} maps and {len(gt_points)} point sets"
        )
    if not thresholds or not min_areas:
        raise ValueError("point calibration needs at least one threshold and one minimum area")
    scores, keyed = {}, {}
    for t in thresholds:
        for a in min_areas:
            tp = fp = fn = 0
            for prob, gt in zip(probs, gt_points):
                c = detection_counts(gt, to_points(prob, float(t), int(a)), radius)
                tp, fp, fn = tp + c["tp"], fp + c["fp"], fn + c["fn"]
            f1 = scores_from_counts(tp, fp, fn)["f1"]
            keyed[(float(t), int(a))] = f1
            scores[f"{float(t)}/{int(a)}"] = f1
    best = max(keyed, key=lambda k: (round(keyed[k], 12), -abs(k[0] - 0.35), k[1]))
    return best, scores
