"""Mask R-CNN with the partial-annotation module of Feng et al. 2019, and its baseline.

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

Options (``NUCLEIWEAK.FENG2019``): ``SHARE_RPN_CONV`` makes the head read the RPN head's 3x3
convolution instead of its own (the Feng lab code's layout); ``DILATE_MASKS`` dilates every
output mask by 3x3, the paper's post-processing (:mod:`.postprocess`).

``NucleiWeakFeng2019BaselineRCNN`` is ``GeneralizedRCNN`` plus that same ``DILATE_MASKS``
option, so that the baselines of a comparison can get the paper's post-processing too; with
the option off it is ``GeneralizedRCNN``. Both derive from
:class:`~nucleiweak_d2.modeling.meta_arch.rcnn.NucleiWeakStainRCNN`, which stain-normalises
their eval-mode inputs when ``NUCLEIWEAK.DATA.STAIN_NORM`` is on (a recipe option, not in the
paper).
"""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from ...modeling.meta_arch.rcnn import NucleiWeakStainRCNN
from .centerness import CenternessBoxHead
from .postprocess import dilate_results

__all__ = ["NucleiWeakFeng2019RCNN", "NucleiWeakFeng2019BaselineRCNN"]


@META_ARCH_REGISTRY.register()
class NucleiWeakFeng2019RCNN(NucleiWeakStainRCNN):
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
    share_rpn_conv : bool
        The centerness head reads the RPN head's 3x3 convolution (``rpn_head.conv``) instead of
        its own (the head must then have none); the centerness losses train it as well.
    dilate_masks : bool
        Dilate every output mask by 3x3 at inference (after pasting at image size; boxes
        unchanged), the paper's post-processing.
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
        share_rpn_conv: bool = False,
        dilate_masks: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if block_false_negatives:
            for name, module in (
                ("proposal generator", self.proposal_generator),
                ("ROI heads", self.roi_heads),
            ):
                if not getattr(module, "supports_blocked_boxes", False):
                    raise ValueError(
                        f"block_false_negatives needs a {name} accepting blocked_boxes "
                        f"(NucleiWeakFeng2019RPN / NucleiWeakFeng2019ROIHeads), got {type(module).__name__}"
                    )
        if share_rpn_conv and not isinstance(
            getattr(getattr(self.proposal_generator, "rpn_head", None), "conv", None),
            torch.nn.Module,
        ):
            raise ValueError(
                "share_rpn_conv needs a proposal generator with an rpn_head.conv "
                f"(Detectron2's StandardRPNHead), got {type(self.proposal_generator).__name__}"
            )
        if share_rpn_conv != (centerness_head.conv is None):
            raise ValueError(
                f"share_rpn_conv={share_rpn_conv} needs a centerness head "
                f"{'without' if share_rpn_conv else 'with'} its own conv (own_conv)"
            )
        self.centerness_head = centerness_head
        self.share_rpn_conv = share_rpn_conv
        self.dilate_masks = dilate_masks
        self.centerness_in_feature = centerness_in_feature
        self.block_false_negatives = block_false_negatives
        self.pseudo_proposals_at_test = pseudo_proposals_at_test
        self.pseudo_proposal_logit = pseudo_proposal_logit

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        f = cfg.NUCLEIWEAK.FENG2019
        shape = ret["backbone"].output_shape()[f.CENTERNESS_IN_FEATURE]
        head_args = {}
        if f.SHARE_RPN_CONV:  # the 1x1 branches read the RPN conv's output channels
            rpn_head = getattr(ret["proposal_generator"], "rpn_head", None)
            logits = getattr(rpn_head, "objectness_logits", None)
            if not isinstance(logits, torch.nn.Conv2d):
                raise ValueError(
                    "NUCLEIWEAK.FENG2019.SHARE_RPN_CONV needs Detectron2's StandardRPNHead "
                    f"(MODEL.RPN.HEAD_NAME), got {type(rpn_head).__name__}"
                )
            head_args["conv_dim"] = logits.in_channels
        ret.update(
            centerness_head=CenternessBoxHead(cfg, shape, **head_args),
            centerness_in_feature=f.CENTERNESS_IN_FEATURE,
            block_false_negatives=f.BLOCK_FALSE_NEGATIVES,
            pseudo_proposals_at_test=f.PSEUDO_PROPOSALS_AT_TEST,
            pseudo_proposal_logit=f.PSEUDO_PROPOSAL_LOGIT,
            share_rpn_conv=f.SHARE_RPN_CONV,
            dilate_masks=f.DILATE_MASKS,
        )
        return ret

    def centerness(self, features):
        """``(logits, deltas)`` of the centerness head on ``features[centerness_in_feature]``."""
        feature = features[self.centerness_in_feature]
        if self.share_rpn_conv:
            return self.centerness_head(feature, self.proposal_generator.rpn_head.conv)
        return self.centerness_head(feature)

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """Training losses (Mask R-CNN + centerness), or :meth:`inference` in eval mode."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)

        logits, deltas = self.centerness(features)
        losses = self.centerness_head.losses(logits, deltas, gt_instances)
        blocked = None
        if self.block_false_negatives:
            pseudo = self.centerness_head.predict_boxes(logits, deltas, images.image_sizes)
            blocked = [p.pred_boxes for p in pseudo]
            get_event_storage().put_scalar(
                "feng2019/num_pseudo_boxes", sum(len(b) for b in blocked) / len(blocked)
            )
            proposals, proposal_losses = self.proposal_generator(
                images, features, gt_instances, blocked_boxes=blocked
            )
            _, detector_losses = self.roi_heads(
                images, features, proposals, gt_instances, blocked_boxes=blocked
            )
        else:
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
            _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        losses.update(proposal_losses)
        losses.update(detector_losses)
        return losses

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        """``GeneralizedRCNN.inference`` with the pseudo-boxes appended to the RPN proposals
        (and, with ``dilate_masks``, the post-processed masks dilated)."""
        if detected_instances is not None or not self.pseudo_proposals_at_test:
            results = super().inference(batched_inputs, detected_instances, do_postprocess)
        else:
            images = self.preprocess_image(batched_inputs)
            features = self.backbone(images.tensor)
            proposals, _ = self.proposal_generator(images, features, None)
            logits, deltas = self.centerness(features)
            pseudo = self.centerness_head.predict_boxes(logits, deltas, images.image_sizes)
            proposals = [
                Instances.cat([p, self.as_proposals(q)]) for p, q in zip(proposals, pseudo)
            ]
            results, _ = self.roi_heads(images, features, proposals, None)
            if not do_postprocess:
                return results
            results = GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        if do_postprocess and self.dilate_masks:
            results = dilate_results(results)
        return results

    @torch.no_grad()
    def pseudo_boxes(self, batched_inputs, score_threshs=None):
        """Pseudo-boxes of inference inputs, in output coordinates (the inputs' ``height`` and
        ``width``, as Detectron2's post-processing), for one or several centerness thresholds.

        Call it in eval mode (batch-norm statistics as at inference).

        Parameters
        ----------
        batched_inputs : list of dict
            Inference inputs (``image``, optional ``height`` / ``width``).
        score_threshs : sequence of float, optional
            Thresholds of the centerness probability (default: the head's ``score_thresh``);
            the network runs once for all of them.

        Returns
        -------
        dict
            ``{threshold: [Instances per image]}`` with ``pred_boxes`` and ``scores``.
        """
        images = self.preprocess_image(batched_inputs)
        logits, deltas = self.centerness(self.backbone(images.tensor))
        threshs = (
            [self.centerness_head.score_thresh] if score_threshs is None else list(score_threshs)
        )
        out = {}
        for t in threshs:
            per_image = self.centerness_head.predict_boxes(logits, deltas, images.image_sizes, t)
            for inst, inp, (h, w) in zip(per_image, batched_inputs, images.image_sizes):
                height, width = inp.get("height", h), inp.get("width", w)
                inst.pred_boxes.scale(width / w, height / h)
            out[float(t)] = per_image
        return out

    def as_proposals(self, pseudo: Instances) -> Instances:
        """Pseudo-boxes as RPN-style proposals (``proposal_boxes``, ``objectness_logits``)."""
        out = Instances(pseudo.image_size)
        out.proposal_boxes = pseudo.pred_boxes
        out.objectness_logits = torch.full(
            (len(pseudo),), self.pseudo_proposal_logit, device=pseudo.pred_boxes.device
        )
        return out


@META_ARCH_REGISTRY.register()
class NucleiWeakFeng2019BaselineRCNN(NucleiWeakStainRCNN):
    """``GeneralizedRCNN`` with the paper's 3x3 mask dilation as an option (the baselines).

    Parameters
    ----------
    dilate_masks : bool
        Dilate every output mask by 3x3 at inference (``NUCLEIWEAK.FENG2019.DILATE_MASKS``);
        False: exactly ``GeneralizedRCNN``.
    **kwargs
        Arguments of ``GeneralizedRCNN``.
    """

    @configurable
    def __init__(self, *, dilate_masks: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.dilate_masks = dilate_masks

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["dilate_masks"] = cfg.NUCLEIWEAK.FENG2019.DILATE_MASKS
        return ret

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        """``GeneralizedRCNN.inference``, masks dilated when ``dilate_masks`` (post-processed only)."""
        results = super().inference(batched_inputs, detected_instances, do_postprocess)
        if do_postprocess and self.dilate_masks:
            results = dilate_results(results)
        return results
