"""Mask R-CNN with the partial-annotation module of Feng et al. 2019.

Registered in ``META_ARCH_REGISTRY`` as ``NucleiWeakFeng2019RCNN``. On top of
``GeneralizedRCNN`` it owns a :class:`~.centerness.CenternessBoxHead` on the stride-4 FPN level:

- training: the head's losses are added; its pseudo-boxes (computed without gradient from the
  current prediction) are passed as ``blocked_boxes`` to the RPN and the ROI heads, which then
  never sample anchors/proposals matching a pseudo-box but no annotated instance as negatives
  (``NucleiWeakFeng2019RPN``, ``NucleiWeakFeng2019ROIHeads``);
- inference: the pseudo-boxes join the RPN proposals with a high objectness logit, so they go
  through the box and mask heads like any proposal.

The paper only says the pseudo-boxes are used as proposals at inference; here they are not
appended to the training proposals (they would be ignored there anyway unless they match an
annotated nucleus).
"""

from typing import Dict, List

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from .centerness import CenternessBoxHead

__all__ = ["NucleiWeakFeng2019RCNN"]


@META_ARCH_REGISTRY.register()
class NucleiWeakFeng2019RCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` + centerness/box head, blocked negatives and pseudo-box proposals.

    Parameters
    ----------
    centerness_head : CenternessBoxHead
        Head on ``centerness_in_feature``.
    centerness_in_feature : str
        Backbone output it reads (``"p2"``).
    block_false_negatives : bool
        Pass the pseudo-boxes to the RPN and ROI heads as blocking boxes in training; both must
        then support ``blocked_boxes`` (``NucleiWeakFeng2019RPN``, ``NucleiWeakFeng2019ROIHeads``).
    pseudo_proposals_at_test : bool
        Append the pseudo-boxes to the RPN proposals at inference.
    pseudo_proposal_logit : float
        Objectness logit of the appended pseudo-box proposals.
    **kwargs
        Arguments of ``GeneralizedRCNN``.
    """

    @configurable
    def __init__(
        self,
        *,
        centerness_head: CenternessBoxHead,
        centerness_in_feature: str = "p2",
        block_false_negatives: bool = True,
        pseudo_proposals_at_test: bool = True,
        pseudo_proposal_logit: float = 10.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if block_false_negatives:
            for name, module in (("proposal generator", self.proposal_generator), ("ROI heads", self.roi_heads)):
                if not getattr(module, "supports_blocked_boxes", False):
                    raise ValueError(
                        f"block_false_negatives needs a {name} accepting blocked_boxes "
                        f"(NucleiWeakFeng2019RPN / NucleiWeakFeng2019ROIHeads), got {type(module).__name__}"
                    )
        self.centerness_head = centerness_head
        self.centerness_in_feature = centerness_in_feature
        self.block_false_negatives = block_false_negatives
        self.pseudo_proposals_at_test = pseudo_proposals_at_test
        self.pseudo_proposal_logit = pseudo_proposal_logit

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        f = cfg.NUCLEIWEAK.FENG2019
        shape = ret["backbone"].output_shape()[f.CENTERNESS_IN_FEATURE]
        ret.update(
            centerness_head=CenternessBoxHead(cfg, shape),
            centerness_in_feature=f.CENTERNESS_IN_FEATURE,
            block_false_negatives=f.BLOCK_FALSE_NEGATIVES,
            pseudo_proposals_at_test=f.PSEUDO_PROPOSALS_AT_TEST,
            pseudo_proposal_logit=f.PSEUDO_PROPOSAL_LOGIT,
        )
        return ret

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """Training losses (Mask R-CNN + centerness), or :meth:`inference` in eval mode."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)

        logits, deltas = self.centerness_head(features[self.centerness_in_feature])
        losses = self.centerness_head.losses(logits, deltas, gt_instances)
        blocked = None
        if self.block_false_negatives:
            pseudo = self.centerness_head.predict_boxes(logits, deltas, images.image_sizes)
            blocked = [p.pred_boxes for p in pseudo]
            get_event_storage().put_scalar("feng2019/num_pseudo_boxes", sum(len(b) for b in blocked) / len(blocked))
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances, blocked_boxes=blocked)
            _, detector_losses = self.roi_heads(images, features, proposals, gt_instances, blocked_boxes=blocked)
        else:
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
            _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        losses.update(proposal_losses)
        losses.update(detector_losses)
        return losses

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        """``GeneralizedRCNN.inference`` with the pseudo-boxes appended to the RPN proposals."""
        if detected_instances is not None or not self.pseudo_proposals_at_test:
            return super().inference(batched_inputs, detected_instances, do_postprocess)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, _ = self.proposal_generator(images, features, None)
        logits, deltas = self.centerness_head(features[self.centerness_in_feature])
        pseudo = self.centerness_head.predict_boxes(logits, deltas, images.image_sizes)
        proposals = [Instances.cat([p, self.as_proposals(q)]) for p, q in zip(proposals, pseudo)]
        results, _ = self.roi_heads(images, features, proposals, None)
        if do_postprocess:
            return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        return results

    def as_proposals(self, pseudo: Instances) -> Instances:
        """Pseudo-boxes as RPN-style proposals (``proposal_boxes``, ``objectness_logits``)."""
        out = Instances(pseudo.image_size)
        out.proposal_boxes = pseudo.pred_boxes
        out.objectness_logits = torch.full(
            (len(pseudo),), self.pseudo_proposal_logit, device=pseudo.pred_boxes.device
        )
        return out
