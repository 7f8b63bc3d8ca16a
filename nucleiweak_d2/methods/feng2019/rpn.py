"""RPN that never samples a blocked anchor as a negative (Feng et al. 2019, "blocked" false negatives).

Registered in ``PROPOSAL_GENERATOR_REGISTRY`` as ``NucleiWeakFeng2019RPN``.

An anchor is *blocked* when the anchor matcher labels it background (0) against the annotated
boxes but not background (1, or -1 in the IoU band) against the blocking boxes: the pseudo-boxes
of the centerness head, or any ground-truth row flagged ``gt_ignore``. Blocked anchors get the
ignore label -1 before sampling, the way Detectron2 treats anchors crossing the image boundary,
so they are neither positives nor negatives. Positives and their regression targets come from
the annotated boxes only. Without blocking boxes the class behaves exactly as ``RPN``.
"""

from typing import List, Optional

import torch
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN
from detectron2.structures import Boxes, Instances, pairwise_iou

__all__ = ["NucleiWeakFeng2019RPN", "split_ignored", "with_blocked_boxes"]


def split_ignored(instances):
    """Split ground truth into ``(annotated Instances, blocking Boxes)`` by the ``gt_ignore`` field."""
    if not instances.has("gt_ignore"):
        none = torch.zeros(len(instances), dtype=torch.bool, device=instances.gt_boxes.device)
        return instances, instances.gt_boxes[none]
    ignore = instances.gt_ignore.bool()
    return instances[~ignore], instances.gt_boxes[ignore]


def with_blocked_boxes(instances, blocked):
    """Box-only ground truth: ``instances.gt_boxes`` followed by ``blocked`` (``gt_ignore`` True).

    Parameters
    ----------
    instances : Instances
        Ground truth of one image (only ``gt_boxes`` and ``gt_ignore`` are read).
    blocked : Boxes
        Blocking boxes (e.g. pseudo-boxes) of the same image.

    Returns
    -------
    Instances
        With fields ``gt_boxes`` and ``gt_ignore``; enough for :class:`NucleiWeakFeng2019RPN`.
    """
    device = instances.gt_boxes.device
    annotated, old_blocked = split_ignored(instances)
    blocked = Boxes.cat([old_blocked, Boxes(blocked.tensor.to(device))])
    out = Instances(instances.image_size)
    out.gt_boxes = Boxes.cat([annotated.gt_boxes, blocked])
    out.gt_ignore = torch.cat(
        [
            torch.zeros(len(annotated), dtype=torch.bool, device=device),
            torch.ones(len(blocked), dtype=torch.bool, device=device),
        ]
    )
    return out


@PROPOSAL_GENERATOR_REGISTRY.register()
class NucleiWeakFeng2019RPN(RPN):
    """Detectron2 ``RPN`` whose anchor labelling ignores anchors on blocking boxes.

    Same constructor and config as ``RPN``. :meth:`forward` takes an extra ``blocked_boxes``
    argument; ground-truth rows with ``gt_ignore == True`` block anchors as well.
    """

    supports_blocked_boxes = True

    def forward(
        self, images, features, gt_instances=None, blocked_boxes: Optional[List[Boxes]] = None
    ):
        """``RPN.forward``, with ``blocked_boxes`` (one ``Boxes`` per image) used in training."""
        if self.training and gt_instances is not None and blocked_boxes is not None:
            gt_instances = [with_blocked_boxes(g, b) for g, b in zip(gt_instances, blocked_boxes)]
        return super().forward(images, features, gt_instances)

    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """``RPN.label_and_sample_anchors`` with blocked anchors set to -1 before sampling.

        Returns
        -------
        gt_labels : list of Tensor
            Per image, labels in {-1, 0, 1} of all anchors (after sampling).
        matched_gt_boxes : list of Tensor
            Per image, ``(R, 4)`` matched annotated boxes (meaningful where the label is 1).
        """
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for instances in gt_instances:
            annotated, blocked = split_ignored(instances)
            gt_boxes_i = annotated.gt_boxes
            matched_idxs, labels_i = self.anchor_matcher(pairwise_iou(gt_boxes_i, anchors))
            labels_i = labels_i.to(device=gt_boxes_i.device)
            if len(blocked) > 0:
                _, blocked_labels = self.anchor_matcher(pairwise_iou(blocked, anchors))
                labels_i[(labels_i == 0) & (blocked_labels.to(labels_i.device) != 0)] = -1
            if self.anchor_boundary_thresh >= 0:
                inside = anchors.inside_box(instances.image_size, self.anchor_boundary_thresh)
                labels_i[~inside] = -1
            labels_i = self._subsample_labels(labels_i)
            if len(gt_boxes_i) == 0:
                matched_gt_boxes.append(torch.zeros_like(anchors.tensor))
            else:
                matched_gt_boxes.append(gt_boxes_i[matched_idxs].tensor)
            gt_labels.append(labels_i)
        return gt_labels, matched_gt_boxes
