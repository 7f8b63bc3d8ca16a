"""Dense targets made in the model from the points of each (augmented) training image: the
initial label M and the target of the localisation head.

Both are computed on the augmented crop from the points the mapper keeps in it
(``gt_points``, continuous coordinates, pixel centre at +0.5). An annotated point just outside
the crop is therefore unknown to M: up to ``d`` pixels at the crop border may be background
that the full image would ignore. Computing M in a mapper on the full image would avoid that,
at the cost of a mapper that repeats :class:`~nucleiweak_d2.data.mapper.NucleiDatasetMapper`;
the effect is limited to a ``d``-wide border band.
"""

import numpy as np
import torch

from ...pseudo_labels.centers import donuseg_initial_label
from .cam import IGNORE

__all__ = ["pixel_points", "initial_labels", "point_count_map"]


def pixel_points(points, image_size):
    """Integer pixel indices ``(x, y)`` of continuous points (``floor``), clipped to the image.

    Parameters
    ----------
    points : torch.Tensor or numpy.ndarray
        ``(N, 2)`` continuous (x, y), pixel ``k`` spanning ``[k, k + 1)``.
    image_size : tuple of int
        ``(H, W)``.

    Returns
    -------
    numpy.ndarray
        int64 ``(N, 2)``.
    """
    pts = points.detach().cpu().numpy() if torch.is_tensor(points) else np.asarray(points)
    pts = np.floor(pts.reshape(-1, 2)).astype(np.int64)
    pts[:, 0] = pts[:, 0].clip(0, image_size[1] - 1)
    pts[:, 1] = pts[:, 1].clip(0, image_size[0] - 1)
    return pts


def initial_labels(points_per_image, image_sizes, padded_size, r=4.0, d=20.0, device="cpu"):
    """Initial label M of every image, padded with "ignored" to the batch size.

    M is :func:`nucleiweak_d2.pseudo_labels.centers.donuseg_initial_label`: nucleus within
    ``r`` of a point, background beyond ``d``, ignored between. An image without any point is
    all background (every pixel is farther than ``d`` from every point, the rule read
    literally); the padding is ignored.

    Parameters
    ----------
    points_per_image : list of torch.Tensor
        ``(N_i, 2)`` continuous points of each image.
    image_sizes : list of tuple of int
        ``(H_i, W_i)`` of each image before padding.
    padded_size : tuple of int
        ``(H, W)`` of the batch.
    r, d : float
        Radii of M.
    device : str or torch.device

    Returns
    -------
    torch.Tensor
        uint8 ``(B, H, W)``: 0 background, 1 nucleus, 2 ignored.
    """
    out = np.full((len(image_sizes), *padded_size), IGNORE, dtype=np.uint8)
    for i, (pts, (h, w)) in enumerate(zip(points_per_image, image_sizes)):
        if len(pts):
            out[i, :h, :w] = donuseg_initial_label(pixel_points(pts, (h, w)), (h, w), r=r, d=d)
        else:
            out[i, :h, :w] = 0
    return torch.from_numpy(out).to(device)


def point_count_map(points_per_image, grid_size, stride, device="cpu"):
    """Target of the localisation head: the number of points in each cell of a feature grid.

    Parameters
    ----------
    points_per_image : list of torch.Tensor
        ``(N_i, 2)`` continuous points of each image.
    grid_size : tuple of int
        ``(h, w)`` of the feature map.
    stride : int
        Its stride: cell ``(i, j)`` covers the pixels ``[s j, s j + s) x [s i, s i + s)``.
    device : str or torch.device

    Returns
    -------
    torch.Tensor
        float32 ``(B, 1, h, w)``.
    """
    h, w = grid_size
    out = torch.zeros((len(points_per_image), h * w), dtype=torch.float32, device=device)
    for i, pts in enumerate(points_per_image):
        if len(pts):
            pts = pts.to(device)
            col = torch.div(pts[:, 0], stride, rounding_mode="floor").long().clamp(0, w - 1)
            row = torch.div(pts[:, 1], stride, rounding_mode="floor").long().clamp(0, h - 1)
            out[i].index_add_(0, row * w + col, torch.ones(len(pts), device=device))
    return out.view(-1, 1, h, w)
