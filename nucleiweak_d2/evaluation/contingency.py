"""One sparse contingency table of two instance label maps, and the matchings built on it.

Every segmentation metric of :mod:`nucleiweak_d2.evaluation.metrics` is computed from the
:class:`ContingencyTable` of a (ground truth, prediction) pair: the pixel count of every
(gt id, pred id) pair that overlaps, counted once over the flattened pair with ``np.bincount``
(no per-object loop over the image). Numpy and scipy only.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "ContingencyTable",
    "check_label_map",
    "contingency_table",
    "best_match",
    "max_weight_matching",
]

# Largest number of (gt, pred) cells counted with a dense ``np.bincount``; beyond it the pair
# codes are counted with ``np.unique`` (slower, constant memory in the number of ids).
_MAX_DENSE_CELLS = 1 << 22


def check_label_map(label, name="label"):
    """Return ``label`` as a 2-D array of non-negative integer ids, or raise a ``ValueError``.

    Parameters
    ----------
    label : array_like
        Instance label map ``(H, W)``: 0 is background, every other value one object. Ids may
        be arbitrary and non-contiguous.
    name : str
        How the map is named in error messages (a file name, or "gt" / "pred").

    Returns
    -------
    numpy.ndarray
        The map, not copied.
    """
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D label map (H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: the label map is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer label map, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise ValueError(f"{name}: label ids must be >= 0, found {arr.min()}")
    return arr


def _dense_index(flat):
    """Map the ids of a flat label array to 0 (background), 1..n.

    Returns ``(ids, index, area)``: the sorted foreground ids ``(n,)``, the array of dense
    indices (same shape as ``flat``) and the pixel count of each id ``(n,)``.
    """
    top = int(flat.max())
    if top <= max(4 * flat.size, 1 << 16):
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=top + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return ids, lut[flat], counts[ids].astype(np.int64)
    ids, index, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if ids[0] != 0:  # no background: shift so that index 0 stays free
        return ids, index.astype(np.int64) + 1, counts.astype(np.int64)
    return ids[1:], index.astype(np.int64), counts[1:].astype(np.int64)


class ContingencyTable:
    """Overlaps between the objects of a ground-truth map and those of a predicted map.

    Objects are indexed ``0..n-1`` (ground truth) and ``0..m-1`` (prediction) in ascending
    order of their original ids.

    Attributes
    ----------
    gt_ids, pred_ids : numpy.ndarray
        Original ids ``(n,)`` and ``(m,)``, ascending.
    gt_area, pred_area : numpy.ndarray
        Pixel count of each object, int64.
    rows, cols, inter : numpy.ndarray
        Sparse table: object ``rows[k]`` of the ground truth and ``cols[k]`` of the prediction
        share ``inter[k] > 0`` pixels. Sorted by ``(rows, cols)``.
    n_pixels : int
        Number of pixels of the image.
    gt_index, pred_index : numpy.ndarray
        The two maps relabelled ``0`` (background) and ``1..n`` / ``1..m`` (for per-object
        geometry such as the Hausdorff distance).
    """

    def __init__(
        self, gt_ids, pred_ids, gt_area, pred_area, rows, cols, inter, gt_index, pred_index
    ):
        self.gt_ids, self.pred_ids = gt_ids, pred_ids
        self.gt_area, self.pred_area = gt_area, pred_area
        self.rows, self.cols, self.inter = rows, cols, inter
        self.gt_index, self.pred_index = gt_index, pred_index
        self.n_pixels = int(gt_index.size)

    @property
    def n_gt(self):
        """Number of ground-truth objects."""
        return int(self.gt_ids.size)

    @property
    def n_pred(self):
        """Number of predicted objects."""
        return int(self.pred_ids.size)

    @property
    def union(self):
        """Pixel count of the union of each overlapping pair ``(k,)``."""
        return self.gt_area[self.rows] + self.pred_area[self.cols] - self.inter

    @property
    def iou(self):
        """Intersection over union of each overlapping pair ``(k,)``, float64."""
        return self.inter / self.union


def contingency_table(gt, pred):
    """Count the pixels shared by every (ground-truth object, predicted object) pair.

    Parameters
    ----------
    gt, pred : array_like
        Integer instance label maps of the same shape ``(H, W)``; 0 is background.

    Returns
    -------
    ContingencyTable
    """
    gt = check_label_map(gt, "gt")
    pred = check_label_map(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred differ in size: {gt.shape} vs {pred.shape}")
    gt_ids, gi, gt_area = _dense_index(gt.ravel())
    pred_ids, pj, pred_area = _dense_index(pred.ravel())
    n, m = gt_ids.size, pred_ids.size
    code = gi * (m + 1) + pj
    if (n + 1) * (m + 1) <= _MAX_DENSE_CELLS:
        counts = np.bincount(code, minlength=(n + 1) * (m + 1))
        cells = np.flatnonzero(counts)
        counts = counts[cells]
    else:
        cells, counts = np.unique(code, return_counts=True)
    rows, cols = np.divmod(cells, m + 1)
    fg = (rows > 0) & (cols > 0)
    return ContingencyTable(
        gt_ids,
        pred_ids,
        gt_area,
        pred_area,
        rows[fg] - 1,
        cols[fg] - 1,
        counts[fg].astype(np.int64),
        gi.reshape(gt.shape),
        pj.reshape(pred.shape),
    )


def best_match(rows, cols, values, n):
    """For every row, the entry of largest value (ties: the smallest column).

    Parameters
    ----------
    rows, cols : numpy.ndarray
        Sparse entries ``(k,)``.
    values : numpy.ndarray
        Value of each entry ``(k,)``.
    n : int
        Number of rows.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` index into the entries (``-1`` for a row without entries).
    """
    best = np.full(n, -1, dtype=np.int64)
    if len(rows) == 0:
        return best
    order = np.lexsort((cols, -np.asarray(values, dtype=np.float64), rows))
    first = np.ones(order.size, dtype=bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    best[rows[order][first]] = order[first]
    return best


def max_weight_matching(rows, cols, weights, n, m):
    """One-to-one matching of rows to columns that maximises the summed weight.

    Only the given entries (all with ``weights > 0``) can be matched. The bipartite graph is
    split into connected components; a component of one entry is matched directly and the
    others are solved exactly with the Hungarian algorithm (``linear_sum_assignment``) on
    their small dense block.

    Parameters
    ----------
    rows, cols : numpy.ndarray
        Candidate pairs ``(k,)``, row in ``0..n-1`` and column in ``0..m-1``.
    weights : numpy.ndarray
        Positive weight of each pair ``(k,)``.
    n, m : int
        Number of rows and columns.

    Returns
    -------
    numpy.ndarray
        Indices into the entries of the matched pairs, ascending.
    """
    k = len(rows)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(k), (rows, cols + n)), shape=(n + m, n + m))
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[rows]
    sizes = np.bincount(edge_comp)
    single = sizes[edge_comp] == 1
    chosen = [np.flatnonzero(single)]
    multi = np.flatnonzero(~single)
    if multi.size:
        multi = multi[np.argsort(edge_comp[multi], kind="stable")]
        bounds = np.flatnonzero(np.diff(edge_comp[multi])) + 1
        for group in np.split(multi, bounds):
            r_ids, r = np.unique(rows[group], return_inverse=True)
            c_ids, c = np.unique(cols[group], return_inverse=True)
            block = np.zeros((r_ids.size, c_ids.size))
            edge_of = np.full((r_ids.size, c_ids.size), -1, dtype=np.int64)
            block[r, c] = weights[group]
            edge_of[r, c] = group
            ri, ci = linear_sum_assignment(block, maximize=True)
            picked = edge_of[ri, ci]
            chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))
