"""Turn one model output of a nucleiweak_d2 meta-architecture into an instance label map.

Outputs follow docs/CONTRACTS.md ("Model outputs read by NucleiEvaluator"); the first key
found wins: ``"instance_map"`` (H, W) int tensor; ``"instances"`` with ``pred_masks``
(painted by :func:`paint_masks`: masks scored below a threshold left out, overlaps resolved
by an overlap rule; by default every mask, the highest score winning overlaps); ``"sem_seg"``
(C, H, W) scores (argmax, then connected components of the foreground classes). Optional
``"pred_points"`` (K, 2) float (x, y) feeds the detection metrics.

Why a score threshold and an overlap rule: a Mask R-CNN returns every detection above
``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` (0.05), up to ``TEST.DETECTIONS_PER_IMAGE``. Painted
all together, low-score duplicates survive as fragments around the nuclei that outscore
them, and low-score false positives become objects: AJI, PQ and object precision drop, by an
amount that depends on each model's score calibration. The threshold (and the rule) should
be chosen on val per model (``benchmarks/feng2019_monuseg.py`` does), never on test.
"""

import numpy as np
from scipy import ndimage

__all__ = [
    "OVERLAP_RULES",
    "output_instance_map",
    "output_points",
    "paint_masks",
    "label_components",
]

#: Overlap rules of :func:`paint_masks` (``NUCLEIWEAK.EVAL.INSTANCE_OVERLAP``).
OVERLAP_RULES = ("score", "mask_nms")


def _to_numpy(x):
    """CPU numpy view of a tensor or array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def paint_masks(
    masks, scores=None, threshold=0.5, *, score_thresh=0.0, overlap="score", overlap_thresh=0.5
):
    """Paint instance masks into one label map (a mask's pixels go to at most one instance).

    Parameters
    ----------
    masks : array_like or torch.Tensor
        ``(K, H, W)`` boolean masks, or float masks thresholded at ``threshold`` (inclusive
        ``>=``, as Detectron2's ``paste_masks_in_image``).
    scores : array_like, optional
        ``(K,)`` scores. Without scores, masks count as scored in index order (the later
        mask ranks higher).
    threshold : float
        Threshold of float masks.
    score_thresh : float
        Masks with ``score < score_thresh`` are left out (0.0: none is; a positive value needs
        ``scores``).
    overlap : {"score", "mask_nms"}
        How overlaps are resolved. ``"score"``: masks are painted in ascending score order, so
        the higher score wins every contested pixel (ties: the later mask wins); a mask mostly
        covered by better ones keeps its remaining pixels. ``"mask_nms"``: masks claim pixels
        in descending score order (same tie rule); a mask whose area is already claimed by
        higher-ranked masks by more than ``overlap_thresh`` (fraction of its own area) is
        dropped, the others keep their unclaimed pixels. With ``overlap_thresh`` 1.0 the two
        rules give the same map.
    overlap_thresh : float
        Largest covered fraction a mask may have under ``"mask_nms"``, in [0, 1].

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32, the mask of index ``k`` labelled ``k + 1`` (ids of left-out masks
        do not occur).
    """
    if overlap not in OVERLAP_RULES:
        raise ValueError(f"overlap must be one of {OVERLAP_RULES}, got {overlap!r}")
    if not 0.0 <= overlap_thresh <= 1.0:
        raise ValueError(f"overlap_thresh must be in [0, 1], got {overlap_thresh}")
    masks = _to_numpy(masks)
    if masks.ndim != 3:
        raise ValueError(f"pred_masks must be (K, H, W), got shape {masks.shape}")
    k, height, width = masks.shape
    if masks.dtype != bool:
        masks = masks >= threshold
    order = np.arange(k)
    keep = np.ones(k, dtype=bool)
    if scores is not None:
        scores = _to_numpy(scores).reshape(-1)
        if scores.size != k:
            raise ValueError(f"{scores.size} scores for {k} pred_masks")
        order = np.argsort(scores, kind="stable")
        keep = scores >= score_thresh
    elif score_thresh > 0:
        raise ValueError(f"score_thresh {score_thresh} needs scores, but the masks have none")
    order = order[keep[order]]
    label = np.zeros((height, width), dtype=np.int32)
    rows_hit, cols_hit = masks.any(axis=2), masks.any(axis=1)  # one pass each, then crops
    if overlap == "score":
        for i in order:  # ascending score: later (higher) scores overwrite
            rows, cols = np.flatnonzero(rows_hit[i]), np.flatnonzero(cols_hit[i])
            if rows.size:
                r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                label[r0:r1, c0:c1][masks[i, r0:r1, c0:c1]] = i + 1
        return label
    for i in order[::-1]:  # "mask_nms": descending score claims first
        rows, cols = np.flatnonzero(rows_hit[i]), np.flatnonzero(cols_hit[i])
        if not rows.size:
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        mask, window = masks[i, r0:r1, c0:c1], label[r0:r1, c0:c1]
        free = mask & (window == 0)
        if 1.0 - free.sum() / mask.sum() > overlap_thresh:
            continue
        window[free] = i + 1
    return label


def label_components(foreground, connectivity=2):
    """Connected components of a boolean map (``connectivity`` 1: 4-, 2: 8-neighbourhood)."""
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, connectivity)
    label, _ = ndimage.label(foreground, structure=structure)
    return label.astype(np.int32)


def output_instance_map(
    output,
    foreground_classes=(1,),
    connectivity=2,
    mask_threshold=0.5,
    *,
    score_thresh=0.0,
    overlap="score",
    overlap_thresh=0.5,
):
    """Instance label map of one model output (a dict of Detectron2's ``model(inputs)`` list).

    Parameters
    ----------
    output : dict
        With ``"instance_map"``, ``"instances"`` (``pred_masks``, optional ``scores``) or
        ``"sem_seg"``.
    foreground_classes : sequence of int
        Classes of ``sem_seg`` that are nucleus (after argmax). A one-channel ``sem_seg`` is a
        foreground probability, thresholded at 0.5.
    connectivity : int
        Neighbourhood of the connected components of ``sem_seg`` (2: 8-connected, as
        ``skimage.measure.label`` used by Qu et al.).
    mask_threshold : float
        Threshold of float ``pred_masks``.
    score_thresh, overlap, overlap_thresh
        Which ``instances`` are painted and how overlaps are resolved (see
        :func:`paint_masks`; ``NUCLEIWEAK.EVAL.INSTANCE_*``). The defaults paint every
        instance, the highest score winning overlaps.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32.
    """
    if "instance_map" in output:
        label = _to_numpy(output["instance_map"])
        if label.ndim == 3 and label.shape[0] == 1:
            label = label[0]
        if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
            raise ValueError(
                f"instance_map must be an (H, W) integer tensor, got shape "
                f"{label.shape} and dtype {label.dtype}"
            )
        if label.size and label.min() < 0:
            raise ValueError("instance_map holds negative ids")
        return label.astype(np.int32)
    if "instances" in output:
        inst = output["instances"]
        if not inst.has("pred_masks"):
            raise ValueError("instances have no pred_masks; the nuclei evaluator needs masks")
        height, width = inst.image_size
        if len(inst) == 0:
            return np.zeros((height, width), dtype=np.int32)
        scores = inst.scores if inst.has("scores") else None
        return paint_masks(
            inst.pred_masks,
            scores,
            mask_threshold,
            score_thresh=score_thresh,
            overlap=overlap,
            overlap_thresh=overlap_thresh,
        )
    if "sem_seg" in output:
        scores = _to_numpy(output["sem_seg"])
        if scores.ndim != 3:
            raise ValueError(f"sem_seg must be (C, H, W), got shape {scores.shape}")
        if scores.shape[0] == 1:
            foreground = scores[0] > 0.5
        else:
            foreground = np.isin(scores.argmax(axis=0), list(foreground_classes))
        return label_components(foreground, connectivity)
    raise ValueError(f"model output has none of instance_map, instances, sem_seg: {sorted(output)}")


def output_points(output):
    """``pred_points`` of an output as a ``(K, 2)`` float64 array, or None when absent."""
    if "pred_points" not in output:
        return None
    points = _to_numpy(output["pred_points"]).astype(np.float64)
    if points.size == 0:
        return np.zeros((0, 2))
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"pred_points must be (K, 2), got shape {points.shape}")
    return points
