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
    "SPLIT_DISTANCES",
    "POINT_THRESHOLDS",
    "POINT_MIN_AREAS",
    "select_threshold",
    "calibrate_fg_threshold",
    "calibrate_on_dataset",
    "select_point_postprocess",
    "calibrate_point_detector",
]

logger = logging.getLogger(__name__)

# Candidate foreground thresholds (0.5 is the uncalibrated argmax).
DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.651, 0.05), 2).tolist())
# Candidate splits of touching nuclei: 0 = none (Qu et al.), d = a distance-transform watershed
# with seeds at least d pixels apart.
SPLIT_DISTANCES = (0, 6, 8, 10, 12)
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


def calibrate_fg_threshold(
    model, records, run_model, thresholds=DEFAULT_THRESHOLDS, split_distances=SPLIT_DISTANCES
):
    """Choose the foreground threshold and the split of touching nuclei of ``model`` on
    ``records`` and store them in the model.

    Every split distance is tried with every threshold (:func:`select_threshold`); the pair of
    the highest mean AJI wins, ties going to no split, then the smaller distance.

    Parameters
    ----------
    model : NucleiWeakUNetSegmentor
        A trained segmentor (its ``fg_threshold`` and ``split_distance`` buffers are set in
        place; its ``min_area`` and ``fill_holes`` are reused).
    records : list of dict
        Val dataset dicts with ground truth (masks or label files).
    run_model : callable
        ``run_model(record) -> output dict`` with ``"prob"`` (the model's inference output).
    thresholds : sequence of float
        Candidate thresholds.
    split_distances : sequence of int
        Candidate split distances (0 = no split).

    Returns
    -------
    dict
        ``{"fg_threshold": t, "split_distance": d, "val_aji": {"<t>/<d>": mean AJI},
        "images": n}``.
    """
    from ..modeling.meta_arch.postprocess import instances_from_foreground

    if not split_distances or any(int(d) < 0 for d in split_distances):
        raise ValueError(f"split distances must be >= 0, got {list(split_distances)}")
    probs, gts = [], []
    for record in records:
        probs.append(run_model(record)["prob"].float().cpu().numpy())
        gts.append(gt_label_map(record))

    scores, choices = {}, []
    for d in sorted({int(d) for d in split_distances}):

        def to_instances(fg, d=d):
            return instances_from_foreground(fg, model.min_area, model.fill_holes, d > 0, d)

        best_t, by_t = select_threshold(probs, gts, to_instances, thresholds)
        scores.update({f"{t}/{d}": v for t, v in by_t.items()})
        choices.append((round(by_t[best_t], 12), -d, best_t, d))
    _, _, best_t, best_d = max(choices)  # ties: no split, then the smaller distance
    with torch.no_grad():
        model.fg_threshold.fill_(best_t)
        model.split_distance.fill_(float(best_d))
    logger.info(
        "post-processing on val (%d images): threshold %.2f, split distance %d (AJI %.4f; "
        "0.5 without split gives %s)",
        len(records),
        best_t,
        best_d,
        scores[f"{best_t}/{best_d}"],
        f"{scores['0.5/0']:.4f}" if "0.5/0" in scores else "n/a",
    )
    return {
        "fg_threshold": best_t,
        "split_distance": best_d,
        "val_aji": scores,
        "images": len(records),
    }


def calibrate_on_dataset(model, cfg, dataset_name, probs):
    """:func:`calibrate_fg_threshold` of ``model`` on the registered dataset ``dataset_name``.

    Parameters
    ----------
    model : NucleiWeakUNetSegmentor
        As :func:`calibrate_fg_threshold` (buffers set in place).
    cfg : CfgNode
        Gives the candidate splits, ``NUCLEIWEAK.UNET.CALIBRATION_SPLITS``.
    dataset_name : str
        The val split (records with ground truth).
    probs : dict
        ``{str(image_id): foreground probability}`` of every image of the dataset, the model's
        inference outputs (gathered by the caller).

    Returns
    -------
    dict
        As :func:`calibrate_fg_threshold`.
    """
    from detectron2.data import DatasetCatalog

    return calibrate_fg_threshold(
        model,
        DatasetCatalog.get(dataset_name),
        lambda r: {"prob": probs[str(r["image_id"])]},
        split_distances=list(cfg.NUCLEIWEAK.UNET.CALIBRATION_SPLITS),
    )


def select_point_postprocess(
    probs, gt_points, radius, max_area=0, thresholds=POINT_THRESHOLDS, min_areas=POINT_MIN_AREAS
):
    """The (threshold, minimum area) of the best detection F1 over all images.

    The points of a pair are :func:`~nucleiweak_d2.modeling.meta_arch.postprocess.
    points_from_probability`'s (the point detector's rule); each threshold labels an image once
    for every minimum area.

    Parameters
    ----------
    probs : list of numpy.ndarray
        ``(H, W)`` detection probabilities, one per image.
    gt_points : list of numpy.ndarray
        ``(N, 2)`` ground-truth (x, y) points of the same images.
    radius : float
        Detection radius (``NUCLEIWEAK.EVAL.DET_RADIUS``).
    max_area : int
        The detector's maximum blob area (``<= 0``: none).
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
    from ..modeling.meta_arch.postprocess import point_components, points_from_components

    scores, keyed = {}, {}
    for t in thresholds:
        comps = [point_components(prob, float(t)) for prob in probs]
        for a in min_areas:
            tp = fp = fn = 0
            for (centres, areas), gt in zip(comps, gt_points):
                pts = points_from_components(centres, areas, int(a), max_area)
                c = detection_counts(gt, pts, radius)
                tp, fp, fn = tp + c["tp"], fp + c["fp"], fn + c["fn"]
            f1 = scores_from_counts(tp, fp, fn)["f1"]
            keyed[(float(t), int(a))] = f1
            scores[f"{float(t)}/{int(a)}"] = f1
    best = max(keyed, key=lambda k: (round(keyed[k], 12), -abs(k[0] - 0.35), k[1]))
    return best, scores


def calibrate_point_detector(model, cfg, dataset_name, probs):
    """Choose a point detector's threshold and minimum blob area on the registered val dataset
    ``dataset_name`` (:func:`select_point_postprocess`) and set them on ``model`` in place.

    Parameters
    ----------
    model : NucleiWeakUNetPointDetector or NucleiWeakPointDetectorEnsemble
        Its ``threshold`` and ``min_area`` are set; its ``max_area`` is kept.
    cfg : CfgNode
        Gives ``NUCLEIWEAK.EVAL.POINT_MODE`` and ``DET_RADIUS`` (the evaluator's matching).
    dataset_name : str
        The val split (records with ground truth).
    probs : dict
        ``{str(image_id): (H, W) detection probability}`` of every image of the dataset.

    Returns
    -------
    dict
        ``{"point_threshold": t, "point_min_area": a, "val_det_F1": {"<t>/<a>": F1}}``.
    """
    from detectron2.data import DatasetCatalog

    from ..evaluation.ground_truth import gt_points

    records = DatasetCatalog.get(dataset_name)
    (threshold, min_area), scores = select_point_postprocess(
        [np.asarray(probs[str(r["image_id"])], dtype=np.float32) for r in records],
        [gt_points(gt_label_map(r), cfg.NUCLEIWEAK.EVAL.POINT_MODE) for r in records],
        cfg.NUCLEIWEAK.EVAL.DET_RADIUS,
        model.max_area,
    )
    logger.info(
        "detector post-processing on val: threshold %.2f, min area %d (F1 %.4f; "
        "configured %.2f/%d: %s)",
        threshold,
        min_area,
        scores[f"{threshold}/{min_area}"],
        model.threshold,
        model.min_area,
        scores.get(f"{float(model.threshold)}/{int(model.min_area)}", "not in the grid"),
    )
    model.threshold, model.min_area = threshold, min_area
    return {"point_threshold": threshold, "point_min_area": min_area, "val_det_F1": scores}
