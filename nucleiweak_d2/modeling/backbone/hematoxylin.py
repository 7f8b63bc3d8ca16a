"""Hematoxylin optical density by colour deconvolution, in torch (an optional input channel).

Ruifrok & Johnston (2001) colour deconvolution with the standard H&E-DAB stain matrix of
``skimage.color.rgb2hed``: with ``I`` the RGB image in (0, 1] and the optical density
``OD = -log(max(I, 1e-6))``, the stain amounts are ``OD @ inv(M)`` for the stain matrix ``M``
(rows: the RGB optical densities of hematoxylin, eosin and DAB). :func:`hematoxylin_density`
returns the hematoxylin column divided by ``-log(1e-6)`` and clipped at 0, i.e. exactly
``skimage.color.rgb2hed(I)[..., 0]``. :func:`hematoxylin_channel` standardises it with fixed
constants (``(h - H_MEAN) / H_STD``, both 0.04: about the mean and standard deviation of this
value over MoNuSeg's H&E tiles), which is what the model appends to its normalised input when
``NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT`` is on.
"""

import math

import numpy as np
import torch

__all__ = ["H_MEAN", "H_STD", "hematoxylin_channel", "hematoxylin_density"]

# Standardisation of the skimage-scaled hematoxylin value (fixed, not learnt).
H_MEAN = 0.04
H_STD = 0.04

_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
# Hematoxylin column of the inverse stain matrix (weights of the R, G, B optical densities).
_H_FROM_RGB = tuple(float(v) for v in np.linalg.inv(_RGB_FROM_HED)[:, 0])
_LOG_ADJUST = -math.log(1e-6)


def hematoxylin_density(rgb01):
    """Hematoxylin amount of an RGB image in [0, 1], as ``skimage.color.rgb2hed``'s H channel.

    Parameters
    ----------
    rgb01 : torch.Tensor
        ``(..., 3, H, W)`` float, RGB order, values in [0, 1].

    Returns
    -------
    torch.Tensor
        ``(..., 1, H, W)``: ``max(0, sum_c -log(max(I_c, 1e-6)) w_c) / -log(1e-6)`` with ``w``
        the hematoxylin column of ``inv(rgb_from_hed)``.
    """
    if rgb01.dim() < 3 or rgb01.shape[-3] != 3:
        raise ValueError(f"hematoxylin_density takes (..., 3, H, W), got {tuple(rgb01.shape)}")
    od = -torch.log(rgb01.clamp_min(1e-6))
    weights = torch.tensor(_H_FROM_RGB, dtype=od.dtype, device=od.device).view(3, 1, 1)
    return ((od * weights).sum(dim=-3, keepdim=True) / _LOG_ADJUST).clamp_min(0)


def hematoxylin_channel(image01, input_format="RGB"):
    """Standardised hematoxylin channel ``(hematoxylin_density - H_MEAN) / H_STD``.

    Parameters
    ----------
    image01 : torch.Tensor
        ``(..., 3, H, W)`` float in [0, 1], channels in ``input_format`` order.
    input_format : str
        ``"RGB"`` or ``"BGR"``.

    Returns
    -------
    torch.Tensor
        ``(..., 1, H, W)``.
    """
    if input_format == "BGR":
        image01 = image01.flip(-3)
    elif input_format != "RGB":
        raise ValueError(
            f"the hematoxylin channel needs INPUT.FORMAT RGB or BGR, got {input_format!r}"
        )
    return (hematoxylin_density(image01) - H_MEAN) / H_STD
