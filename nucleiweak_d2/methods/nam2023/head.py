"""``NucleiWeakNam2023Head``: the shared UNet decoder with PROnet's three modules on top.

PROnet (Fig. 1) feeds the encoder features through residual units (RUs) and attention units
(AUs) into a binary, an offset and a centre module, the centre module last: "the RUs maintain
feature information so that subsequent modules can reuse the features from early-stage
modules", "the AUs use the point predictions to refine the features in the offset module, and
the offset predictions to refine the features in the binary module". The figure's layer sizes
are not given in the text; our reading, at stride 1 after the shared UNet decoder:

    f_B = RU(f)      f_O = RU(f_B)      f_C = RU(f_O)        C = conv1x1(f_C)
    O = conv1x1(AU(f_O, sigmoid(C)))    B = conv1x1(AU(f_B, O))

- RU: ``relu(x + conv3x3(relu(conv3x3(x))))``, no normalisation (the decoder keeps none at
  stride 1, see ``NucleiWeakUNetHead``);
- AU: ``x * 2 sigmoid(conv3x3(prediction))`` with a zero-initialised gate, so it starts as the
  identity (residual-attention style, bounded in (0, 2)); gradients pass through the
  prediction, so the model is trained end to end as the paper states.

The encoder is the project's ResNet (``build_nucleiweak_resnet_backbone``) instead of the
paper's ImageNet VGG16: the same encoder and decoder as the other UNet methods of this project
(Qu et al., SPN+IEN), so comparisons isolate the method, with Detectron2 ImageNet weights.

``offset=False`` is the paper's "offset x" ablation (Table 2): no offset predictor, the offset
channels are zeros and neither AU is used (the binary AU has no offset prediction to read, the
offset AU no features to gate); the offset RUs stay, so the centre module is as deep as in the
full model.

This is a thin subclass of ``NucleiWeakUNetHead``: its 1x1 predictor is moved to
``binary_predictor`` and replaced by the identity, so ``super().layers`` returns the decoder
features; ``layers`` returns the three outputs concatenated as ``(N, 2 + 2 + 1, H, W)``
(binary logits, offsets in pixels, centre logit), which keeps the shared tiled inference
(``UNetModelMixin.logits``) working unchanged.
"""

import math

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ...modeling.backbone.unet_head import NucleiWeakUNetHead

__all__ = ["NucleiWeakNam2023Head", "ResidualUnit", "AttentionUnit", "split_outputs"]


def split_outputs(x):
    """``(binary logits (N, 2, H, W), offsets (N, 2, H, W), centre logit (N, 1, H, W))``."""
    return x[:, :2], x[:, 2:4], x[:, 4:5]


class ResidualUnit(nn.Module):
    """``relu(x + conv3x3(relu(conv3x3(x))))`` at constant width."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = Conv2d(channels, channels, kernel_size=3, padding=1, activation=F.relu)
        self.conv2 = Conv2d(channels, channels, kernel_size=3, padding=1)
        for conv in (self.conv1, self.conv2):
            weight_init.c2_msra_fill(conv)

    def forward(self, x):
        return F.relu(x + self.conv2(self.conv1(x)))


class AttentionUnit(nn.Module):
    """Gate features by a later module's prediction: ``x * 2 sigmoid(conv3x3(prediction))``."""

    def __init__(self, prediction_channels, channels):
        super().__init__()
        self.gate = Conv2d(prediction_channels, channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x, prediction):
        return x * (2.0 * torch.sigmoid(self.gate(prediction)))


@SEM_SEG_HEADS_REGISTRY.register()
class NucleiWeakNam2023Head(NucleiWeakUNetHead):
    """UNet decoder + PROnet's residual/attention units and binary, offset, centre outputs.

    ``losses`` (inherited) is the ignore-aware cross-entropy of the binary logits; the offset
    and centre losses are the meta-architecture's (``NucleiWeakNam2023Net``).
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        residual_units=1,
        attention_units=True,
        offset=True,
        center_prior=0.1,
        **kwargs,
    ):
        """
        Parameters
        ----------
        input_shape, **kwargs
            As :class:`NucleiWeakUNetHead`; ``num_classes`` must be 2.
        residual_units : int
            RUs per module (>= 0).
        attention_units : bool
            Use the two AUs (only with ``offset``).
        offset : bool
            Predict offsets (False: the "offset x" ablation, offsets are zeros).
        center_prior : float
            Initial centre probability (bias of the centre predictor; CenterNet: 0.1).
        """
        super().__init__(input_shape, **kwargs)
        if self.num_classes != 2:
            raise ValueError(f"NucleiWeakNam2023Head needs num_classes = 2, got {self.num_classes}")
        channels = self.predictor.in_channels
        self.binary_predictor = self.predictor
        self.predictor = nn.Identity()  # super().layers now returns the decoder features

        def units():
            return nn.Sequential(*[ResidualUnit(channels) for _ in range(int(residual_units))])

        self.binary_units, self.offset_units, self.center_units = units(), units(), units()
        self.with_offset = bool(offset)
        self.attention_units = bool(attention_units) and self.with_offset
        if self.attention_units:
            self.offset_attention = AttentionUnit(1, channels)
            self.binary_attention = AttentionUnit(2, channels)
        self.offset_predictor = None
        if self.with_offset:
            self.offset_predictor = Conv2d(channels, 2, kernel_size=1)
            nn.init.normal_(self.offset_predictor.weight, std=0.01)
            nn.init.zeros_(self.offset_predictor.bias)
        self.center_predictor = Conv2d(channels, 1, kernel_size=1)
        nn.init.normal_(self.center_predictor.weight, std=0.01)
        nn.init.constant_(
            self.center_predictor.bias, -math.log((1.0 - center_prior) / center_prior)
        )

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        head = cfg.NUCLEIWEAK.NAM2023.HEAD
        ret.update(
            residual_units=head.RESIDUAL_UNITS,
            attention_units=head.ATTENTION_UNITS,
            offset=head.OFFSET,
        )
        return ret

    def layers(self, features):
        """``(N, 5, H, W)``: binary logits (2), offsets (2), centre logit (1); see :func:`split_outputs`."""
        f = super().layers(features)
        f_b = self.binary_units(f)
        f_o = self.offset_units(f_b)
        center = self.center_predictor(self.center_units(f_o))
        if not self.with_offset:
            offset = center.new_zeros(center.shape[0], 2, *center.shape[2:])
            return torch.cat([self.binary_predictor(f_b), offset, center], dim=1)
        if self.attention_units:
            f_o = self.offset_attention(f_o, torch.sigmoid(center))
        offset = self.offset_predictor(f_o)
        if self.attention_units:
            f_b = self.binary_attention(f_b, offset)
        return torch.cat([self.binary_predictor(f_b), offset, center], dim=1)

    def forward(self, features, targets=None):
        """``(outputs, {})``: the losses need the meta-architecture's targets."""
        return self.layers(features), {}
