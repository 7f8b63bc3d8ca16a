"""How good are the pseudo-boxes at the job they do: blocking unannotated nuclei (Feng et al. 2019).

The pseudo-boxes stop the RPN and the box head from sampling unannotated nuclei as negatives.
Only boxes on *unannotated* nuclei matter for that: an anchor on an annotated nucleus is a
positive anyway. So :func:`pseudo_box_quality` matches the pseudo-boxes of one image one-to-one
(greedily, highest IoU first, pairs with IoU >= ``iou``, the convention of Detectron2's
``Matcher``) against every ground-truth nucleus, and counts

- ``tp``: pseudo-boxes matched to an unannotated nucleus (they block a would-be false negative);
- ``on_annotated``: pseudo-boxes matched to an annotated nucleus (harmless, left out of the
  precision);
- the rest: pseudo-boxes on no nucleus (they block true background: false positives).

``precision = tp / (num_pseudo - on_annotated)``, ``recall = tp / num_unannotated``,
``f1 = 2 tp / (num_pseudo - on_annotated + num_unannotated)`` (0 without pseudo-boxes; NaN when
a denominator is 0). The training COCO files of ``annotation="partial_mask"`` keep every
instance, with ``point_labeled`` 1 (annotated) or 0 (unannotated), so the unannotated ground
truth of the training images is known for this analysis (it is never given to the model).

:func:`evaluate_pseudo_boxes` runs a ``NucleiWeakFeng2019RCNN`` on dataset records (full images,
inference mode) and sums the counts over images, for several centerness thresholds at once;
``benchmarks/feng2019_monuseg.py`` logs it during training (``--quality-period``).
"""

import numpy as np

__all__ = ["box_iou", "match_boxes", "pseudo_box_quality", "sum_quality", "evaluate_pseudo_boxes"]

_COUNTS = ("num_pseudo", "num_unannotated", "num_annotated", "tp", "on_annotated")


def _boxes(boxes):
    """``(N, 4)`` float64 XYXY array of a ``Boxes``, a tensor or an array."""
    boxes = getattr(boxes, "tensor", boxes)
    if hasattr(boxes, "detach"):
        boxes = boxes.detach().cpu().numpy()
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) XYXY, got shape {boxes.shape}")
    return boxes


def box_iou(a, b):
    """``(N, M)`` IoU of XYXY boxes ``a`` (N, 4) and ``b`` (M, 4); 0 where a union is empty."""
    a, b = _boxes(a), _boxes(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(pred, gt, iou=0.5):
    """Greedy one-to-one matching, highest IoU first, of pairs with IoU >= ``iou``.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64: index of the ground-truth box matched to each ``pred`` box, -1 if none.
    """
    overlaps = box_iou(pred, gt)
    matched = np.full(overlaps.shape[0], -1, dtype=np.int64)
    if overlaps.size == 0:
        return matched
    rows, cols = np.nonzero(overlaps >= iou)
    order = np.argsort(-overlaps[rows, cols], kind="stable")
    used_gt = np.zeros(overlaps.shape[1], dtype=bool)
    for r, c in zip(rows[order], cols[order]):
        if matched[r] < 0 and not used_gt[c]:
            matched[r], used_gt[c] = c, True
    return matched


def _rates(counts):
    """Add precision, recall and F1 to summed counts (NaN for an empty denominator)."""
    out = dict(counts)
    blocking = counts["num_pseudo"] - counts["on_annotated"]
    p = counts["tp"] / blocking if blocking > 0 else float("nan")
    r = counts["tp"] / counts["num_unannotated"] if counts["num_unannotated"] > 0 else float("nan")
    out["precision"], out["recall"] = p, r
    denominator = blocking + counts["num_unannotated"]  # 2 tp + fp + fn
    out["f1"] = 2 * counts["tp"] / denominator if denominator > 0 else float("nan")
    return out


def pseudo_box_quality(pseudo_boxes, gt_boxes_unannotated, iou=0.5, *, gt_boxes_annotated=None):
    """Number, precision and recall of one image's pseudo-boxes on its unannotated nuclei.

    Parameters
    ----------
    pseudo_boxes : Boxes, torch.Tensor or array_like
        ``(N, 4)`` XYXY pseudo-boxes.
    gt_boxes_unannotated : Boxes, torch.Tensor or array_like
        ``(M, 4)`` XYXY boxes of the nuclei that were not annotated (``point_labeled`` 0).
    iou : float
        Smallest IoU of a match.
    gt_boxes_annotated : Boxes, torch.Tensor or array_like, optional
        ``(A, 4)`` XYXY boxes of the annotated nuclei: pseudo-boxes they take in the matching
        are left out of the precision. Without them every pseudo-box not on an unannotated
        nucleus counts as a false positive.

    Returns
    -------
    dict
        ``num_pseudo``, ``num_unannotated``, ``num_annotated``, ``tp``, ``on_annotated``
        (ints), ``precision``, ``recall``, ``f1`` (floats, NaN when undefined).
    """
    pseudo, unannotated = _boxes(pseudo_boxes), _boxes(gt_boxes_unannotated)
    annotated = _boxes(gt_boxes_annotated if gt_boxes_annotated is not None else np.zeros((0, 4)))
    matched = match_boxes(pseudo, np.concatenate([annotated, unannotated]), iou)
    counts = {
        "num_pseudo": len(pseudo),
        "num_unannotated": len(unannotated),
        "num_annotated": len(annotated),
        "tp": int((matched >= len(annotated)).sum()),
        "on_annotated": int(((matched >= 0) & (matched < len(annotated))).sum()),
    }
    return _rates(counts)


def sum_quality(rows):
    """Sum the counts of per-image :func:`pseudo_box_quality` results; rates recomputed."""
    return _rates({k: int(sum(r[k] for r in rows)) for k in _COUNTS})


def _gt_boxes(record, target):
    """``(annotated, unannotated)`` XYXY boxes of a record's non-crowd annotations."""
    boxes, labeled = [], []
    for a in record.get("annotations", []):
        if a.get("iscrowd", 0) or "bbox" not in a:
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        boxes.append([x, y, x + w, y + h])
        labeled.append(bool(a.get("point_labeled", True)) and target == "unannotated")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labeled = np.asarray(labeled, dtype=bool)
    return boxes[labeled], boxes[~labeled]


def evaluate_pseudo_boxes(
    model, records, mapper, score_threshs=None, iou=0.5, target="unannotated"
):
    """Pseudo-box quality of a ``NucleiWeakFeng2019RCNN`` on dataset records, summed over images.

    Parameters
    ----------
    model : NucleiWeakFeng2019RCNN
        Run in eval mode (its mode is restored afterwards), one image at a time, no gradient.
    records : list of dict
        Dataset dicts with ``annotations`` (``bbox`` XYWH in image pixels, ``point_labeled``).
    mapper : callable
        Test-mode mapper giving the model inputs (e.g. ``Trainer.build_mapper(cfg, False)``).
    score_threshs : sequence of float, optional
        Centerness thresholds (default: the model's own).
    iou : float
        Smallest IoU of a match.
    target : {"unannotated", "all"}
        Ground truth the pseudo-boxes should find: the unannotated nuclei (training images;
        annotated ones are set aside), or every nucleus (fully annotated val images).

    Returns
    -------
    dict
        ``{threshold: summed quality}`` (see :func:`sum_quality`).
    """
    if target not in ("unannotated", "all"):
        raise ValueError(f"target must be 'unannotated' or 'all', got {target!r}")
    was_training = model.training
    model.eval()
    rows = {}
    try:
        for record in records:
            found = model.pseudo_boxes([mapper(record)], score_threshs)
            annotated, unannotated = _gt_boxes(record, target)
            for t, (inst,) in found.items():
                rows.setdefault(t, []).append(
                    pseudo_box_quality(
                        inst.pred_boxes, unannotated, iou, gt_boxes_annotated=annotated
                    )
                )
    finally:
        model.train(was_training)
    return {t: sum_quality(r) for t, r in rows.items()}
