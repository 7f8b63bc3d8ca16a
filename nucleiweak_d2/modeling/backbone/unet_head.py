"""UNet decoder registered as a Detectron2 semantic-segmentation head (stride-1 logits)."""

from typing import Dict, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

__all__ = ["NucleiWeakUNetHead", "ignore_aware_cross_entropy"]


def ignore_aware_cross_entropy(logits, target, ignore_value):
    """Cross-entropy averaged over the pixels whose label is not ``ignore_value``.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)``.
    target : torch.Tensor
        ``(N, H, W)`` long, values in ``[0, C)`` or ``ignore_value``.
    ignore_value : int

    Returns
    -------
    torch.Tensor
        Scalar; 0 (still attached to the graph) when every pixel is ignored, where
        ``F.cross_entropy(reduction="mean")`` would return NaN.
    """
    valid = target != ignore_value
    loss = F.cross_entropy(
        logits.float(), target.long(), reduction="none", ignore_index=ignore_value
    )
    return loss.sum() / valid.sum().clamp(min=1)


class _UpBlock(nn.Module):
    """Upsample x2 (transposed conv), concatenate the skip, then two conv-norm-ReLU, dropout."""

    def __init__(self, in_channels, skip_channels, out_channels, scale, norm, dropout):
        super().__init__()
        if scale == 1:
            self.up = Conv2d(in_channels, out_channels, kernel_size=1)
        else:
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=scale, stride=scale)
        convs = []
        for k in range(2):
            conv = Conv2d(
                out_channels + skip_channels if k == 0 else out_channels,
                out_channels,
                kernel_size=3,
                padding=1,
                bias=not norm,
                norm=get_norm(norm, out_channels),
                activation=F.relu,
            )
            weight_init.c2_msra_fill(conv)
            convs.append(conv)
        self.convs = nn.Sequential(*convs)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x, skip):
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:  # only for inputs not padded to size_divisibility
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.dropout(self.convs(torch.cat([x, skip], dim=1)))


@SEM_SEG_HEADS_REGISTRY.register()
class NucleiWeakUNetHead(nn.Module):
    """UNet decoder over ResNet features, predicting stride-1 logits.

    Follows the ResUNet of Qu et al.: from the deepest feature, each block upsamples by a
    transposed convolution, concatenates the next shallower skip and applies two 3x3 convs,
    with dropout; a last transposed conv brings the stride-2 map to stride 1, followed by a
    3x3 conv and a 1x1 predictor. Deviations: conv -> norm -> ReLU (Detectron2 ``Conv2d``
    order) instead of conv -> ReLU -> BN, and skips are never reflect-padded because the
    encoder pads inputs to its ``size_divisibility``.

    It has the interface of Detectron2's ``SemSegFPNHead`` (``ignore_value``, ``layers``,
    ``losses``, ``forward(features, targets)``), so ``SemanticSegmentor`` drives it. It is
    not a subclass of ``SemSegFPNHead``, whose constructor builds FPN scale heads.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        decoder_channels: Sequence[int],
        norm: str = "BN",
        dropout: float = 0.1,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        target_weights: Sequence[float] = (1.0,),
    ):
        """
        Parameters
        ----------
        input_shape : dict[str, ShapeSpec]
            Encoder features to use (e.g. ``stem, res2 .. res5``), any order.
        num_classes : int
            Output channels (2 for nucleus/background softmax, 1 for a sigmoid map).
        decoder_channels : sequence of int
            Channels of each decoder level, deepest skip first, then the stride-1 level;
            ``len(input_shape)`` entries.
        norm : str
            Norm of the decoder convs (``""`` for none).
        dropout : float
            ``Dropout2d`` probability after every decoder block.
        ignore_value : int
            Target value excluded from the loss (also the padding value of targets).
        loss_weight : float
            Multiplies every loss term.
        target_weights : sequence of float
            Weight of each target map when targets are ``(N, K, H, W)``.
        """
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        if not shapes:
            raise ValueError("NucleiWeakUNetHead(input_shape=) cannot be empty")
        if len(decoder_channels) != len(shapes):
            raise ValueError(
                f"decoder_channels needs {len(shapes)} entries (one per feature "
                f"{[k for k, _ in shapes]}), got {list(decoder_channels)}"
            )
        self.in_features = [k for k, _ in shapes]
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.target_weights = [float(w) for w in target_weights]

        deep = shapes[-1][1]
        in_ch, stride = deep.channels, deep.stride
        blocks = []
        for (name, spec), out_ch in zip(reversed(shapes[:-1]), decoder_channels):
            if stride % spec.stride:
                raise ValueError(f"stride {stride} is not a multiple of {name}'s {spec.stride}")
            blocks.append(
                _UpBlock(in_ch, spec.channels, out_ch, stride // spec.stride, norm, dropout)
            )
            in_ch, stride = out_ch, spec.stride
        self.blocks = nn.ModuleList(blocks)
        last = decoder_channels[-1]
        self.final_up = (
            nn.ConvTranspose2d(in_ch, last, kernel_size=stride, stride=stride)
            if stride > 1
            else Conv2d(in_ch, last, kernel_size=1)
        )
        # No norm / ReLU at stride 1: a BN-ReLU there can switch off every unit on the (dark,
        # minority) nucleus pixels, leaving their logits equal to the bias; the ReLU before the
        # predictor then acts on un-normalised features, which keeps it alive.
        self.final_conv = Conv2d(last, last, kernel_size=3, padding=1, activation=F.relu)
        weight_init.c2_msra_fill(self.final_conv)
        self.predictor = Conv2d(last, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        names = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in names},
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "decoder_channels": list(cfg.NUCLEIWEAK.UNET.DECODER_CHANNELS),
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
            "dropout": cfg.NUCLEIWEAK.UNET.DROPOUT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "target_weights": list(cfg.NUCLEIWEAK.UNET.TARGET_WEIGHTS),
        }

    def layers(self, features):
        """Decode ``features`` (dict name -> tensor) into stride-1 logits ``(N, C, H, W)``."""
        x = features[self.in_features[-1]]
        for block, name in zip(self.blocks, reversed(self.in_features[:-1])):
            x = block(x, features[name])
        return self.predictor(self.final_conv(self.final_up(x)))

    def forward(self, features, targets=None):
        """Training: ``(None, losses)``; inference: ``(logits, {})``, logits at stride 1."""
        x = self.layers(features)
        if self.training:
            return None, self.losses(x, targets)
        return x, {}

    def losses(self, predictions, targets):
        """Ignore-aware cross-entropy, a weighted sum over target maps.

        Parameters
        ----------
        predictions : torch.Tensor
            ``(N, C, H, W)`` logits.
        targets : torch.Tensor
            ``(N, H, W)`` or ``(N, K, H, W)`` long; K must equal ``len(target_weights)``.

        Returns
        -------
        dict[str, torch.Tensor]
            ``{"loss_sem_seg": ...}`` for one map, else ``{"loss_sem_seg_t<k>": ...}`` per map
            (already weighted; Detectron2 sums the dict).
        """
        if targets.dim() == 3:
            return {
                "loss_sem_seg": self.loss_weight
                * ignore_aware_cross_entropy(predictions, targets, self.ignore_value)
            }
        if targets.shape[1] != len(self.target_weights):
            raise ValueError(
                f"{targets.shape[1]} target maps but {len(self.target_weights)} "
                f"target weights {self.target_weights}"
            )
        return {
            f"loss_sem_seg_t{k}": self.loss_weight
            * w
            * ignore_aware_cross_entropy(predictions, targets[:, k], self.ignore_value)
            for k, w in enumerate(self.target_weights)
        }
