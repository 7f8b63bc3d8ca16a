"""Instance pseudo-labels of the IEN (Liu et al.): SPN foreground split by the Voronoi cells.

Rule (paper, section 2.2, and the authors' code): the foreground is the SPN probability above
``T_fg`` (0.5), with objects smaller than 20 pixels removed and holes filled; within the
Voronoi cell of each point, the foreground component that contains the point is that point's
instance. Pixels with probability at most ``T_bg`` (0.3 on MoNuSeg, 0.2 on TNBC) form one
background cluster. Everything else is ignored: the uncertain band ``T_bg < p <= T_fg`` and
foreground components that hold no point.

Encoding (uint16/int32 map, so that zero padding of a crop means "ignore"):
``0`` ignore, ``1`` background (:data:`BACKGROUND_ID`), ``2 + k`` the instance of point ``k``.

Deviation: the authors' background is ``0 < p <= T_bg``; a softmax probability is never
exactly 0 except in padding, which our mappers do not create, so ``p <= T_bg`` is used.

Numpy/scipy/scikit-image only (the foreground cleaning is the shared UNet post-processing).
"""

import numpy as np
from skimage import measure

from ...modeling.meta_arch.postprocess import instances_from_foreground
from ...pseudo_labels.voronoi import voronoi_cells

__all__ = ["BACKGROUND_ID", "IGNORE_ID", "FIRST_INSTANCE_ID", "instance_pseudo_label"]

IGNORE_ID = 0
BACKGROUND_ID = 1
FIRST_INSTANCE_ID = 2


def instance_pseudo_label(prob, points, *, t_fg=0.5, t_bg=0.3, min_area=20, fill_holes=True):
    """Instance pseudo-label of one image from its SPN probability and its points.

    Parameters
    ----------
    prob : array_like
        ``(H, W)`` SPN foreground probability in [0, 1].
    points : array_like
        ``(N, 2)`` integer (x, y) points inside the image (``N = 0``: background only).
    t_fg : float
        Foreground threshold ``T_fg`` (``p > t_fg``).
    t_bg : float
        Background threshold ``T_bg`` (``p <= t_bg``); must not exceed ``t_fg``.
    min_area : int
        Foreground objects smaller than this (pixels) are removed before the split.
    fill_holes : bool
        Fill the holes of every foreground object before the split.

    Returns
    -------
    numpy.ndarray
        int32 ``(H, W)``: 0 ignore, 1 background, ``2 + k`` instance of point ``k`` (a point
        outside the foreground has no instance).

    Raises
    ------
    ValueError
        On a probability map that is not 2-D, thresholds out of order, or bad points.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2 or prob.size == 0:
        raise ValueError(f"prob must be a non-empty (H, W) map, got shape {prob.shape}")
    if not 0.0 <= t_bg <= t_fg <= 1.0:
        raise ValueError(f"need 0 <= t_bg <= t_fg <= 1, got t_bg={t_bg}, t_fg={t_fg}")
    pts = np.asarray(points).reshape(-1, 2)
    label = np.zeros(prob.shape, dtype=np.int32)
    label[prob <= t_bg] = BACKGROUND_ID
    fg = instances_from_foreground(prob > t_fg, min_area=min_area, fill_holes=fill_holes) > 0
    if len(pts) == 0 or not fg.any():
        return label
    cells = voronoi_cells(pts, prob.shape)
    # connected pieces of the foreground that stay within one cell (equal-valued regions)
    pieces = measure.label(np.where(fg, cells + 1, 0), background=0, connectivity=2)
    xs, ys = pts[:, 0].astype(np.int64), pts[:, 1].astype(np.int64)
    owner = np.zeros(int(pieces.max()) + 1, dtype=np.int32)
    hit = pieces[ys, xs]
    owner[hit[hit > 0]] = FIRST_INSTANCE_ID + np.nonzero(hit > 0)[0].astype(np.int32)
    owner[0] = 0
    inst = owner[pieces]
    label[fg] = IGNORE_ID  # foreground pieces without a point: unknown
    label[inst > 0] = inst[inst > 0]
    return label
