"""Nuclei segmentation and detection metrics, exactly as published (numpy and scipy only).

Label maps are integer ``(H, W)`` arrays, 0 = background, any other value one nucleus; ids
may be arbitrary and non-contiguous. Every segmentation metric is computed from one sparse
:func:`~nucleiweak_d2.evaluation.contingency.contingency_table` of the pair.

Conventions shared by all metrics (stated once here):

* A ratio whose denominator is zero is 1.0 when both maps are empty (nothing to find and
  nothing found) and 0.0 otherwise; the object Hausdorff distance is then 0.0 and ``inf``.
  This follows the GlaS evaluation code (object Dice of two empty maps is 1, of one empty
  map 0).
* "Best" object for a given object: ties are broken towards the smallest id.

Detection metrics live in :mod:`.detection`, the object Hausdorff distance in
:mod:`.hausdorff` and the aggregation over images in :mod:`.aggregate`; they are re-exported
here so that ``from nucleiweak_d2.evaluation.metrics import ...`` is the one entry point.
"""

import numpy as np

from .aggregate import aggregate
from .contingency import best_match, contingency_table, max_weight_matching
from .detection import detection_counts, detection_metrics, prefixed_detection
from .hausdorff import object_hausdorff, object_hausdorff_from_table

__all__ = [
    "aji",
    "aji_plus",
    "object_dice",
    "object_hausdorff",
    "pixel_metrics",
    "panoptic_quality",
    "kaggle_map",
    "ncs",
    "segmentation_metrics",
    "detection_counts",
    "detection_metrics",
    "aggregate",
    "image_metrics",
    "contingency_table",
    "KAGGLE_THRESHOLDS",
]

# IoU thresholds of the Kaggle Data Science Bowl 2018 score: 0.5, 0.55, ..., 0.95.
KAGGLE_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)


def _ratio(num, den, both_empty):
    """``num / den``; when ``den == 0``: 1.0 if both maps are empty, else 0.0."""
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def _gather(values, index):
    """``values[index]`` with 0.0 where ``index < 0`` (an object without any overlap)."""
    out = np.zeros(len(index))
    hit = index >= 0
    out[hit] = values[index[hit]]
    return out


def _empty(t):
    return t.n_gt == 0 and t.n_pred == 0


def _aji(t):
    best = best_match(t.rows, t.cols, t.iou, t.n_gt)
    edges = best[best >= 0]
    inter = t.inter[edges].sum()
    union = t.union[edges].sum() + t.gt_area[best < 0].sum()
    used = np.zeros(t.n_pred, dtype=bool)
    used[t.cols[edges]] = True
    union += t.pred_area[~used].sum()
    return _ratio(inter, union, _empty(t))


def _aji_plus(t):
    edges = max_weight_matching(t.rows, t.cols, t.iou, t.n_gt, t.n_pred)
    gt_used = np.zeros(t.n_gt, dtype=bool)
    pred_used = np.zeros(t.n_pred, dtype=bool)
    gt_used[t.rows[edges]] = True
    pred_used[t.cols[edges]] = True
    inter = t.inter[edges].sum()
    union = t.union[edges].sum() + t.gt_area[~gt_used].sum() + t.pred_area[~pred_used].sum()
    return _ratio(inter, union, _empty(t))


def _object_dice(t):
    if t.n_gt == 0 or t.n_pred == 0:
        return 1.0 if _empty(t) else 0.0
    dice = 2.0 * t.inter / (t.gt_area[t.rows] + t.pred_area[t.cols])

    def one_side(rows, cols, n, area):
        best = best_match(rows, cols, t.inter, n)
        per_object = _gather(dice, best)
        return float((area * per_object).sum() / area.sum())

    return 0.5 * (
        one_side(t.rows, t.cols, t.n_gt, t.gt_area)
        + one_side(t.cols, t.rows, t.n_pred, t.pred_area)
    )


def _pixel_metrics(t):
    tp = int(t.inter.sum())
    fp = int(t.pred_area.sum()) - tp
    fn = int(t.gt_area.sum()) - tp
    tn = t.n_pixels - tp - fp - fn
    both_empty = tp + fp + fn == 0
    return {
        "acc": (tp + tn) / t.n_pixels,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": _ratio(tp, tp + fp + fn, both_empty),
    }


def _panoptic_quality(t):
    iou = t.iou
    matched = iou > 0.5
    tp = int(matched.sum())
    fp, fn = t.n_pred - tp, t.n_gt - tp
    empty = _empty(t)
    dq = _ratio(tp, tp + 0.5 * fp + 0.5 * fn, empty)
    sq = _ratio(iou[matched].sum(), tp, empty)
    return {"pq": dq * sq, "dq": dq, "sq": sq, "tp": tp, "fp": fp, "fn": fn}


def _kaggle_map(t):
    iou = t.iou
    scores = []
    for thr in KAGGLE_THRESHOLDS:
        tp = int((iou > thr).sum())
        scores.append(_ratio(tp, t.n_gt + t.n_pred - tp, _empty(t)))
    return float(np.mean(scores))


def _ncs(t):
    best = best_match(t.rows, t.cols, t.iou, t.n_gt)
    best_iou = _gather(t.iou, best)
    return _ratio((t.gt_area * best_iou).sum(), t.gt_area.sum(), _empty(t))


def aji(gt, pred):
    """Aggregated Jaccard Index (Kumar et al., IEEE TMI 2017, Eq. 1).

    Each ground-truth nucleus ``G_i`` takes the predicted nucleus ``S*(G_i)`` of highest IoU (a
    prediction may serve several nuclei); ``AJI = sum_i |G_i & S*| / (sum_i |G_i | S*| +
    sum_{S in U} |S|)`` with ``U`` the predictions never chosen. A nucleus that overlaps no
    prediction adds ``|G_i|`` to the denominator only (as HoVer-Net's ``get_fast_aji``; the
    original MATLAB code would pick an arbitrary non-overlapping prediction there).

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.

    Returns
    -------
    float
    """
    return _aji(contingency_table(gt, pred))


def aji_plus(gt, pred):
    """AJI+ (Graham et al., HoVer-Net, MedIA 2019): AJI with a unique one-to-one pairing.

    Nuclei and predictions are paired one-to-one so that the summed IoU is maximal (exact
    Hungarian matching over overlapping pairs, as ``get_fast_aji_plus``); every unpaired
    nucleus or prediction joins the denominator.

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.

    Returns
    -------
    float
    """
    return _aji_plus(contingency_table(gt, pred))


def object_dice(gt, pred):
    """Object-level Dice (Sirinukunwattana et al. 2015; GlaS, MedIA 2017; Qu et al. Eq. 12).

    ``0.5 * [sum_i gamma_i Dice(G_i, S*(G_i)) + sum_j eta_j Dice(G*(S_j), S_j)]`` where
    ``S*(G_i)`` is the prediction of largest overlapping area with ``G_i`` (Dice 0 without
    overlap), ``gamma_i = |G_i| / sum |G|`` and ``eta_j = |S_j| / sum |S|``. As in the official
    GlaS code and Qu et al.'s ``accuracy.py``, no minimum overlap is required (the "more than
    50 %" sentence of Qu et al.'s text belongs to the GlaS detection F1, not to this Dice).

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.

    Returns
    -------
    float
    """
    return _object_dice(contingency_table(gt, pred))


def pixel_metrics(gt, pred):
    """Pixel accuracy, F1 and IoU of the foreground (``label > 0``) of the two maps.

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.

    Returns
    -------
    dict
        ``acc`` = (TP + TN) / pixels, ``f1`` = 2TP / (2TP + FP + FN), ``iou`` = TP / (TP + FP + FN).
    """
    return _pixel_metrics(contingency_table(gt, pred))


def panoptic_quality(gt, pred):
    """Panoptic quality of one class (Kirillov et al., CVPR 2019; HoVer-Net for nuclei).

    Pairs with IoU > 0.5 are the (necessarily unique) true positives;
    ``DQ = TP / (TP + FP/2 + FN/2)``, ``SQ`` = mean IoU of the true positives, ``PQ = DQ * SQ``.

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.

    Returns
    -------
    dict
        ``pq``, ``dq``, ``sq``.
    """
    pq = _panoptic_quality(contingency_table(gt, pred))
    return {k: pq[k] for k in ("pq", "dq", "sq")}


def kaggle_map(gt, pred):
    """Score of the Kaggle Data Science Bowl 2018 (Feng et al. 2019, Eq. 2).

    Mean over ``t = 0.5, 0.55, ..., 0.95`` of ``TP(t) / (TP(t) + FP(t) + FN(t))``, where a
    prediction is a hit of a nucleus when their IoU is above ``t`` (strictly).

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.

    Returns
    -------
    float
    """
    return _kaggle_map(contingency_table(gt, pred))


def ncs(gt, pred):
    """Normalised coverage score (Feng et al., IEEE Access 2019, Eq. 4).

    ``NCS = sum_j |G_j| max_k IoU(G_j, S_k) / sum_j |G_j|``: the area-weighted best IoU of each
    ground-truth nucleus. False positives are not penalised.

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.

    Returns
    -------
    float
    """
    return _ncs(contingency_table(gt, pred))


def segmentation_metrics(gt, pred, hausdorff=False):
    """All segmentation metrics of one image from one contingency table.

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.
    hausdorff : bool
        Also compute the object Hausdorff distance (slower: per-object distance transforms).

    Returns
    -------
    dict
        ``aji``, ``aji_plus``, ``dice_obj``, ``pixel_acc``, ``pixel_f1``, ``pixel_iou``,
        ``pq``, ``dq``, ``sq``, ``map_kaggle``, ``ncs``, ``n_gt``, ``n_pred``, the object
        counts ``obj_tp``, ``obj_fp``, ``obj_fn`` of the unique IoU > 0.5 matching (the PQ
        matching; :func:`aggregate` sums them into object precision/recall, as Feng et al.
        report) and, when asked, ``hausdorff_obj``.
    """
    t = contingency_table(gt, pred)
    pix = _pixel_metrics(t)
    pq = _panoptic_quality(t)
    out = {
        "aji": _aji(t),
        "aji_plus": _aji_plus(t),
        "dice_obj": _object_dice(t),
        "pixel_acc": pix["acc"],
        "pixel_f1": pix["f1"],
        "pixel_iou": pix["iou"],
        "pq": pq["pq"],
        "dq": pq["dq"],
        "sq": pq["sq"],
        "map_kaggle": _kaggle_map(t),
        "ncs": _ncs(t),
        "n_gt": t.n_gt,
        "n_pred": t.n_pred,
        "obj_tp": pq["tp"],
        "obj_fp": pq["fp"],
        "obj_fn": pq["fn"],
    }
    if hausdorff:
        out["hausdorff_obj"] = object_hausdorff_from_table(t)
    return out


def image_metrics(
    gt, pred, gt_points=None, pred_points=None, radius=11.0, method="greedy", hausdorff=False
):
    """Per-image record for :func:`aggregate`: segmentation and (optional) detection metrics.

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.
    gt_points, pred_points : array_like or None
        ``(N, 2)`` / ``(K, 2)`` points (x, y); detection metrics are computed when both are
        given.
    radius : float
        Detection radius in pixels (see :func:`detection_counts`).
    method : {"greedy", "hungarian"}
        Detection matching.
    hausdorff : bool
        Also compute the object Hausdorff distance.

    Returns
    -------
    dict
        :func:`segmentation_metrics` plus, with points, ``det_tp``, ``det_fp``, ``det_fn``,
        ``det_precision``, ``det_recall``, ``det_f1``, ``det_dist_mean``, ``det_dist_std``
        and ``det_distances`` (array).
    """
    out = segmentation_metrics(gt, pred, hausdorff=hausdorff)
    if gt_points is not None and pred_points is not None:
        det = detection_metrics(gt_points, pred_points, radius, method)
        out.update(prefixed_detection(det))
    return out
