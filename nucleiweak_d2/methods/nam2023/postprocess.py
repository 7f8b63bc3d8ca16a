"""PROnet's inference: centres from the heatmap, pixels to centres by their offsets (numpy).

Eq. (1): ``I(x, y) = argmin_i ||c_i - ((x, y) + O^(x, y))||^2`` and ``S^ = B^ x I``. Choices the
paper leaves open, ours:

- centres are the local maxima (3 x 3) of the heatmap above the threshold (0.2), as in
  CenterNet; a plateau of equal maxima gives one centre (its centroid);
- after the assignment, a label whose pixels form several 8-connected pieces is split into
  one instance per piece, and pieces smaller than ``min_area`` are dropped. Eq. (1) assigns
  every foreground pixel to some centre however far, so a foreground blob without a peak would
  otherwise join a distant nucleus;
- with no centre at all (early in training), the instances are the connected components of
  the foreground (the shared UNet post-processing without hole filling).
"""

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage import measure, segmentation

from ...modeling.meta_arch.postprocess import instances_from_foreground

__all__ = ["heatmap_peaks", "instances_from_centres"]


def heatmap_peaks(heat, threshold=0.2, kernel=3):
    """Centres of a heatmap: local maxima above ``threshold``.

    Parameters
    ----------
    heat : numpy.ndarray
        ``(H, W)`` float heatmap in [0, 1].
    threshold : float
        Peaks must be strictly above it.
    kernel : int
        Side of the maximum filter.

    Returns
    -------
    numpy.ndarray
        float64 ``(K, 2)`` (x, y) in pixel-index coordinates, in raster order of the peaks.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got {heat.shape}")
    peak = (heat == ndi.maximum_filter(heat, size=kernel, mode="constant", cval=-np.inf)) & (
        heat > threshold
    )
    label, n = ndi.label(peak, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2))
    yx = np.asarray(ndi.center_of_mass(peak, label, np.arange(1, n + 1)), dtype=np.float64)
    return np.ascontiguousarray(yx[:, ::-1])  # a copy: torch refuses negative strides


def instances_from_centres(fg, offsets, centres, min_area=0):
    """Instance map of Eq. (1): every foreground pixel joins the centre nearest to its vote.

    Parameters
    ----------
    fg : numpy.ndarray
        ``(H, W)`` bool foreground (B^).
    offsets : numpy.ndarray
        ``(2, H, W)`` offsets ``(dx, dy)``.
    centres : numpy.ndarray
        ``(K, 2)`` (x, y) centres.
    min_area : int
        Instances (pieces) smaller than this are removed.

    Returns
    -------
    numpy.ndarray
        int32 ``(H, W)`` instance map, 0 = background, ids 1..N.
    """
    fg = np.asarray(fg, dtype=bool)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    if len(centres) == 0:
        return instances_from_foreground(fg, min_area=min_area, fill_holes=False)
    ys, xs = np.nonzero(fg)
    label = np.zeros(fg.shape, dtype=np.int64)
    if len(ys):
        votes = np.stack([xs + offsets[0][ys, xs], ys + offsets[1][ys, xs]], axis=1)
        label[ys, xs] = cKDTree(centres).query(votes)[1] + 1
    pieces = measure.label(label, background=0, connectivity=2)
    if min_area > 0 and pieces.max():
        small = np.bincount(pieces.ravel()) < int(min_area)
        small[0] = False
        pieces[small[pieces]] = 0
    pieces, _, _ = segmentation.relabel_sequential(pieces)
    return pieces.astype(np.int32)
