"""ROI heads that never sample a blocked proposal as a negative (Feng et al. 2019).

Registered in ``ROI_HEADS_REGISTRY`` as ``NucleiWeakFeng2019ROIHeads``.

A proposal is *blocked* when the proposal matcher labels it background (0) against the annotated
boxes but not background against a blocking box (a pseudo-box of the centerness head, or a
ground-truth row flagged ``gt_ignore``). Blocked proposals are removed from the candidate set
before :meth:`StandardROIHeads.label_and_sample_proposals` runs. This is the same as giving
them the label -1 before ``_sample_proposals`` (``subsample_labels`` never draws -1), and it
keeps Detectron2's labelling, ground-truth appending and field copying untouched instead of
re-implementing that loop. Positives and all ``gt_*`` targets come from annotated rows only.
At inference the class is ``StandardROIHeads``.
"""

from typing import List, Optional

from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Boxes, Instances, pairwise_iou

from .rpn import split_ignored

__all__ = ["NucleiWeakFeng2019ROIHeads"]


@ROI_HEADS_REGISTRY.register()
class NucleiWeakFeng2019ROIHeads(StandardROIHeads):
    """``StandardROIHeads`` whose training sampling skips proposals on blocking boxes.

    Same constructor and config as ``StandardROIHeads``; :meth:`forward` takes an extra
    ``blocked_boxes`` argument (one ``Boxes`` per image).
    """

    supports_blocked_boxes = True

    def forward(
        self,
        images,
        features,
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
        blocked_boxes: Optional[List[Boxes]] = None,
    ):
        """``StandardROIHeads.forward``; in training, blocked proposals are dropped first."""
        if self.training and targets is not None:
            blocked_boxes = blocked_boxes or [None] * len(targets)
            filtered, annotated_targets = [], []
            for p, t, b in zip(proposals, targets, blocked_boxes):
                annotated, ignored = split_ignored(t)
                if b is not None:
                    ignored = Boxes.cat([ignored, Boxes(b.tensor.to(ignored.device))])
                filtered.append(
                    p[~self.blocked_mask(p.proposal_boxes, annotated.gt_boxes, ignored)]
                )
                annotated_targets.append(annotated)
            proposals, targets = filtered, annotated_targets
        return super().forward(images, features, proposals, targets)

    def blocked_mask(self, proposal_boxes: Boxes, gt_boxes: Boxes, blocked: Boxes):
        """Bool mask of proposals that are background for ``gt_boxes`` but not for ``blocked``."""
        _, labels = self.proposal_matcher(pairwise_iou(gt_boxes, proposal_boxes))
        if len(blocked) == 0 or len(proposal_boxes) == 0:
            return labels < -1  # all False
        _, blocked_labels = self.proposal_matcher(pairwise_iou(blocked, proposal_boxes))
        return (labels == 0) & (blocked_labels != 0)
