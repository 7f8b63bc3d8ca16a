"""Segmentation losses of DoNuSeg: BCE on the non-ignored pixels of a label (Eq. 1 against the
initial label M, Eq. 5 against the selected CAM P weighted by its alpha). Pure torch.

Batch reduction (the paper writes one image): the mean over each image's non-ignored pixels,
then the mean over the images of the batch; an image without non-ignored pixel adds 0.
"""

import torch.nn.functional as F

from .cam import IGNORE

__all__ = ["masked_bce", "dcs_loss"]


def masked_bce(logits, label, weights=None):
    """Eq. 1: ``-1/|Omega| sum_{i in Omega} [(1 - L_i) log(1 - Y_i) + L_i log Y_i]`` per image.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, H, W)`` logits of Y (``Y = sigmoid(logits)``).
    label : torch.Tensor
        ``(N, H, W)`` 0 background, 1 nucleus, 2 ignored.
    weights : torch.Tensor, optional
        ``(N,)`` per-image factor (alpha_P of Eq. 5); it multiplies the loss as a constant.

    Returns
    -------
    torch.Tensor
        Scalar: mean over the images of the per-image loss.
    """
    valid = label != IGNORE
    target = (label == 1).to(logits.dtype)
    pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid
    per_image = pixel.flatten(1).sum(dim=1) / valid.flatten(1).sum(dim=1).clamp(min=1)
    if weights is not None:
        per_image = per_image * weights.detach().to(per_image.dtype)
    return per_image.mean() if len(per_image) else logits.sum() * 0.0


def dcs_loss(logits, pseudo_label, alpha_p):
    """Eq. 5: the BCE of Eq. 1 against the selected CAM P, weighted by its alpha (no gradient
    through alpha, which is a measured agreement, not a prediction)."""
    return masked_bce(logits, pseudo_label, weights=alpha_p)
