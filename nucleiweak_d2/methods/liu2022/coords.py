"""CoordConv coordinates of the IEN (Liu et al. append x and y channels to the image).

One definition serves training and inference: the coordinates of a pixel are those of its
centre in the *original full image*, scaled to [-1, 1] by the full image's width and height
(CoordConv's range, Liu R. et al. 2018):

    x = 2 (column + 0.5) / W - 1,    y = 2 (row + 0.5) / H - 1.

Training (``NucleiWeakLiu2022IENMapper``): the grid of the full image is built once and moved
by the same augmentation as the image (:meth:`Transform.apply_image`: exact for flips, rot90
and crops; bilinear for the random resize, so a resampled pixel gets the interpolated
coordinate of the place it was sampled from). Every pixel of a crop therefore carries where it
was in the tissue, whatever the flip or crop. Inference: the model builds the same grid for
the whole (unaugmented) image, so tiled and whole-image inference see the same channels.

Deviation from the authors' code: their CoordConv appends the coordinates of the *input
tensor* (of a 224 crop in training, of a 224 tile at inference), so the channels say where a
pixel lies in its crop or tile, not in the image; ours do not depend on the crop or on the
inference tiling.
"""

import numpy as np
import torch

__all__ = ["coordinate_grid"]


def coordinate_grid(height, width, *, as_tensor=False, device=None):
    """Normalised pixel-centre coordinates of a ``height x width`` image.

    Parameters
    ----------
    height, width : int
        Size of the full image.
    as_tensor : bool
        Return a ``(2, H, W)`` float32 tensor (on ``device``) instead of a ``(H, W, 2)``
        float32 array (the layout Detectron2 transforms expect).
    device : torch.device, optional

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Channel 0 is x (varies along columns), channel 1 is y (along rows), both in (-1, 1).
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {(height, width)}")
    if as_tensor:
        # float64 then float32, exactly as the numpy branch (the mapper's grid)
        xs = (
            (torch.arange(width, device=device, dtype=torch.float64) + 0.5) * (2.0 / width) - 1
        ).float()
        ys = (
            (torch.arange(height, device=device, dtype=torch.float64) + 0.5) * (2.0 / height) - 1
        ).float()
        return torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)])
    xs = ((np.arange(width, dtype=np.float64) + 0.5) * (2.0 / width) - 1).astype(np.float32)
    ys = ((np.arange(height, dtype=np.float64) + 0.5) * (2.0 / height) - 1).astype(np.float32)
    grid = np.empty((height, width, 2), dtype=np.float32)
    grid[..., 0] = xs[None, :]
    grid[..., 1] = ys[:, None]
    return grid
