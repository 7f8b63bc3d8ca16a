"""Losses of PROnet's centre and offset modules (plain torch, no cfg).

The binary module uses the shared ignore-aware cross-entropy of ``NucleiWeakUNetHead`` on the
Voronoi and cluster labels (``L_B = L_V + L_K``, Eq. 2: a 2-class softmax cross-entropy equals
the binary cross-entropy of the paper).
"""

import torch
import torch.nn.functional as F

__all__ = ["center_focal_loss", "offset_l1_loss"]


def center_focal_loss(logits, target, valid=None, alpha=2.0, beta=4.0):
    """CornerNet focal loss of a centre heatmap, PROnet Eq. (3).

    ``L = -1/N_P sum_{C = 1} (1 - p)^alpha log p
          -1/N_P sum_{C < 1} (1 - C)^beta p^alpha log(1 - p)``
    with ``p = sigmoid(logits)`` and ``N_P`` the number of positive pixels (``C == 1``, one per
    point; at least 1, as CornerNet). ``log p`` and ``log(1 - p)`` are computed as log-sigmoids,
    so saturated logits stay finite.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, 1, H, W)`` heatmap logits.
    target : torch.Tensor
        Same shape, the Gaussian centre map in [0, 1] (exactly 1 at the points).
    valid : torch.Tensor, optional
        Same shape, bool; pixels outside it (padding) count neither as positives nor as
        negatives. Default: every pixel.
    alpha, beta : float
        Focal exponents (paper: 2, 4).

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    logits = logits.float()
    target = target.to(logits.dtype)
    if valid is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    pos = (target >= 1.0) & valid
    neg = valid & ~pos
    p = torch.sigmoid(logits)
    pos_term = (1.0 - p) ** alpha * F.logsigmoid(logits)
    neg_term = (1.0 - target) ** beta * p**alpha * F.logsigmoid(-logits)
    n_pos = pos.sum().clamp(min=1)
    return -(pos_term[pos].sum() + neg_term[neg].sum()) / n_pos


def offset_l1_loss(pred, target, weight):
    """L1 loss of the offset map, PROnet Eq. (4), averaged over the weighted pixels.

    ``L = sum_x w(x) (|dx - dx^| + |dy - dy^|) / |{x : w(x) > 0}|``: the L1 norm of the 2-vector
    per pixel, mean over the pixels that count (the paper divides by W x H, i.e. every pixel
    counts; ignored and padding pixels have weight 0 here).

    Parameters
    ----------
    pred, target : torch.Tensor
        ``(N, 2, H, W)`` offsets ``(dx, dy)`` in pixels.
    weight : torch.Tensor
        ``(N, 1, H, W)`` per-pixel weights; 0 = ignored.

    Returns
    -------
    torch.Tensor
        Scalar; 0 (attached to the graph) when every pixel is ignored.
    """
    if pred.shape != target.shape or pred.shape[1] != 2:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal (N, 2, H, W)"
        )
    if weight.shape != (pred.shape[0], 1, *pred.shape[2:]):
        raise ValueError(f"weight must be (N, 1, H, W), got {tuple(weight.shape)}")
    pred = pred.float()
    weight = weight.to(pred.dtype)
    err = (pred - target.to(pred.dtype)).abs().sum(dim=1, keepdim=True)
    return (weight * err).sum() / (weight > 0).sum().clamp(min=1)
