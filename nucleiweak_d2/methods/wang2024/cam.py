"""Class activation maps of encoder blocks (Grad-CAM) and their binarisation (DoNuSeg Eq. 3).

The paper computes "CAMs" of every encoder block from a localisation head and cites both CAM
(Zhou et al.) and Grad-CAM (Selvaraju et al.); the authors' other code uses
``pytorch_grad_cam.GradCAM``. Grad-CAM is used here because it is defined for any block, also
the intermediate ones the localisation head does not read directly, and it reduces to Zhou's
CAM (the classifier-weighted feature sum) when the head is linear:

    w_c = mean over locations of dS / dA_c,      CAM = ReLU(sum_c w_c A_c),

``S`` being the head's score of the image (here the predicted number of points, the sum of
the localisation map). Pure torch, no config.
"""

import torch
import torch.nn.functional as F

__all__ = ["IGNORE", "grad_cam", "normalize_cam", "binarize_cam"]

#: Label of ignored pixels in binarised CAMs, pseudo-labels and the initial label M.
IGNORE = 2


def grad_cam(scores, features):
    """Grad-CAM of each feature map for per-image scores.

    Parameters
    ----------
    scores : torch.Tensor
        ``(N,)`` score of each image; the graph from ``features`` to it is kept
        (``retain_graph``) so the losses can still be backpropagated.
    features : list of torch.Tensor
        ``(N, C_k, h_k, w_k)`` activations in the graph of ``scores``.

    Returns
    -------
    list of torch.Tensor
        ``(N, h_k, w_k)`` detached maps ``ReLU(sum_c w_c A_c)`` with ``w_c`` the spatial mean of
        ``d scores.sum() / d A_c``. Images interact only through batch statistics (BatchNorm in
        training mode), as in any batched Grad-CAM.
    """
    grads = torch.autograd.grad(scores.sum(), list(features), retain_graph=True)
    cams = []
    for act, grad in zip(features, grads):
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cams.append(F.relu((weights * act).sum(dim=1)).detach())
    return cams


def normalize_cam(cam, size, valid=None, eps=1e-7, window=0):
    """Upsample CAMs to ``size`` (bilinear) and scale each to [0, 1] by its min and max.

    ``window > 0`` (**deviation**, off by default): each pixel is divided instead by the CAM's
    maximum in the ``window`` × ``window`` square around it (``window`` odd), so every local
    peak reaches 1. The paper does not say how CAMs are scaled before θ; with the global
    min-max (``pytorch_grad_cam``'s ``scale_cam_image``) only the most activated nuclei of a
    crop with dozens pass θ 0.8 (measured on MoNuSeg, ``benchmarks/wang2024_cam_quality.py``).

    Parameters
    ----------
    cam : torch.Tensor
        ``(N, h, w)``.
    size : tuple of int
        ``(H, W)`` output size (the padded input).
    valid : torch.Tensor, optional
        ``(N, H, W)`` bool: the image pixels (not padding). Min and max are taken over them and
        the rest is set to 0. None: every pixel.
    eps : float
        Added to the range, as ``pytorch_grad_cam.utils.image.scale_cam_image`` (a constant
        map becomes 0).
    window : int
        0: global min-max; odd > 0: local maximum normalisation (see above).

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` float in [0, 1].
    """
    up = F.interpolate(
        cam[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False
    )[:, 0]
    if valid is None:
        valid = torch.ones_like(up, dtype=torch.bool)
    if window:
        if window < 0 or window % 2 == 0:
            raise ValueError(f"CAM normalisation window must be 0 or odd, got {window}")
        up = up.masked_fill(~valid, 0.0)  # ReLU output: 0 is the minimum
        local = F.max_pool2d(up[:, None], int(window), stride=1, padding=int(window) // 2)[:, 0]
        out = up / (local + eps)
        return torch.where(valid, out.clamp(0, 1), torch.zeros_like(out))
    lo = up.masked_fill(~valid, float("inf")).amin(dim=(1, 2))
    hi = up.masked_fill(~valid, float("-inf")).amax(dim=(1, 2))
    lo, hi = torch.nan_to_num(lo, posinf=0.0), torch.nan_to_num(hi, neginf=0.0)  # no valid pixel
    out = (up - lo[:, None, None]) / (hi - lo + eps)[:, None, None]
    return torch.where(valid, out.clamp(0, 1), torch.zeros_like(out))


def binarize_cam(cam, theta=0.8, valid=None):
    """Binary map ``C`` of Eq. 3: 1 where CAM > theta, 0 where CAM <= 1 - theta, else ignored.

    Parameters
    ----------
    cam : torch.Tensor
        CAMs in [0, 1], any shape.
    theta : float
        In [0.5, 1] (below 0.5 the two conditions overlap).
    valid : torch.Tensor, optional
        Bool, same shape: pixels outside it (padding) are ignored.

    Returns
    -------
    torch.Tensor
        uint8, same shape: 0 background, 1 nucleus, :data:`IGNORE` (2) ignored.
    """
    if not 0.5 <= theta <= 1.0:
        raise ValueError(f"theta must lie in [0.5, 1], got {theta}")
    out = torch.full(cam.shape, IGNORE, dtype=torch.uint8, device=cam.device)
    out[cam <= 1.0 - theta] = 0
    out[cam > theta] = 1
    if valid is not None:
        out[~valid] = IGNORE
    return out
