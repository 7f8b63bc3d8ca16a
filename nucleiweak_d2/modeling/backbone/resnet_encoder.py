"""Detectron2's ResNet as a UNet encoder: the stem output (before max-pooling) is exposed.

A UNet needs a skip connection at every scale. Detectron2's :class:`ResNet` reports its
``"stem"`` feature after the stem's max-pool (stride 4, the same stride as ``res2``), so the
stride-2 activation that the ResUNet of Qu et al. concatenates in its last decoder block is
lost. :class:`NucleiWeakResNet` is a thin subclass whose ``"stem"`` feature is the stem's
``conv1 -> norm -> relu`` output (stride 2); the max-pool and all stages are unchanged, and
parameter names stay those of Detectron2's ResNet (``stem.conv1``, ``res2.0.conv1``, ...), so
Detectron2 ResNet checkpoints load without renaming.
"""

import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import (
    BasicBlock,
    BasicStem,
    ResNet,
    build_resnet_backbone,
)

__all__ = ["NucleiWeakResNet", "build_nucleiweak_resnet_backbone"]

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


class NucleiWeakResNet(ResNet):
    """Detectron2 ResNet whose ``"stem"`` output is taken before the max-pool (stride 2).

    Parameters are those of :class:`detectron2.modeling.backbone.ResNet`; ``stem`` must be a
    :class:`BasicStem`. ``size_divisibility`` is the stride of the deepest output, so a
    UNet decoder always finds skip features of exactly twice its size.
    """

    def __init__(self, stem, stages, num_classes=None, out_features=None, freeze_at=0):
        if not isinstance(stem, BasicStem):
            raise TypeError(f"NucleiWeakResNet needs a BasicStem, got {type(stem).__name__}")
        super().__init__(
            stem, stages, num_classes=num_classes, out_features=out_features, freeze_at=freeze_at
        )
        self._out_feature_strides["stem"] = 2

    @property
    def size_divisibility(self):
        return max(self._out_feature_strides[f] for f in self._out_features)

    def forward(self, x):
        """Return the requested features; ``"stem"`` is the pre-pool stem activation.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, C, H, W)`` normalised images, H and W multiples of ``size_divisibility``.

        Returns
        -------
        dict[str, torch.Tensor]
        """
        if x.dim() != 4:
            raise ValueError(f"NucleiWeakResNet takes (N, C, H, W) input, got {tuple(x.shape)}")
        outputs = {}
        x = F.relu_(self.stem.conv1(x))
        if "stem" in self._out_features:
            outputs["stem"] = x
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self):
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


def _narrow_basic_stages(depth, in_channels, res2_channels, norm):
    """ResNet-18/34 stages with a custom width (``res2_channels`` doubling per stage).

    Detectron2's ``build_resnet_backbone`` insists on 64 channels for R18/R34; the tiny
    models of the CPU smoke tests need fewer, so this builds the same stages with
    :meth:`ResNet.make_stage` and :class:`BasicBlock`.
    """
    stages, out_channels = [], res2_channels
    for idx, n in enumerate(_BLOCKS_PER_STAGE[depth]):
        stride = 1 if idx == 0 else 2
        stages.append(
            ResNet.make_stage(
                BasicBlock,
                n,
                in_channels=in_channels,
                out_channels=out_channels,
                stride_per_block=[stride] + [1] * (n - 1),
                norm=norm,
            )
        )
        in_channels, out_channels = out_channels, out_channels * 2
    return stages


@BACKBONE_REGISTRY.register()
def build_nucleiweak_resnet_backbone(cfg, input_shape):
    """Build :class:`NucleiWeakResNet` from ``cfg.MODEL.RESNETS`` (depth 18, 34 or 50).

    The stages come from Detectron2's :func:`build_resnet_backbone`; only a narrow R18/R34
    (``RES2_OUT_CHANNELS != 64``, used by the smoke tests) is assembled here with
    :meth:`ResNet.make_stage`, because Detectron2's builder rejects it.

    Parameters
    ----------
    cfg : CfgNode
    input_shape : ShapeSpec

    Returns
    -------
    NucleiWeakResNet
    """
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in (18, 34, 50):
        raise ValueError(f"MODEL.RESNETS.DEPTH must be 18, 34 or 50, got {r.DEPTH}")
    if r.DEPTH in (18, 34) and r.RES2_OUT_CHANNELS != 64:
        stem = BasicStem(
            in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM
        )
        stages = _narrow_basic_stages(r.DEPTH, r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.NORM)
    else:
        base = build_resnet_backbone(cfg, input_shape)
        stem = base.stem
        stages = [list(stage.children()) for stage in base.stages]
    return NucleiWeakResNet(
        stem, stages, out_features=list(r.OUT_FEATURES), freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT
    )
