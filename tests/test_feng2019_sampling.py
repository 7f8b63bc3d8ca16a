"""Blocked false-negative sampling in the RPN and the ROI heads (Feng et al. 2019)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling.proposal_generator import build_proposal_generator  # noqa: E402
from detectron2.modeling.roi_heads import build_roi_heads  # noqa: E402
from detectron2.structures import BitMasks, Boxes, ImageList, Instances, pairwise_iou  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import nucleiweak_d2.methods.feng2019  # noqa: E402,F401  (registration)
from nucleiweak_d2.methods.feng2019.rpn import with_blocked_boxes  # noqa: E402

ANNOTATED = (4.0, 4.0, 20.0, 20.0)
BLOCKED = (40.0, 40.0, 56.0, 56.0)  # an unannotated nucleus found by the centerness head


def _cfg():
    cfg = get_cfg()
    cfg.MODEL.RPN.IN_FEATURES = ["p2"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16]]
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0]]
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 4096  # every negative is sampled when not blocked
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 4096
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 4
    cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlign"  # torchvision fallback, no compiled _C needed
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 8
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 4
    cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlign"
    return cfg


def _gt():
    gt = Instances((64, 64))
    gt.gt_boxes = Boxes(torch.tensor([ANNOTATED]))
    gt.gt_classes = torch.zeros(1, dtype=torch.int64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 4:20, 4:20] = True
    gt.gt_masks = BitMasks(masks)
    return gt


def _inputs():
    torch.manual_seed(0)
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    return images, {"p2": torch.randn(1, 8, 16, 16)}


def _rpn_labels(blocked, use_ignore_field=False):
    cfg = _cfg()
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "NucleiWeakFeng2019RPN"
    rpn = build_proposal_generator(cfg, {"p2": ShapeSpec(channels=8, stride=4)})
    rpn.train()
    captured = {}
    original = rpn.losses

    def spy(anchors, logits, gt_labels, deltas, gt_boxes):
        captured["anchors"], captured["labels"] = Boxes.cat(anchors), gt_labels[0]
        return original(anchors, logits, gt_labels, deltas, gt_boxes)

    rpn.losses = spy
    images, features = _inputs()
    gt = _gt()
    with EventStorage():
        if use_ignore_field:
            _, losses = rpn(
                images, features, [with_blocked_boxes(gt, Boxes(torch.tensor([BLOCKED])))]
            )
        else:
            _, losses = rpn(images, features, [gt], blocked_boxes=blocked)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"} and all(
        torch.isfinite(v) for v in losses.values()
    )
    iou_blocked = pairwise_iou(Boxes(torch.tensor([BLOCKED])), captured["anchors"])[0]
    iou_annotated = pairwise_iou(Boxes(torch.tensor([ANNOTATED])), captured["anchors"])[0]
    return captured["labels"], iou_blocked, iou_annotated


@pytest.mark.parametrize("use_ignore_field", [False, True])
def test_rpn_never_samples_blocked_anchor_as_negative(use_ignore_field):
    labels, iou_b, iou_a = _rpn_labels([Boxes(torch.tensor([BLOCKED]))], use_ignore_field)
    on_blocked = (iou_b >= 0.3) & (iou_a < 0.3)
    assert on_blocked.sum() >= 4
    assert (labels[on_blocked] == -1).all()
    assert (labels[iou_a >= 0.7] == 1).all() and (labels == 1).any()
    far = (iou_b == 0) & (iou_a == 0)
    assert (labels[far] == 0).all()  # the rest is still background


def test_rpn_samples_them_as_negative_without_the_module():
    for blocked in (None, [Boxes(torch.zeros(0, 4))]):
        labels, iou_b, iou_a = _rpn_labels(blocked)
        on_blocked = (iou_b >= 0.3) & (iou_a < 0.3)
        assert (labels[on_blocked] == 0).all()


def _roi_sampled(blocked):
    cfg = _cfg()
    cfg.MODEL.ROI_HEADS.NAME = "NucleiWeakFeng2019ROIHeads"
    heads = build_roi_heads(cfg, {"p2": ShapeSpec(channels=8, stride=4)})
    heads.train()
    captured = {}
    original = heads._forward_box

    def spy(features, proposals):
        captured["proposals"] = proposals[0]
        return original(features, proposals)

    heads._forward_box = spy
    images, features = _inputs()
    props = Instances((64, 64))
    boxes = [
        BLOCKED,
        (41, 42, 57, 55),
        (38, 40, 55, 57),
        (4, 5, 20, 21),
        (0, 30, 16, 46),
        (30, 0, 46, 16),
    ]
    props.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    props.objectness_logits = torch.zeros(len(boxes))
    with EventStorage():
        _, losses = heads(images, features, [props], [_gt()], blocked_boxes=blocked)
    assert {"loss_cls", "loss_box_reg", "loss_mask"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sampled = captured["proposals"]
    iou_b = pairwise_iou(Boxes(torch.tensor([BLOCKED])), sampled.proposal_boxes)[0]
    return sampled, iou_b, heads.num_classes


def test_roi_heads_never_sample_blocked_proposal_as_negative():
    sampled, iou_b, bg = _roi_sampled([Boxes(torch.tensor([BLOCKED]))])
    assert not ((iou_b >= 0.5) & (sampled.gt_classes == bg)).any()
    assert (sampled.gt_classes == 0).sum() >= 2  # the annotated proposal and the appended gt box
    assert (sampled.gt_classes == bg).sum() == 2  # the two far-away proposals
    assert sampled.has("gt_masks")


def test_roi_heads_sample_them_as_negative_without_the_module():
    sampled, iou_b, bg = _roi_sampled(None)
    assert ((iou_b >= 0.5) & (sampled.gt_classes == bg)).sum() == 3
