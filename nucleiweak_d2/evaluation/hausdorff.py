"""Object-level Hausdorff distance (Sirinukunwattana et al. 2015; GlaS, MedIA 2017).

``H_obj = 0.5 * [sum_i gamma_i H(G_i, S*(G_i)) + sum_j eta_j H(G*(S_j), S_j)]`` with the
same area weights and maximum-overlap correspondence as the object Dice. As in the official
GlaS code, an object that overlaps nothing is compared with the object of the other map at the
smallest Hausdorff distance. ``H`` is the symmetric Hausdorff distance between the two pixel
sets (Euclidean, in pixels).

All work stays inside bounding boxes. The distance of an overlapping pair comes from two exact
Euclidean distance transforms of the pair's union box. The nearest object of a
non-overlapping one is found exactly: candidates are visited in increasing order of a lower
bound on ``H`` (the largest difference between corresponding bounding-box sides, and the
distance from each extreme pixel of the object to the candidate's box) and the search stops
once the bound reaches the best distance found; each candidate's exact distance is computed
with KD-trees of boundary pixels (cost independent of how far apart the two objects are).
"""

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .contingency import best_match, contingency_table

__all__ = ["object_hausdorff", "object_hausdorff_from_table", "hausdorff_distance"]


def hausdorff_distance(a, b):
    """Symmetric Hausdorff distance between the ``True`` pixels of two boolean masks.

    Parameters
    ----------
    a, b : numpy.ndarray
        Boolean masks of the same shape, both non-empty.

    Returns
    -------
    float
        ``max(max_{p in a} d(p, b), max_{q in b} d(q, a))`` in pixels.
    """
    if a.shape != b.shape:
        raise ValueError(f"masks differ in size: {a.shape} vs {b.shape}")
    if not a.any() or not b.any():
        raise ValueError("hausdorff_distance needs two non-empty masks")
    to_b = ndimage.distance_transform_edt(~b)
    to_a = ndimage.distance_transform_edt(~a)
    return float(max(to_b[a].max(), to_a[b].max()))


def _boxes(index, n):
    """Bounding boxes ``(n, 4)`` = (row0, col0, row1, col1), ends exclusive, of ids 1..n."""
    boxes = np.zeros((n, 4), dtype=np.int64)
    for k, sl in enumerate(ndimage.find_objects(index, max_label=n)):
        boxes[k] = sl[0].start, sl[1].start, sl[0].stop, sl[1].stop
    return boxes


class _Objects:
    """Per-object geometry of one relabelled map (ids 1..n), computed lazily in bounding boxes."""

    _FOUR = ndimage.generate_binary_structure(2, 1)

    def __init__(self, index, n):
        self.index = index
        self.boxes = _boxes(index, n)
        self._pixels, self._trees = {}, {}

    def mask(self, k, r0, c0, r1, c1):
        return self.index[r0:r1, c0:c1] == k + 1

    def pixels(self, k):
        """``(N, 2)`` (row, col) of the pixels of object k."""
        if k not in self._pixels:
            r0, c0, r1, c1 = self.boxes[k]
            self._pixels[k] = np.argwhere(self.mask(k, r0, c0, r1, c1)) + (r0, c0)
        return self._pixels[k]

    def boundary_tree(self, k):
        """KD-tree of the pixels of object k with a 4-neighbour outside it.

        The pixel of a set nearest to any pixel outside it is such a boundary pixel (a step
        towards the outside pixel along its larger offset is closer and would be in the set).
        """
        if k not in self._trees:
            r0, c0, r1, c1 = self.boxes[k]
            m = self.mask(k, r0, c0, r1, c1)
            edge = m & ~ndimage.binary_erosion(m, self._FOUR, border_value=0)
            self._trees[k] = cKDTree(np.argwhere(edge) + (r0, c0))
        return self._trees[k]

    def extremes(self, k):
        """Topmost, bottommost, leftmost and rightmost pixels of object k ``(4, 2)``."""
        p = self.pixels(k)
        return p[[p[:, 0].argmin(), p[:, 0].argmax(), p[:, 1].argmin(), p[:, 1].argmax()]]


def _disjoint_distance(a, ka, b, kb):
    """Hausdorff distance between object ka of ``a`` and object kb of ``b`` that share no pixel."""
    d_ab = b.boundary_tree(kb).query(a.pixels(ka))[0].max()
    d_ba = a.boundary_tree(ka).query(b.pixels(kb))[0].max()
    return float(max(d_ab, d_ba))


class _PairDistance:
    """Cached Hausdorff distance between ground-truth object i and predicted object j."""

    def __init__(self, t):
        self.gt = _Objects(t.gt_index, t.n_gt)
        self.pred = _Objects(t.pred_index, t.n_pred)
        self.cache = {}

    def __call__(self, i, j):
        """Distance of an overlapping pair: two distance transforms of the union box."""
        key = (int(i), int(j))
        if key not in self.cache:
            g, p = self.gt.boxes[i], self.pred.boxes[j]
            r0, c0 = min(g[0], p[0]), min(g[1], p[1])
            r1, c1 = max(g[2], p[2]), max(g[3], p[3])
            self.cache[key] = hausdorff_distance(
                self.gt.mask(i, r0, c0, r1, c1), self.pred.mask(j, r0, c0, r1, c1)
            )
        return self.cache[key]

    def nearest(self, k, from_gt):
        """Smallest Hausdorff distance from object k (overlapping nothing) to the other map.

        Candidates are visited in increasing order of a lower bound: the largest of the
        bounding-box side differences and of the distances from the extreme pixels of k to
        the candidate's box (each extreme pixel is at least that far from the candidate).
        """
        own, other = (self.gt, self.pred) if from_gt else (self.pred, self.gt)
        box = other.boxes
        bound = np.abs(box - own.boxes[k]).max(axis=1).astype(np.float64)
        for row, col in own.extremes(k):
            dy = np.maximum(np.maximum(box[:, 0] - row, row - (box[:, 2] - 1)), 0)
            dx = np.maximum(np.maximum(box[:, 1] - col, col - (box[:, 3] - 1)), 0)
            bound = np.maximum(bound, np.hypot(dy, dx))
        best = np.inf
        for c in np.argsort(bound, kind="stable"):
            if bound[c] >= best:
                break
            best = min(best, _disjoint_distance(own, k, other, c))
        return best


def object_hausdorff_from_table(t):
    """Object-level Hausdorff distance from a :class:`ContingencyTable`.

    Parameters
    ----------
    t : ContingencyTable

    Returns
    -------
    float
        0.0 when both maps are empty, ``inf`` when only one is.
    """
    n, m = t.n_gt, t.n_pred
    if n == 0 and m == 0:
        return 0.0
    if n == 0 or m == 0:
        return float("inf")
    dist = _PairDistance(t)
    best_g = best_match(t.rows, t.cols, t.inter, n)
    best_p = best_match(t.cols, t.rows, t.inter, m)
    h_gt = np.array(
        [dist(i, t.cols[e]) if e >= 0 else dist.nearest(i, True) for i, e in enumerate(best_g)]
    )
    h_pred = np.array(
        [dist(t.rows[e], j) if e >= 0 else dist.nearest(j, False) for j, e in enumerate(best_p)]
    )
    return float(
        0.5
        * (
            (t.gt_area * h_gt).sum() / t.gt_area.sum()
            + (t.pred_area * h_pred).sum() / t.pred_area.sum()
        )
    )


def object_hausdorff(gt, pred):
    """Object-level Hausdorff distance (Sirinukunwattana et al. 2015), in pixels.

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps ``(H, W)``.

    Returns
    -------
    float
        Lower is better; 0.0 when both maps are empty, ``inf`` when only one is.
    """
    return object_hausdorff_from_table(contingency_table(gt, pred))
