"""Dense targets of PROnet's offset and centre modules (numpy).

Shape-guided offsets
--------------------
The paper computes "the offset vector O(x, y) that indicates the displacement of a point (x, y)
to the centre of its corresponding nucleus ... of each nucleus segmented by B^" (Sec. 2.1). The
centre is therefore taken from the predicted binary mask, not from the clicked point: trained
towards the click, the offsets would vote for the (shifted) click and the E-step could never
move it. :func:`shape_guided_targets` defines the nucleus of point ``k`` as the connected
component (8-connectivity) of the predicted foreground inside ``k``'s Voronoi cell that
contains the point, or, when the point lies outside the mask (a shifted click), the component
nearest to it; its centre is that component's centroid. The other foreground pixels of the
cell (unlabelled nuclei, debris) are ignored rather than trained towards a wrong centre. These
rules are our reading: no PROnet code exists.

The nucleus map and the centres are stored per image on the full image; the mapper moves both
through the augmentation (map: nearest-neighbour, centres: ``apply_coords``) and only then
forms the vectors (:func:`offset_target`), so the targets stay exact under resizing, flips,
rotations and crops, including nuclei cut by the crop.

Centre map
----------
:func:`center_target` draws the paper's Gaussian of radius ``r`` around every point with the
shared :func:`~nucleiweak_d2.pseudo_labels.center_heatmap`, on a canvas padded by ``r`` so that
points just outside an augmented crop still contribute their tails.
"""

import numpy as np
from skimage import measure

from ...pseudo_labels import center_heatmap

__all__ = ["IGNORED", "shape_guided_targets", "offset_target", "center_target"]

#: Value of the nucleus map on foreground pixels that belong to no point's nucleus.
IGNORED = -1


def shape_guided_targets(fg, points, cells, min_area=0):
    """Nucleus of every point in a predicted mask, and its centre.

    Parameters
    ----------
    fg : numpy.ndarray
        ``(H, W)`` bool predicted foreground (B^).
    points : numpy.ndarray
        ``(N, 2)`` integer (x, y) points (may be empty).
    cells : numpy.ndarray
        ``(H, W)`` int Voronoi cells: index of the point of each pixel (-1: none).
    min_area : int
        Components smaller than this (pixels) are never a nucleus (they are ignored).

    Returns
    -------
    nuclei : numpy.ndarray
        int32 ``(H, W)``: 0 background, ``k + 1`` nucleus of point ``k``, :data:`IGNORED` other
        foreground.
    centres : numpy.ndarray
        float64 ``(N, 2)`` (x, y) centroid of each point's nucleus; NaN where its cell holds no
        foreground.
    """
    fg = np.asarray(fg, dtype=bool)
    cells = np.asarray(cells)
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    if fg.ndim != 2 or cells.shape != fg.shape:
        raise ValueError(f"fg {fg.shape} and cells {cells.shape} must be the same (H, W)")
    n = len(pts)
    centres = np.full((n, 2), np.nan)
    nuclei = np.where(fg, IGNORED, 0).astype(np.int32)
    if n == 0:
        return nuclei, centres
    # components of the foreground, cut along the cell borders
    comp = measure.label(np.where(fg & (cells >= 0), cells + 1, 0), connectivity=2)
    if comp.max() == 0:
        return nuclei, centres
    ys, xs = np.nonzero(comp)
    c = comp[ys, xs] - 1
    owner = cells[ys, xs]
    n_comp = int(comp.max())
    area = np.bincount(c, minlength=n_comp)
    d2 = (xs - pts[owner, 0]) ** 2 + (ys - pts[owner, 1]) ** 2
    comp_d2 = np.full(n_comp, np.inf)
    np.minimum.at(comp_d2, c, d2.astype(np.float64))
    comp_cell = np.zeros(n_comp, dtype=np.int64)
    comp_cell[c] = owner
    candidates = np.flatnonzero(area >= max(int(min_area), 1))
    # per cell, the candidate component nearest to the point (0 when it contains the point)
    order = candidates[np.lexsort((comp_d2[candidates], comp_cell[candidates]))]
    cell_of, first = np.unique(comp_cell[order], return_index=True)
    chosen = order[first]
    nucleus_of = np.zeros(n_comp, dtype=np.int64)
    nucleus_of[chosen] = cell_of + 1
    k = nucleus_of[c]
    nuclei[ys, xs] = np.where(k > 0, k, IGNORED)
    sel = k > 0
    count = np.bincount(k[sel] - 1, minlength=n)
    sx = np.bincount(k[sel] - 1, weights=xs[sel], minlength=n)
    sy = np.bincount(k[sel] - 1, weights=ys[sel], minlength=n)
    has = count > 0
    centres[has, 0] = sx[has] / count[has]
    centres[has, 1] = sy[has] / count[has]
    return nuclei, centres


def offset_target(nuclei, centres, background_weight=1.0):
    """Offset target and weight from a nucleus map and the centres (same coordinates).

    Parameters
    ----------
    nuclei : numpy.ndarray
        int ``(H, W)`` nucleus map of :func:`shape_guided_targets` (possibly augmented).
    centres : numpy.ndarray
        ``(N, 2)`` float (x, y) centres in pixel-index coordinates of ``nuclei``.
    background_weight : float
        Weight of background pixels (target 0).

    Returns
    -------
    target : numpy.ndarray
        float32 ``(2, H, W)``: ``(cx - x, cy - y)`` on nucleus pixels, 0 elsewhere.
    weight : numpy.ndarray
        float32 ``(1, H, W)``: 1 on nucleus pixels, ``background_weight`` on background, 0 on
        ignored foreground.
    """
    nuclei = np.asarray(nuclei)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    h, w = nuclei.shape
    target = np.zeros((2, h, w), dtype=np.float32)
    weight = np.zeros((1, h, w), dtype=np.float32)
    weight[0][nuclei == 0] = background_weight
    ys, xs = np.nonzero(nuclei > 0)
    k = nuclei[ys, xs] - 1
    if len(k) and (k.max() >= len(centres) or not np.isfinite(centres[k]).all()):
        raise ValueError("the nucleus map refers to a point without a centre")
    target[0, ys, xs] = centres[k, 0] - xs
    target[1, ys, xs] = centres[k, 1] - ys
    weight[0, ys, xs] = 1.0
    return target, weight


def center_target(points, shape, radius):
    """Centre map of (possibly out-of-image) points: the paper's Gaussian within ``radius``.

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` float (x, y) in pixel-index coordinates; each falls on pixel
        ``floor(x), floor(y)``. Points farther than ``radius`` outside the image are dropped.
    shape : tuple of int
        ``(H, W)``.
    radius : float
        Gaussian radius ``r``.

    Returns
    -------
    numpy.ndarray
        float32 ``(H, W)``, exactly 1 on the pixel of every point inside the image.
    """
    h, w = int(shape[0]), int(shape[1])
    pad = int(np.ceil(radius)) + 1
    pts = np.floor(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    pts = pts[np.isfinite(pts).all(axis=1)].astype(np.int64) + pad
    keep = (
        (pts[:, 0] >= 0) & (pts[:, 0] < w + 2 * pad) & (pts[:, 1] >= 0) & (pts[:, 1] < h + 2 * pad)
    )
    heat = center_heatmap(pts[keep], (h + 2 * pad, w + 2 * pad), radius=radius)
    return np.ascontiguousarray(heat[pad : pad + h, pad : pad + w])
