"""Output dict of one image of DoNuSeg (docs/CONTRACTS.md, "Model outputs read by
NucleiEvaluator"): the foreground split by the detections, plus what the evaluators read."""

import numpy as np
import torch

from ...modeling.meta_arch.unet import instances_from_map
from .instances import split_mask_by_boxes

__all__ = ["image_outputs", "instance_points"]


def instance_points(instance_map, owners, boxes):
    """Point of each instance in pixel indices (``EVAL.PRED_POINTS_OFFSET`` 0): the centre of its
    box minus 0.5 (continuous -> index), or the centroid of an unboxed component.

    Parameters
    ----------
    instance_map : numpy.ndarray
        ``(H, W)`` int, instances 1..M.
    owners : numpy.ndarray
        ``(M,)`` box of each instance, -1 for none.
    boxes : numpy.ndarray
        ``(K, 4)`` continuous ``(x0, y0, x1, y1)``.

    Returns
    -------
    numpy.ndarray
        float64 ``(M, 2)`` (x, y).
    """
    points = np.zeros((len(owners), 2))
    for k, owner in enumerate(owners):
        if owner >= 0:
            x0, y0, x1, y1 = boxes[owner]
            points[k] = ((x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5)
        else:
            ys, xs = np.nonzero(instance_map == k + 1)
            points[k] = (xs.mean(), ys.mean())
    return points


def image_outputs(prob, detections, threshold=0.5, split_args=None, output_instances=True):
    """Outputs of one image at its output resolution.

    Parameters
    ----------
    prob : torch.Tensor
        ``(H, W)`` nucleus probability.
    detections : Instances
        ``pred_boxes`` and ``scores`` in the same ``(H, W)`` frame.
    threshold : float
        Foreground is ``prob > threshold``.
    split_args : dict or None
        Keyword arguments of :func:`~.instances.split_mask_by_boxes`.
    output_instances : bool
        Add ``"instances"``.

    Returns
    -------
    dict
        ``"instance_map"`` (H, W) int32, ``"prob"``, ``"sem_seg"`` (1, H, W), ``"pred_points"``
        (M, 2) and, with ``output_instances``, ``"instances"``: ``pred_masks``, ``pred_boxes``
        (the masks' boxes), ``scores`` (the detection scores; 0 for an unboxed component),
        ``pred_classes``.
    """
    prob_np = prob.detach().cpu().numpy()
    boxes = detections.pred_boxes.tensor.detach().cpu().numpy()
    scores = detections.scores.detach().cpu().numpy()
    inst_map, owners = split_mask_by_boxes(prob_np > threshold, boxes, scores, **(split_args or {}))
    out = {
        "instance_map": torch.from_numpy(inst_map),
        "prob": prob,
        "sem_seg": prob[None],
        "pred_points": torch.as_tensor(
            instance_points(inst_map, owners, boxes), dtype=torch.float32
        ),
    }
    if output_instances:
        inst = instances_from_map(inst_map, prob_np)
        det_scores = np.where(owners >= 0, scores[owners.clip(min=0)], 0.0) if len(owners) else []
        inst.scores = torch.as_tensor(np.asarray(det_scores, dtype=np.float32))
        out["instances"] = inst
    return out
