"""Point detection metrics (Qu et al., IEEE TMI 2020, Sec. IV-B; numpy and scipy only).

A detected point is a true positive when it lies strictly closer than ``radius`` pixels to a
ground-truth point; each ground-truth point takes at most one detection and each detection
serves at most one ground-truth point. Points are ``(N, 2)`` arrays in (x, y) order.
"""

import numpy as np
from scipy.spatial import cKDTree

from .contingency import max_weight_matching

__all__ = ["check_points", "detection_counts", "detection_metrics", "prefixed_detection"]

METHODS = ("greedy", "hungarian")


def check_points(points, name="points"):
    """Return ``points`` as a float64 ``(N, 2)`` array (``N`` may be 0), or raise ValueError.

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` coordinates (x, y); an empty sequence is accepted.
    name : str
        How the array is named in error messages.
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected an (N, 2) array of (x, y) points, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: points must be finite")
    return arr


def _candidate_pairs(gt, pred, radius):
    """All (gt index, pred index, distance) with distance < radius, sorted by gt then pred."""
    if len(gt) == 0 or len(pred) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    near = cKDTree(gt).sparse_distance_matrix(cKDTree(pred), radius, output_type="ndarray")
    near = near[near["v"] < radius]
    near = near[np.lexsort((near["j"], near["i"]))]
    return near["i"].astype(np.int64), near["j"].astype(np.int64), near["v"].astype(np.float64)


def _greedy(rows, cols, dist, n, m):
    """Qu et al.: each GT point in order takes its nearest still-unmatched detection."""
    pred_used = np.zeros(m, dtype=bool)
    starts = np.searchsorted(rows, np.arange(n + 1))
    chosen = []
    for i in range(n):
        lo, hi = starts[i], starts[i + 1]
        if lo == hi:
            continue
        cand = np.arange(lo, hi)
        cand = cand[~pred_used[cols[cand]]]
        if cand.size:
            e = cand[np.argmin(dist[cand])]  # first minimum: smallest pred index on ties
            pred_used[cols[e]] = True
            chosen.append(e)
    return np.asarray(chosen, dtype=np.int64)


def detection_counts(gt_points, pred_points, radius, method="greedy"):
    """Match detections to ground-truth points within a radius.

    Parameters
    ----------
    gt_points, pred_points : array_like
        ``(N, 2)`` and ``(K, 2)`` points (x, y), in pixels.
    radius : float
        A detection matches a ground-truth point only at a distance ``< radius`` (Qu et al.
        use 11 px on MoNuSeg/MO at 40x and 8 px on LC at 20x).
    method : {"greedy", "hungarian"}
        ``"greedy"`` (Qu et al.): ground-truth points are visited in the given order and each
        takes the nearest unmatched detection within the radius. ``"hungarian"``: the
        matching with the most pairs and, among those, the smallest summed distance.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn`` (int), ``distances`` (float array of the matched distances, in
        ground-truth order) and ``pairs`` (``(tp, 2)`` int array of (gt index, pred index)).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be a positive number, got {radius}")
    gt = check_points(gt_points, "gt_points")
    pred = check_points(pred_points, "pred_points")
    n, m = len(gt), len(pred)
    rows, cols, dist = _candidate_pairs(gt, pred, radius)
    if method == "greedy":
        chosen = _greedy(rows, cols, dist, n, m)
    else:
        # Cardinality first: a weight above the largest possible summed distance per pair.
        big = float(radius) * (min(n, m) + 1)
        chosen = max_weight_matching(rows, cols, big - dist, n, m)
    chosen = chosen[np.argsort(rows[chosen], kind="stable")]
    tp = int(chosen.size)
    return {
        "tp": tp,
        "fp": m - tp,
        "fn": n - tp,
        "distances": dist[chosen],
        "pairs": np.stack([rows[chosen], cols[chosen]], axis=1).reshape(-1, 2),
    }


def scores_from_counts(tp, fp, fn):
    """Precision, recall and F1 from counts (each 1.0 when there is nothing to find or find).

    Parameters
    ----------
    tp, fp, fn : int

    Returns
    -------
    dict
        ``precision = TP/(TP+FP)``, ``recall = TP/(TP+FN)``, ``f1 = 2TP/(2TP+FP+FN)``; a zero
        denominator gives 1.0 when ``tp + fp + fn == 0`` and 0.0 otherwise.
    """
    nothing = tp + fp + fn == 0

    def ratio(num, den):
        return (1.0 if nothing else 0.0) if den == 0 else num / den

    return {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def detection_metrics(gt_points, pred_points, radius, method="greedy"):
    """Detection precision, recall, F1 and the matched distance mean and std (Qu et al.).

    Parameters
    ----------
    gt_points, pred_points, radius, method
        As :func:`detection_counts`.

    Returns
    -------
    dict
        The counts of :func:`detection_counts` plus ``precision``, ``recall``, ``f1``,
        ``dist_mean`` and ``dist_std`` (population std, Qu et al.'s ``sigma_d``; both 0.0
        when nothing matched).
    """
    counts = detection_counts(gt_points, pred_points, radius, method)
    out = dict(counts)
    out.update(scores_from_counts(counts["tp"], counts["fp"], counts["fn"]))
    d = counts["distances"]
    out["dist_mean"] = float(d.mean()) if d.size else 0.0
    out["dist_std"] = float(d.std()) if d.size else 0.0
    return out


#: Keys of :func:`detection_metrics` kept per image (as ``det_<key>``).
DETECTION_KEYS = (
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "f1",
    "dist_mean",
    "dist_std",
    "distances",
)


def prefixed_detection(det):
    """``{"det_<key>": value}`` of a :func:`detection_metrics` result (:data:`DETECTION_KEYS`)."""
    return {f"det_{key}": det[key] for key in DETECTION_KEYS}
