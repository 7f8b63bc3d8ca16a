"""Dynamic CAM selection (DoNuSeg Sec. 2.2): similarity rate alpha (Eq. 4) and the choice of
the pseudo-label P. Pure torch, no config.

Label encoding (binarised CAMs ``C``, initial label ``M``, pseudo-label ``P``): 0 background,
1 nucleus, 2 ignored.

Choices the paper leaves open:

- Eq. 4 sums ``M_i C_i + (1 - M_i)(1 - C_i)`` over the non-ignored pixels of M, without saying
  what an *ignored* ``C_i`` contributes. Here it contributes 0 (``C_i`` and its complement are
  read as the indicators ``[C_i = 1]`` and ``[C_i = 0]``), so a CAM that is undecided where M
  is certain scores lower; the denominator stays ``|Omega_M|`` as written.
- Selection is per image (each image takes its own best block), since CAM quality varies with
  the image content; ties go to the first block in the given order (the shallowest).
"""

import torch

from .cam import IGNORE

__all__ = ["similarity_rate", "select_cam"]


def similarity_rate(binary_cams, initial_label):
    """alpha of Eq. 4 for every image and CAM.

    Parameters
    ----------
    binary_cams : torch.Tensor
        ``(N, K, H, W)`` uint8 binarised CAMs (0, 1, 2 = ignored).
    initial_label : torch.Tensor
        ``(N, H, W)`` uint8 initial label M (0, 1, 2 = ignored).

    Returns
    -------
    torch.Tensor
        ``(N, K)`` float in [0, 1]; 0 for an image without non-ignored pixel in M.
    """
    m = initial_label[:, None]
    agree = ((m == 1) & (binary_cams == 1)) | ((m == 0) & (binary_cams == 0))
    n_valid = (initial_label != IGNORE).flatten(1).sum(dim=1).clamp(min=1)
    return agree.flatten(2).sum(dim=2).float() / n_valid[:, None].float()


def select_cam(binary_cams, alpha):
    """The binarised CAM with the largest alpha of each image (the pseudo-label P).

    Parameters
    ----------
    binary_cams : torch.Tensor
        ``(N, K, H, W)``.
    alpha : torch.Tensor
        ``(N, K)``, from :func:`similarity_rate`.

    Returns
    -------
    pseudo_label : torch.Tensor
        ``(N, H, W)``, the selected maps.
    alpha_p : torch.Tensor
        ``(N,)`` their alpha (the weight of Eq. 5 and 6).
    index : torch.Tensor
        ``(N,)`` int64 index of the selected CAM (first on ties).
    """
    alpha_p, index = alpha.max(dim=1)  # first maximum on ties
    pseudo_label = binary_cams[torch.arange(len(index), device=index.device), index]
    return pseudo_label, alpha_p, index
