"""Aggregation of per-image results over a dataset (numpy only).

Segmentation metrics are computed per image and then averaged over images (mean and
population std), as Qu et al. and Liu et al. do; detection counts are summed over images
(micro average, as Qu et al.) and the per-image detection scores are averaged too.
"""

import numbers

import numpy as np

from .detection import scores_from_counts

__all__ = ["aggregate", "DETECTION_COUNT_KEYS", "OBJECT_COUNT_KEYS"]

# Keys of a per-image record holding detection counts: summed over images, never averaged.
DETECTION_COUNT_KEYS = ("det_tp", "det_fp", "det_fn")
# Keys holding object counts of the IoU > 0.5 matching: summed over images too.
OBJECT_COUNT_KEYS = ("obj_tp", "obj_fp", "obj_fn")
# Keys that are not averaged over images (counts, pooled distances and their per-image stats).
_NOT_AVERAGED = (
    DETECTION_COUNT_KEYS + OBJECT_COUNT_KEYS + ("det_distances", "det_dist_mean", "det_dist_std")
)


def _add_summed_scores(out, records, prefix, count_keys):
    """Sum ``count_keys`` (tp, fp, fn) over the records holding them into ``out``, with the
    micro precision/recall/F1 as ``<prefix>_<score>``; returns those records."""
    having = [rec for rec in records if count_keys[0] in rec]
    if having:
        sums = {key: int(sum(int(rec[key]) for rec in having)) for key in count_keys}
        out.update(sums)
        scores = scores_from_counts(*(sums[key] for key in count_keys))
        out.update({f"{prefix}_{k}": v for k, v in scores.items()})
    return having


def aggregate(records):
    """Combine per-image results.

    Parameters
    ----------
    records : sequence of dict
        One dict per image. Every real-valued entry (e.g. the output of
        :func:`~nucleiweak_d2.evaluation.metrics.segmentation_metrics`, or ``det_precision``)
        is averaged over the images that have it. Detection entries, when present:
        ``det_tp``, ``det_fp``, ``det_fn`` (int) and ``det_distances`` (matched distances).
        Other entries (strings such as the image name) are ignored.

    Returns
    -------
    dict
        ``<key>_mean`` and ``<key>_std`` (population std over images) for every averaged key;
        ``num_images``; and, when detection counts are present, their sums ``det_tp``,
        ``det_fp``, ``det_fn``, the micro scores ``det_precision``, ``det_recall``,
        ``det_f1`` from the sums, and ``det_dist_mean``, ``det_dist_std`` over all matched
        distances of all images (Qu et al.'s ``mu_d``, ``sigma_d``). Likewise, when the
        records hold ``obj_tp``/``obj_fp``/``obj_fn`` (IoU > 0.5 object matches), their sums
        and ``obj_precision``, ``obj_recall``, ``obj_f1`` from the sums.
    """
    records = list(records)
    if not records:
        raise ValueError("aggregate: no per-image records given")
    out = {"num_images": len(records)}
    keys = []
    for rec in records:
        for key, value in rec.items():
            if (
                key not in _NOT_AVERAGED
                and key not in keys
                and isinstance(value, numbers.Real)
                and not isinstance(value, bool)
            ):
                keys.append(key)
    for key in keys:
        values = np.array([float(rec[key]) for rec in records if key in rec])
        out[f"{key}_mean"] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
    _add_summed_scores(out, records, "obj", OBJECT_COUNT_KEYS)
    with_det = _add_summed_scores(out, records, "det", DETECTION_COUNT_KEYS)
    if with_det:
        dist = np.concatenate(
            [np.asarray(rec.get("det_distances", []), dtype=np.float64) for rec in with_det]
        )
        out["det_dist_mean"] = float(dist.mean()) if dist.size else 0.0
        out["det_dist_std"] = float(dist.std()) if dist.size else 0.0
    return out
