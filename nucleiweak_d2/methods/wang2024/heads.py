"""The three heads DoNuSeg adds to FCOS: localisation (for the CAMs), segmentation, projector.

Choices (the paper gives only the layer counts):

- :class:`LocalizationHead`: "three fully connected layers" applied at every location of the
  last encoder block (1x1 convolutions = the same FC layers on each feature vector), so the
  point-localisation output keeps its spatial layout: a map of the number of points per cell
  (:func:`~.targets.point_count_map`), trained with MSE. Its sum is the image score of the
  Grad-CAM; for a linear head that is Zhou's CAM (GAP + FC) up to a constant.
- :class:`SegmentationHead`: four 3x3 convolutions, the first three shared over the FPN levels
  like the FCOS head; their outputs are upsampled to the finest level and summed (the merge of
  Panoptic FPN's semantic branch and of the FPN decoder of segmentation_models_pytorch, which
  the authors' other code builds on), and the fourth predicts the logit, upsampled to the
  input size. Averaging per-level logits instead was tried first: the coarse levels, which
  cannot resolve a nucleus, pulled the finest level's logits down (no pixel above 0.5 after a
  short synthetic run).
- :class:`Projector`: four 3x3 convolutions and a three-layer MLP (1x1 convolutions), after
  SimCLR's projection head (the paper's ref. 1); its output is upsampled to the input size.
"""

import torch.nn.functional as F
from detectron2.layers import Conv2d, get_norm
from torch import nn

__all__ = ["LocalizationHead", "SegmentationHead", "Projector"]


def _conv_stack(in_channels, dims, norm, kernel_size=3):
    """``Conv(k) -> norm -> ReLU`` for each width in ``dims``."""
    layers = []
    for out_channels in dims:
        layers += [
            Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=kernel_size // 2,
                bias=not norm,
                norm=get_norm(norm, out_channels),
            ),
            nn.ReLU(),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers)


class LocalizationHead(nn.Module):
    """Three FC layers per location: ``C -> hidden -> hidden -> 1`` (ReLU between).

    Parameters
    ----------
    in_channels : int
    hidden_dim : int
    """

    def __init__(self, in_channels, hidden_dim=256):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, 1),
            nn.ReLU(),
            nn.Conv2d(hidden_dim, hidden_dim, 1),
            nn.ReLU(),
            nn.Conv2d(hidden_dim, 1, 1),
        )

    def forward(self, x):
        """``(N, C, h, w) -> (N, 1, h, w)`` predicted number of points per cell."""
        return self.layers(x)


class SegmentationHead(nn.Module):
    """``num_convs`` 3x3 convolutions shared over levels; the last one predicts the logit.

    Parameters
    ----------
    in_channels : int
        Channels of the FPN levels.
    conv_dim : int
        Channels of the hidden convolutions.
    num_convs : int
        Number of convolutions, >= 1.
    norm : str
        Normalisation of the hidden convolutions (Detectron2 name, "" for none).
    """

    def __init__(self, in_channels, conv_dim=256, num_convs=4, norm="GN"):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.hidden = _conv_stack(in_channels, [conv_dim] * (num_convs - 1), norm)
        self.predictor = nn.Conv2d(conv_dim if num_convs > 1 else in_channels, 1, 3, padding=1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    def forward(self, features, size):
        """Logits ``(N, H, W)`` at ``size``: the hidden convolutions run on every level, their
        outputs are upsampled (bilinear) to the first (finest) level and summed, the predictor
        convolution turns the sum into logits, upsampled (bilinear) to ``size``."""
        fine = features[0].shape[-2:]
        merged = sum(
            F.interpolate(self.hidden(x), size=fine, mode="bilinear", align_corners=False)
            for x in features
        )
        logits = self.predictor(merged)
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class Projector(nn.Module):
    """Projector g: four 3x3 convolutions then a three-layer MLP (1x1 convolutions).

    Parameters
    ----------
    in_channels : int
    conv_dim : int
        Channels of the convolutions.
    mlp_dim : int
        Width of the MLP's hidden layers.
    out_dim : int
        Dimension of the output features.
    norm : str
        Normalisation of the convolutions.
    """

    def __init__(self, in_channels, conv_dim=256, mlp_dim=256, out_dim=128, norm="GN"):
        super().__init__()
        self.convs = _conv_stack(in_channels, [conv_dim] * 4, norm)
        self.mlp = nn.Sequential(
            nn.Conv2d(conv_dim, mlp_dim, 1),
            nn.ReLU(),
            nn.Conv2d(mlp_dim, mlp_dim, 1),
            nn.ReLU(),
            nn.Conv2d(mlp_dim, out_dim, 1),
        )

    def forward(self, x, size):
        """``(N, C, h, w) -> (N, out_dim, H, W)`` upsampled (bilinear) to ``size``."""
        z = self.mlp(self.convs(x))
        return F.interpolate(z, size=tuple(size), mode="bilinear", align_corners=False)
