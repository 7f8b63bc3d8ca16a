"""Feng model options of issue 17: 3x3 mask dilation (both meta-architectures), shared RPN conv."""

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PARTIAL = CONFIGS / "quick" / "feng2019_partial_instant_test.yaml"
BASELINE = CONFIGS / "quick" / "feng2019_baseline_instant_test.yaml"


def _model(opts=()):
    cfg = setup_cfg(str(PARTIAL), ["MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _image_input(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "image": (torch.rand(3, 64, 64, generator=g) * 255).to(torch.uint8),
            "height": 64,
            "width": 64,
        }
    ]


@pytest.mark.parametrize("arch", ["NucleiWeakFeng2019RCNN", "NucleiWeakFeng2019BaselineRCNN"])
def test_dilate_masks_is_a_3x3_dilation_of_the_output_masks(arch):
    import torch.nn.functional as F

    opts = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    if arch != "NucleiWeakFeng2019RCNN":
        opts = [
            *opts,
            "MODEL.META_ARCHITECTURE",
            arch,
            "MODEL.BACKBONE.NAME",
            "build_resnet_fpn_backbone",
            "MODEL.PROPOSAL_GENERATOR.NAME",
            "RPN",
            "MODEL.ROI_HEADS.NAME",
            "StandardROIHeads",
        ]
    model = _model(opts)
    assert type(model).__name__ == arch and model.dilate_masks is False  # off by default
    with torch.no_grad():
        (plain,) = model(_image_input())
        model.dilate_masks = True
        (dilated,) = model(_image_input())
    masks = plain["instances"].pred_masks
    assert masks.dtype == torch.bool and len(masks) > 0 and masks.any()
    expected = F.max_pool2d(masks[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
    assert torch.equal(dilated["instances"].pred_masks, expected)
    assert not torch.equal(expected, masks)
    assert torch.equal(dilated["instances"].pred_boxes.tensor, plain["instances"].pred_boxes.tensor)
    cfg = setup_cfg(
        str(PARTIAL), ["MODEL.DEVICE", "cpu", "NUCLEIWEAK.FENG2019.DILATE_MASKS", "True", *opts]
    )
    assert build_model(cfg).dilate_masks is True


def test_baseline_meta_arch_without_dilation_is_generalized_rcnn():
    cfg = setup_cfg(
        str(BASELINE), ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    )
    torch.manual_seed(0)
    reference = build_model(cfg).eval()
    cfg.defrost()
    cfg.MODEL.META_ARCHITECTURE = "NucleiWeakFeng2019BaselineRCNN"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # the same weights; the stain buffers of NucleiWeakStainRCNN (method "none") added
    keys = set(model.state_dict()) - {"stain_code", "stain_target"}
    assert keys == set(reference.state_dict()) and int(model.stain_code) == 0
    with torch.no_grad():
        (a,), (b,) = reference(_image_input()), model(_image_input())
    assert len(a["instances"]) > 0
    for field in ("pred_boxes", "scores", "pred_masks"):
        x, y = a["instances"].get(field), b["instances"].get(field)
        assert torch.equal(getattr(x, "tensor", x), getattr(y, "tensor", y))


def test_share_rpn_conv_uses_and_trains_the_rpn_conv():
    own = _model()
    assert isinstance(own.centerness_head.conv, torch.nn.Conv2d) and own.share_rpn_conv is False
    model = _model(["NUCLEIWEAK.FENG2019.SHARE_RPN_CONV", "True"])
    assert model.centerness_head.conv is None and model.share_rpn_conv
    n_own = sum(p.numel() for p in own.parameters())
    assert n_own - sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in own.centerness_head.conv.parameters()
    )
    rpn_conv = model.proposal_generator.rpn_head.conv
    feature = torch.randn(1, model.centerness_head.centerness.in_channels, 16, 16)
    logits, deltas = model.centerness({"p2": feature})
    x = torch.relu(rpn_conv(feature))
    assert torch.allclose(logits, model.centerness_head.centerness(x))
    assert torch.allclose(deltas, model.centerness_head.box_deltas(x))
    logits.sum().backward()
    assert rpn_conv.weight.grad is not None and rpn_conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="convolution of its own"):
        model.centerness_head(feature)
    from detectron2.structures import BitMasks, Boxes, Instances

    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10, 26, 26]]))
    inst.gt_classes = torch.zeros(1, dtype=torch.int64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 10:26, 10:26] = True
    inst.gt_masks = BitMasks(masks)
    model.train()
    with EventStorage():
        losses = model([{"image": _image_input()[0]["image"], "instances": inst}])
    assert all(torch.isfinite(v) for v in losses.values()) and "loss_centerness" in losses
    (_,) = model.eval()(_image_input())  # inference runs through the shared conv as well
