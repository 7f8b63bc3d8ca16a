"""ResNet-FPN backbone with decomposed self-attention on its outputs (Feng et al. 2019).

Registered in Detectron2's ``BACKBONE_REGISTRY`` as ``build_nucleiweak_feng2019_attention_fpn_backbone``
(``MODEL.BACKBONE.NAME``). The FPN is Detectron2's, unchanged; :class:`AttentionFPN` applies a
:class:`~nucleiweak_d2.methods.feng2019.attention.DecomposedSelfAttention` block to each level
named in ``cfg.NUCLEIWEAK.FENG2019.ATTENTION_LEVELS`` after the FPN's 3x3 output convolution,
as the Feng lab code does (``MODEL.FPN.USE_DA``). Parameter names of the FPN are those of
``build_resnet_fpn_backbone``, so checkpoints of the plain model load into it (the attention
blocks then start from their identity initialisation). ``NUCLEIWEAK.UNET.IMAGENET_WEIGHTS`` is
loaded into the ResNet as in ``build_nucleiweak_resnet_fpn_backbone``.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import nn

from ...modeling.backbone.imagenet import imagenet_weights_into_backbone
from .attention import DecomposedSelfAttention

__all__ = ["AttentionFPN", "build_nucleiweak_feng2019_attention_fpn_backbone"]


class AttentionFPN(FPN):
    """Detectron2 FPN whose outputs pass through decomposed self-attention blocks.

    Parameters
    ----------
    attention_levels : list of str
        FPN outputs (e.g. ``["p2", "p3", "p4", "p5"]``) that get an attention block.
    basis_channels, value_channels : int
        ``C_b`` and ``C_v`` of every block.
    **kwargs
        Arguments of :class:`detectron2.modeling.backbone.FPN`.

    Notes
    -----
    When the top block (P6 max-pooling) reads an attended level, P6 is recomputed from the
    attended map, so P6 is the max-pool of the attended P5 as in the Feng lab code.
    """

    def __init__(self, *, attention_levels, basis_channels=64, value_channels=64, **kwargs):
        super().__init__(**kwargs)
        unknown = set(attention_levels) - set(self._out_features)
        if unknown:
            raise ValueError(
                f"attention levels {sorted(unknown)} not in FPN outputs {self._out_features}"
            )
        self.attention_levels = list(attention_levels)
        self.attention = nn.ModuleDict(
            {
                f: DecomposedSelfAttention(
                    self._out_feature_channels[f], basis_channels, value_channels
                )
                for f in self.attention_levels
            }
        )

    def forward(self, x):
        """Return the FPN features, attended on ``attention_levels``."""
        results = super().forward(x)
        for f in self.attention_levels:
            results[f] = self.attention[f](results[f])
        top = self.top_block
        if top is not None and getattr(top, "in_feature", None) in self.attention_levels:
            extra = top(results[top.in_feature])
            for f, res in zip(self._out_features[-top.num_levels :], extra):
                results[f] = res
        return results


@BACKBONE_REGISTRY.register()
def build_nucleiweak_feng2019_attention_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + FPN (``MODEL.RESNETS``, ``MODEL.FPN``) + attention (``NUCLEIWEAK.FENG2019``).

    Parameters
    ----------
    cfg : detectron2.config.CfgNode
    input_shape : detectron2.layers.ShapeSpec

    Returns
    -------
    AttentionFPN
    """
    fcfg = cfg.NUCLEIWEAK.FENG2019
    bottom_up = build_resnet_backbone(cfg, input_shape)
    imagenet_weights_into_backbone(cfg, bottom_up)
    return AttentionFPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        attention_levels=fcfg.ATTENTION_LEVELS,
        basis_channels=fcfg.ATTENTION_BASIS_CHANNELS,
        value_channels=fcfg.ATTENTION_VALUE_CHANNELS,
    )
