"""ResNet encoder + UNet head: shapes, strides, gradients, losses, tiling."""

import pytest
from conftest import TINY_UNET_OPTS

pytest.importorskip("detectron2")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.modeling.backbone import (  # noqa: E402
    NucleiWeakUNetHead,
    build_nucleiweak_resnet_backbone,
    ignore_aware_cross_entropy,
    sliding_window_apply,
)

TINY = TINY_UNET_OPTS


def _cfg(opts=()):
    return setup_cfg("configs/Base-Nuclei-UNet.yaml", TINY + list(opts))


def test_encoder_exposes_stride2_stem_and_d2_names():
    cfg = _cfg()
    enc = build_nucleiweak_resnet_backbone(cfg, ShapeSpec(channels=3))
    shapes = enc.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {
        "stem": 2,
        "res2": 4,
        "res3": 8,
        "res4": 16,
        "res5": 32,
    }
    assert [shapes[k].channels for k in ("stem", "res2", "res3", "res4", "res5")] == [
        8,
        8,
        16,
        32,
        64,
    ]
    feats = enc(torch.randn(2, 3, 64, 96))
    for k, f in feats.items():
        assert f.shape[-2:] == (64 // shapes[k].stride, 96 // shapes[k].stride), k
    assert enc.size_divisibility == 32
    names = {n for n, _ in enc.named_parameters()}
    assert "stem.conv1.weight" in names and "res2.0.conv1.weight" in names


@pytest.mark.parametrize("depth,res2", [(18, 64), (34, 64), (50, 256)])
def test_standard_depths_use_detectron2_builder(depth, res2):
    cfg = _cfg(
        [
            "MODEL.RESNETS.DEPTH",
            str(depth),
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "64",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            str(res2),
        ]
    )
    enc = build_nucleiweak_resnet_backbone(cfg, ShapeSpec(channels=3))
    blocks = [len(s) for s in enc.stages]
    assert blocks == {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
    assert enc.output_shape()["res5"].channels == (2048 if depth == 50 else 512)


def test_head_gives_stride1_logits_and_gradients_reach_encoder():
    cfg = _cfg(["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
    enc = build_nucleiweak_resnet_backbone(cfg, ShapeSpec(channels=3))
    head = NucleiWeakUNetHead(cfg, enc.output_shape())
    x = torch.randn(2, 3, 64, 64)
    logits = head.layers(enc(x))
    assert logits.shape == (2, 3, 64, 64)
    logits.square().mean().backward()
    assert enc.stem.conv1.weight.grad.abs().sum() > 0
    assert enc.res5[0].conv1.weight.grad.abs().sum() > 0
    assert head.predictor.weight.grad.abs().sum() > 0


def test_head_rejects_wrong_decoder_length():
    shapes = {"res2": ShapeSpec(channels=8, stride=4), "res3": ShapeSpec(channels=16, stride=8)}
    with pytest.raises(ValueError, match="decoder_channels"):
        NucleiWeakUNetHead(shapes, num_classes=2, decoder_channels=[8, 8, 8])


def test_ignore_aware_cross_entropy_matches_torch_and_survives_all_ignored():
    logits = torch.randn(2, 2, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 6))
    ref = F.cross_entropy(logits, target, ignore_index=2)
    assert torch.allclose(ignore_aware_cross_entropy(logits, target, 2), ref, atol=1e-6)
    loss = ignore_aware_cross_entropy(logits, torch.full((2, 5, 6), 2), 2)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_multi_target_loss_is_weighted_sum():
    shapes = {"res2": ShapeSpec(channels=4, stride=2)}
    head = NucleiWeakUNetHead(
        shapes, num_classes=2, decoder_channels=[4], ignore_value=2, target_weights=[0.3, 0.7]
    )
    logits = torch.randn(2, 2, 8, 8)
    t = torch.randint(0, 3, (2, 2, 8, 8))
    losses = head.losses(logits, t)
    want = 0.3 * F.cross_entropy(logits, t[:, 0], ignore_index=2) + 0.7 * F.cross_entropy(
        logits, t[:, 1], ignore_index=2
    )
    assert set(losses) == {"loss_sem_seg_t0", "loss_sem_seg_t1"}
    assert torch.allclose(sum(losses.values()), want, atol=1e-6)
    with pytest.raises(ValueError, match="target maps"):
        head.losses(logits, torch.zeros(2, 3, 8, 8, dtype=torch.long))


def test_sliding_window_matches_whole_image_for_local_op():
    conv = torch.nn.Conv2d(3, 2, kernel_size=1)
    x = torch.randn(1, 3, 50, 70)
    whole = conv(x)
    tiled = sliding_window_apply(conv, x, tile=32, overlap=8, size_divisibility=1)
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=1e-5)
    padded = sliding_window_apply(
        lambda t: t[:, :1] * 0 + t.shape[-1], x, tile=0, overlap=0, size_divisibility=32
    )
    assert padded.shape == (1, 1, 50, 70) and padded.max() == 96  # ran on the padded input


def test_tile_starts_is_the_one_tiling_rule():
    from nucleiweak_d2.engine.predictor import tile_boxes
    from nucleiweak_d2.modeling.backbone.tiling import tile_starts

    assert tile_starts(500, 224, 144) == [0, 144, 276]  # Qu et al.: 224 tiles, overlap 80
    assert tile_starts(224, 224, 144) == [0] and tile_starts(10, 224, 144) == [0]
    assert tile_starts(225, 224, 144) == [0, 1]  # the last tile is flush with the end
    assert tile_starts(64, 32, 32) == [0, 32]
    # the tiled predictor cuts its tiles by the same rule
    boxes = tile_boxes(70, 500, 224, 80)
    assert [b[0] for b in boxes] == tile_starts(500, 224, 144) and {b[1] for b in boxes} == {0}
