"""``IgnoreAwareFCOS``: Detectron2's FCOS whose anchor points can be ignored.

Detectron2's ``FCOS.label_anchors`` makes every unmatched anchor point a negative and
``FCOS.losses`` one-hot encodes every label, so a label of -1 crashes it. Two hooks change:

- :meth:`IgnoreAwareFCOS.label_anchors` takes per-image boolean ``ignore_maps`` (input pixel
  resolution) and labels -1 every anchor point that FCOS would make a negative and whose
  centre falls on an ignored pixel; positives are never changed;
- :meth:`IgnoreAwareFCOS.losses` is ``FCOS.losses`` with ``RetinaNet.losses``'s valid mask:
  anchors labelled -1 add nothing to the classification loss (they were never positives, so
  the box and centerness losses, which only see positives, are unchanged).

With no ignored pixel both return exactly what FCOS returns. Not registered: the DoNuSeg
meta-architecture subclasses it.
"""

import torch
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage
from fvcore.nn import sigmoid_focal_loss_jit

__all__ = ["IgnoreAwareFCOS", "anchor_ignored"]


def anchor_ignored(anchors, ignore_map):
    """Whether the centre of each anchor point lies on an ignored pixel.

    Parameters
    ----------
    anchors : list of Boxes
        Anchor boxes of every level (FCOS: squares of side stride centred on the points).
    ignore_map : torch.Tensor
        ``(H, W)`` bool; centres outside it are not ignored.

    Returns
    -------
    torch.Tensor
        ``(R,)`` bool over the concatenated levels.
    """
    centres = Boxes.cat(anchors).get_centers()
    col, row = torch.floor(centres[:, 0]).long(), torch.floor(centres[:, 1]).long()
    h, w = ignore_map.shape
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    out = torch.zeros(len(centres), dtype=torch.bool, device=centres.device)
    out[inside] = ignore_map.to(centres.device)[row[inside], col[inside]]
    return out


class IgnoreAwareFCOS(FCOS):
    """FCOS with ignored anchor points (see the module docstring); same constructor as FCOS."""

    @torch.no_grad()
    def label_anchors(self, anchors, gt_instances, ignore_maps=None):
        """``FCOS.label_anchors``, then -1 for the negatives on ignored pixels.

        Parameters
        ----------
        anchors : list of Boxes
        gt_instances : list of Instances
            With ``gt_boxes`` and ``gt_classes``.
        ignore_maps : list of torch.Tensor or None
            ``(H, W)`` bool per image (None: nothing ignored).

        Returns
        -------
        gt_labels : list of torch.Tensor
            ``(R,)`` per image: class, ``num_classes`` (negative) or -1 (ignored).
        matched_gt_boxes : list of torch.Tensor
            ``(R, 4)`` per image.
        """
        gt_labels, matched_boxes = super().label_anchors(anchors, gt_instances)
        if ignore_maps is None:
            return gt_labels, matched_boxes
        for labels, ignore_map in zip(gt_labels, ignore_maps):
            labels[(labels == self.num_classes) & anchor_ignored(anchors, ignore_map)] = -1
        return gt_labels, matched_boxes

    def losses(
        self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness
    ):
        """``FCOS.losses`` with anchors labelled -1 left out of the classification loss."""
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)

        valid_mask = gt_labels >= 0
        pos_mask = valid_mask & (gt_labels != self.num_classes)
        num_pos_anchors = pos_mask.sum().item()
        storage = get_event_storage()
        storage.put_scalar("num_pos_anchors", num_pos_anchors / num_images)
        storage.put_scalar("num_ignored_anchors", (~valid_mask).sum().item() / num_images)
        normalizer = self._ema_update("loss_normalizer", max(num_pos_anchors, 1), 300)

        target = F.one_hot(gt_labels[valid_mask], num_classes=self.num_classes + 1)[:, :-1]
        loss_cls = sigmoid_focal_loss_jit(
            cat(pred_logits, dim=1)[valid_mask],
            target.to(pred_logits[0].dtype),
            alpha=self.focal_loss_alpha,
            gamma=self.focal_loss_gamma,
            reduction="sum",
        )
        loss_box_reg = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type="giou",
        )
        ctrness_targets = self.compute_ctrness_targets(anchors, gt_boxes)  # (N, R)
        pred_centerness = torch.cat(pred_centerness, dim=1).squeeze(dim=2)  # (N, R)
        ctrness_loss = F.binary_cross_entropy_with_logits(
            pred_centerness[pos_mask], ctrness_targets[pos_mask], reduction="sum"
        )
        return {
            "loss_fcos_cls": loss_cls / normalizer,
            "loss_fcos_loc": loss_box_reg / normalizer,
            "loss_fcos_ctr": ctrness_loss / normalizer,
        }
