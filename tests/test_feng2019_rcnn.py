"""NucleiWeakFeng2019RCNN: pseudo-box proposals at inference and a CPU training smoke test."""

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from conftest import register_partial_mask_train  # noqa: E402
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


def _run_capturing_box_pooler(model, peaks):
    """Run inference with centerness logits peaked at ``peaks`` (cells); return pooled boxes."""
    head = model.centerness_head
    original = head.forward

    def forward(feature):
        logits, deltas = original(feature)
        logits = torch.full_like(logits, -10.0)
        for i, j in peaks:
            logits[0, 0, i, j] = 8.0
        return logits, torch.zeros_like(deltas)

    head.forward = forward
    pooled = []
    hook = model.roi_heads.box_pooler.register_forward_pre_hook(
        lambda m, args: pooled.append(args[1][0].tensor.clone())
    )
    image = (torch.rand(3, 64, 64) * 255).to(torch.uint8)
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 64, "width": 64}])
    hook.remove()
    assert "instances" in out and out["instances"].image_size == (64, 64)
    return pooled[0]


def test_pseudo_box_proposals_reach_the_box_head():
    model = _model(["MODEL.RPN.POST_NMS_TOPK_TEST", "3"])
    pooled = _run_capturing_box_pooler(model, [(4, 4), (10, 12)])
    # zero deltas: 12x12 anchor boxes centred on the peak cells (stride 4)
    expected = torch.tensor([[12.0, 12, 24, 24], [44, 36, 56, 48]])
    for box in expected:
        assert (pooled - box).abs().sum(dim=1).min() < 1e-4
    assert len(pooled) == 3 + 2  # the RPN's top 3 plus the two pseudo-boxes


def test_pseudo_box_proposals_can_be_switched_off():
    model = _model(
        [
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            "3",
            "NUCLEIWEAK.FENG2019.PSEUDO_PROPOSALS_AT_TEST",
            "False",
        ]
    )
    pooled = _run_capturing_box_pooler(model, [(4, 4)])
    assert len(pooled) == 3
    assert (pooled - torch.tensor([12.0, 12, 24, 24])).abs().sum(dim=1).min() > 1e-3


def test_training_losses_and_blocking_needs_partial_heads():
    model = _model().train()
    image = (torch.rand(3, 64, 64) * 255).to(torch.uint8)
    from detectron2.structures import BitMasks, Boxes, Instances

    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10, 26, 26]]))
    inst.gt_classes = torch.zeros(1, dtype=torch.int64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 10:26, 10:26] = True
    inst.gt_masks = BitMasks(masks)
    with EventStorage() as storage:
        losses = model([{"image": image, "instances": inst}])
        assert "feng2019/num_pseudo_boxes" in storage.latest()
    expected = {
        "loss_centerness",
        "loss_center_box",
        "loss_rpn_cls",
        "loss_rpn_loc",
        "loss_cls",
        "loss_box_reg",
        "loss_mask",
    }
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="blocked_boxes"):
        _model(["MODEL.PROPOSAL_GENERATOR.NAME", "RPN"])


@pytest.mark.parametrize("config", [PARTIAL, BASELINE], ids=["partial", "baseline"])
def test_cpu_training_smoke(config, synthetic_root, tmp_path):
    from nucleiweak_d2.engine.trainer import Trainer

    register_partial_mask_train(synthetic_root, tmp_path, "feng2019_smoke_train")
    cfg = setup_cfg(
        str(config),
        [
            "MODEL.DEVICE",
            "cpu",
            "DATASETS.TRAIN",
            "('feng2019_smoke_train',)",
            "DATASETS.TEST",
            "()",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ],
    )
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER
    metrics = trainer.storage.latest()
    assert "total_loss" in metrics and torch.isfinite(torch.tensor(metrics["total_loss"][0]))
    partial = "loss_centerness" in metrics and "feng2019/num_pseudo_boxes" in metrics
    assert partial == (config == PARTIAL)  # the baseline has no centerness head
