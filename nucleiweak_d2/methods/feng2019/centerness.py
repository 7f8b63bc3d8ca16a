"""Centerness/box head on the stride-4 FPN level and its pseudo-boxes (Feng et al. 2019, II).

Per location of the stride-4 feature map the head predicts a centerness logit and a 4-d box
regression relative to an *anchor box* centred on the location, of the median training box
size (``ANCHOR_SIZE``).

Targets (:func:`centerness_targets`), from the **annotated** instances only, on the feature
grid (cell ``(i, j)`` covers input pixels ``[s j, s j + s) x [s i, s i + s)``, centre
``(s (j + 0.5), s (i + 0.5))``):

- positive (1): cells whose centre lies in the centre box of an instance, i.e. its box scaled
  by ``center_fraction`` (0.3) about its centre; the cell holding the box centre is always
  positive, so that small nuclei get one. Where centre boxes overlap, the smaller instance
  gives the regression target.
- negative (0): the other cells of the projected (stride-``s`` area-averaged, >= 0.5) union
  of annotated masks.
- ignored (-1): everything else, because unannotated regions may hold unannotated nuclei.

Loss (:meth:`CenternessBoxHead.losses`): 128 locations sampled per batch with at most half
positive; BCE on the sampled locations plus smooth-L1 (beta 1/9) on the sampled positives, both
divided by the number of sampled locations (as the Feng lab code does).

Pseudo-boxes (:meth:`CenternessBoxHead.predict_boxes`): connected components (4-connectivity,
scipy's default; the paper does not say) of ``sigmoid(centerness) > 0.95``; each component
gives the box decoded at its peak; boxes are clipped and NMS-ed, scored by the peak value.

The targets are computed here in torch from ``gt_masks``, not by the mapper, so the model works
with any mapper that drops the unannotated instances. This is the definition of the targets;
:func:`nucleiweak_d2.pseudo_labels.centerness_targets` is its numpy mirror for offline use
(same labels and boxes on the ``ceil(H / s) x ceil(W / s)`` grid, checked in
``tests/test_feng2019_centerness.py``): change both together.

Deviations from the Feng lab code (docs/REFERENCE_CODE.md section 2): its anchor boxes sit at
``(4x, 4y)`` (cell corners) with a fixed 32x32 size; here they sit at the cell centres, the
convention of the area-averaged mask projection, with the configurable median box size the
paper describes. The cell holding an instance's box centre is forced positive (the paper's
0.3-size centre box may contain no cell centre for nuclei under ~7 px).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, nms
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.sampling import subsample_labels
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from fvcore.nn import smooth_l1_loss
from scipy import ndimage
from torch import nn

__all__ = ["centerness_targets", "union_of_masks", "CenternessBoxHead"]


def union_of_masks(instances):
    """Union of the instance masks of one image as an ``(H, W)`` bool tensor.

    ``gt_masks`` may be :class:`BitMasks` or :class:`PolygonMasks`; without ``gt_masks`` the
    box interiors stand in for the masks.
    """
    h, w = instances.image_size
    device = instances.gt_boxes.device
    if len(instances) == 0:
        return torch.zeros((h, w), dtype=torch.bool, device=device)
    if instances.has("gt_masks"):
        masks = instances.gt_masks
        if isinstance(masks, PolygonMasks):
            masks = BitMasks.from_polygon_masks(masks, h, w)
        if isinstance(masks, BitMasks):
            return masks.tensor.to(device=device, dtype=torch.bool).any(dim=0)
        return torch.as_tensor(masks, device=device).bool().any(dim=0)
    union = torch.zeros((h, w), dtype=torch.bool, device=device)
    for x1, y1, x2, y2 in instances.gt_boxes.tensor.round().long().tolist():
        union[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
    return union


def _cell_range(lo, hi, centre, n):
    """Cells ``k`` with ``k + 0.5`` in ``[lo, hi]``, plus the cell holding ``centre``; clipped."""
    k0 = min(math.ceil(lo - 0.5), math.floor(centre))
    k1 = max(math.floor(hi - 0.5), math.floor(centre))
    return max(k0, 0), min(k1, n - 1)


def centerness_targets(gt_boxes, mask, feature_size, stride, center_fraction=0.3):
    """Centerness labels and matched boxes of one image on a stride-``stride`` grid.

    Parameters
    ----------
    gt_boxes : torch.Tensor
        ``(K, 4)`` XYXY boxes of the annotated instances, in input pixels.
    mask : torch.Tensor
        ``(H, W)`` bool union of the annotated instance masks (unpadded image size).
    feature_size : tuple of int
        ``(Hf, Wf)`` of the feature map (it may cover padding beyond the image).
    stride : int
        Stride of the feature map.
    center_fraction : float
        Side of the centre box relative to the instance box (paper: 0.3).

    Returns
    -------
    labels : torch.Tensor
        ``(Hf, Wf)`` int64 in {-1 ignore, 0 negative, 1 positive}.
    boxes : torch.Tensor
        ``(Hf, Wf, 4)`` float XYXY box of the instance assigned to each positive cell (zeros
        elsewhere).
    """
    hf, wf = int(feature_size[0]), int(feature_size[1])
    device = gt_boxes.device
    labels = torch.full((hf, wf), -1, dtype=torch.int64, device=device)
    boxes = torch.zeros((hf, wf, 4), dtype=torch.float32, device=device)
    h, w = min(mask.shape[0], hf * stride), min(mask.shape[1], wf * stride)
    padded = torch.zeros((hf * stride, wf * stride), dtype=torch.float32, device=device)
    padded[:h, :w] = mask[:h, :w].float()
    projected = F.avg_pool2d(padded[None, None], stride)[0, 0] >= 0.5
    labels[projected] = 0
    if len(gt_boxes) == 0:
        return labels, boxes
    areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    for k in torch.argsort(areas, descending=True).tolist():  # smaller boxes written last
        x1, y1, x2, y2 = (gt_boxes[k] / stride).tolist()
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        hw, hh = center_fraction * (x2 - x1) / 2, center_fraction * (y2 - y1) / 2
        j0, j1 = _cell_range(cx - hw, cx + hw, cx, wf)
        i0, i1 = _cell_range(cy - hh, cy + hh, cy, hf)
        if j0 > j1 or i0 > i1:
            continue  # centre outside the grid
        labels[i0 : i1 + 1, j0 : j1 + 1] = 1
        boxes[i0 : i1 + 1, j0 : j1 + 1] = gt_boxes[k].float()
    return labels, boxes


class CenternessBoxHead(nn.Module):
    """Centerness logit + anchor-relative box regression per location of one feature map.

    Parameters
    ----------
    in_channels : int
        Channels of the input feature map.
    stride : int
        Its stride (4 for P2).
    conv_dim : int
        Channels of the 3x3 convolution shared by the two branches (with ``own_conv`` False:
        the output channels of the convolution passed to :meth:`forward`).
    anchor_size : tuple of float
        ``(width, height)`` of the anchor box at each location, in input pixels.
    box2box_transform : Box2BoxTransform
        Box encoding relative to the anchor box.
    center_fraction : float
        Relative size of the positive centre box.
    batch_size_per_batch : int
        Locations sampled per batch for the loss.
    positive_fraction : float
        Largest fraction of positives among them.
    smooth_l1_beta : float
        Beta of the smooth-L1 box loss.
    centerness_loss_weight, box_loss_weight : float
        Loss weights.
    score_thresh : float
        Centerness probability threshold of the pseudo-box seeds.
    nms_thresh : float
        NMS IoU threshold over the pseudo-boxes of one image.
    max_boxes : int
        At most this many pseudo-boxes per image.
    own_conv : bool
        Build the head's own 3x3 convolution (True). False: the head has none, and
        :meth:`forward` must be given the convolution to use (the RPN head's, as the Feng lab
        code does; ``NUCLEIWEAK.FENG2019.SHARE_RPN_CONV``).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels,
        stride,
        conv_dim=256,
        anchor_size=(32.0, 32.0),
        box2box_transform=None,
        center_fraction=0.3,
        batch_size_per_batch=128,
        positive_fraction=0.5,
        smooth_l1_beta=1.0 / 9.0,
        centerness_loss_weight=1.0,
        box_loss_weight=1.0,
        score_thresh=0.95,
        nms_thresh=0.5,
        max_boxes=2000,
        own_conv=True,
    ):
        super().__init__()
        self.stride = int(stride)
        self.anchor_size = tuple(float(v) for v in anchor_size)
        self.box2box_transform = box2box_transform or Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
        self.center_fraction = center_fraction
        self.batch_size_per_batch = batch_size_per_batch
        self.positive_fraction = positive_fraction
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weights = {
            "loss_centerness": centerness_loss_weight,
            "loss_center_box": box_loss_weight,
        }
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.max_boxes = max_boxes
        self.conv = nn.Conv2d(in_channels, conv_dim, 3, padding=1) if own_conv else None
        self.centerness = nn.Conv2d(conv_dim, 1, 1)
        self.box_deltas = nn.Conv2d(conv_dim, 4, 1)
        for layer in (self.conv, self.centerness, self.box_deltas):
            if layer is not None:
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        f = cfg.NUCLEIWEAK.FENG2019
        return {
            "in_channels": input_shape.channels,
            "stride": input_shape.stride,
            "conv_dim": f.CENTERNESS_CONV_DIM,
            "anchor_size": tuple(f.ANCHOR_SIZE),
            "box2box_transform": Box2BoxTransform(weights=tuple(f.BBOX_REG_WEIGHTS)),
            "center_fraction": f.CENTER_FRACTION,
            "batch_size_per_batch": f.BATCH_SIZE_PER_BATCH,
            "positive_fraction": f.POSITIVE_FRACTION,
            "smooth_l1_beta": f.SMOOTH_L1_BETA,
            "centerness_loss_weight": f.CENTERNESS_LOSS_WEIGHT,
            "box_loss_weight": f.BOX_LOSS_WEIGHT,
            "score_thresh": f.SCORE_THRESH,
            "nms_thresh": f.NMS_THRESH,
            "max_boxes": f.MAX_PSEUDO_BOXES,
            "own_conv": not f.SHARE_RPN_CONV,
        }

    def forward(self, feature, conv=None):
        """Return ``(logits (B, 1, Hf, Wf), deltas (B, 4, Hf, Wf))`` for a ``(B, C, Hf, Wf)`` map.

        ``conv`` replaces the head's own 3x3 convolution (required when it has none); a ReLU
        follows it either way (a no-op after the RPN head's convolution, which has its own).
        """
        conv = conv if conv is not None else self.conv
        if conv is None:
            raise ValueError(
                "this CenternessBoxHead has no convolution of its own (own_conv=False): "
                "pass the shared one, e.g. the RPN head's conv"
            )
        x = F.relu(conv(feature))
        return self.centerness(x), self.box_deltas(x)

    def anchors(self, feature_size, device):
        """``(Hf * Wf, 4)`` XYXY anchor boxes centred on the cells, row-major."""
        hf, wf = feature_size
        ys = (torch.arange(hf, device=device, dtype=torch.float32) + 0.5) * self.stride
        xs = (torch.arange(wf, device=device, dtype=torch.float32) + 0.5) * self.stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        aw, ah = self.anchor_size
        return torch.stack([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2], dim=-1).reshape(
            -1, 4
        )

    def losses(self, logits, deltas, gt_instances):
        """Centerness BCE and centre-box smooth-L1 over the sampled locations of the batch.

        Parameters
        ----------
        logits, deltas : torch.Tensor
            Outputs of :meth:`forward`.
        gt_instances : list of Instances
            Annotated instances per image (``gt_boxes``, ``gt_masks`` optional).

        Returns
        -------
        dict
            ``loss_centerness`` and ``loss_center_box``.
        """
        feature_size = tuple(logits.shape[-2:])
        targets = [
            centerness_targets(
                g.gt_boxes.tensor,
                union_of_masks(g),
                feature_size,
                self.stride,
                self.center_fraction,
            )
            for g in gt_instances
        ]
        labels = torch.stack([t[0] for t in targets]).flatten()
        target_boxes = torch.stack([t[1] for t in targets]).reshape(-1, 4)
        pos_idx, neg_idx = subsample_labels(
            labels, self.batch_size_per_batch, self.positive_fraction, 0
        )
        sampled = torch.cat([pos_idx, neg_idx])
        normalizer = max(sampled.numel(), 1)
        loss_ctr = F.binary_cross_entropy_with_logits(
            logits.flatten()[sampled], labels[sampled].to(logits.dtype), reduction="sum"
        )
        anchors = self.anchors(feature_size, logits.device).repeat(len(gt_instances), 1)
        target_deltas = self.box2box_transform.get_deltas(anchors[pos_idx], target_boxes[pos_idx])
        pred_deltas = deltas.permute(0, 2, 3, 1).reshape(-1, 4)[pos_idx]
        loss_box = smooth_l1_loss(pred_deltas, target_deltas, self.smooth_l1_beta, reduction="sum")
        losses = {
            "loss_centerness": loss_ctr / normalizer,
            "loss_center_box": loss_box / normalizer,
        }
        return {k: v * self.loss_weights[k] for k, v in losses.items()}

    @torch.no_grad()
    def predict_boxes(self, logits, deltas, image_sizes, score_thresh=None):
        """Pseudo-boxes: peaks of the components of ``sigmoid(logits) > score_thresh``.

        Parameters
        ----------
        logits, deltas : torch.Tensor
            Outputs of :meth:`forward`.
        image_sizes : list of tuple
            ``(h, w)`` of each image before padding; cells beyond it are not used.
        score_thresh : float, optional
            Instead of the head's ``score_thresh`` (e.g. to compare thresholds on one forward).

        Returns
        -------
        list of Instances
            Per image, ``pred_boxes`` (Boxes, clipped, after NMS) and ``scores`` (peak
            centerness probability), highest score first.
        """
        score_thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        probs = logits.sigmoid()[:, 0]
        anchors = self.anchors(tuple(logits.shape[-2:]), logits.device)
        wf = logits.shape[-1]
        results = []
        for i, (h, w) in enumerate(image_sizes):
            vh, vw = math.ceil(h / self.stride), math.ceil(w / self.stride)
            prob = probs[i, :vh, :vw]
            prob_np = prob.float().cpu().numpy()
            components, n = ndimage.label(prob_np > score_thresh)
            result = Instances((h, w))
            if n == 0:
                result.pred_boxes = Boxes(torch.zeros((0, 4), device=logits.device))
                result.scores = torch.zeros((0,), device=logits.device)
                results.append(result)
                continue
            peaks = np.asarray(ndimage.maximum_position(prob_np, components, np.arange(1, n + 1)))
            rows = torch.as_tensor(peaks[:, 0], device=logits.device, dtype=torch.long)
            cols = torch.as_tensor(peaks[:, 1], device=logits.device, dtype=torch.long)
            cell_deltas = deltas[i][:, rows, cols].t()
            boxes = Boxes(
                self.box2box_transform.apply_deltas(cell_deltas, anchors[rows * wf + cols])
            )
            boxes.clip((h, w))
            scores = prob[rows, cols]
            keep = boxes.nonempty()
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes.tensor, scores, self.nms_thresh)[: self.max_boxes]
            result.pred_boxes, result.scores = boxes[keep], scores[keep]
            results.append(result)
        return results
