"""PROnet's E-step: move each point to the centre its cell's offsets vote for (numpy).

Eq. (5) of the paper, ``p'_i = argmin_{x,y} sum_{q in v_i} B^(q) x O^(...)``, is garbled in
print; we read it as: every pixel ``q`` of the Voronoi cell ``v_i`` votes for the location
``q + O^(q)``, weighted by the predicted foreground ``B^(q)``, and ``p'_i`` is the location
minimising the weighted sum of distances to the votes, i.e. the weighted geometric median of
the votes (robust to the minority of pixels of a neighbouring nucleus or debris in the cell).
Votes come from the predicted foreground pixels only, weighted by the foreground probability.
The median is found by Weiszfeld's iteration for all cells at once, then rounded to a pixel.

The point is replaced when the move is shorter than ``delta`` (paper: 8 px) and the new point
stays in its own cell (so the cells, computed once from the clicked points, keep indexing the
right points); otherwise it stays. With exact offsets every vote falls on the true centre and
the median is that centre.
"""

import numpy as np

__all__ = ["weighted_geometric_median", "refine_points"]


def weighted_geometric_median(votes, weights, groups, n_groups, n_iter=100, eps=1e-3):
    """Weighted geometric median of the votes of every group (Weiszfeld's iteration).

    Parameters
    ----------
    votes : numpy.ndarray
        ``(M, 2)`` float positions.
    weights : numpy.ndarray
        ``(M,)`` non-negative weights.
    groups : numpy.ndarray
        ``(M,)`` int group of each vote, in ``[0, n_groups)``.
    n_groups : int
    n_iter : int
        Iterations (starting from the weighted mean).
    eps : float
        Distances are clamped below at ``eps`` (a vote on the estimate does not divide by 0).

    Returns
    -------
    numpy.ndarray
        float64 ``(n_groups, 2)``; NaN for groups without weight.
    """
    votes = np.asarray(votes, dtype=np.float64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups, dtype=np.int64).reshape(-1)

    def weighted_mean(wv):
        total = np.bincount(groups, weights=wv, minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.stack(
                [
                    np.bincount(groups, weights=wv * votes[:, j], minlength=n_groups) / total
                    for j in range(2)
                ],
                axis=1,
            )

    est = weighted_mean(weights)
    for _ in range(int(n_iter)):
        d = np.linalg.norm(votes - est[groups], axis=1)
        new = weighted_mean(weights / np.maximum(d, eps))
        if np.allclose(np.nan_to_num(new), np.nan_to_num(est), atol=1e-4, rtol=0):
            est = new
            break
        est = new
    return est


def refine_points(points, cells, fg, offsets, prob=None, delta=8.0):
    """The E-step of one image.

    Parameters
    ----------
    points : numpy.ndarray
        ``(N, 2)`` integer (x, y) current points.
    cells : numpy.ndarray
        ``(H, W)`` int Voronoi cells (index of each pixel's point; -1 none).
    fg : numpy.ndarray
        ``(H, W)`` bool predicted foreground (voting pixels).
    offsets : numpy.ndarray
        ``(2, H, W)`` predicted offsets ``(dx, dy)`` in pixels.
    prob : numpy.ndarray, optional
        ``(H, W)`` foreground probability (vote weights); default 1.
    delta : float
        A point moves only when the move is shorter than ``delta`` pixels.

    Returns
    -------
    new_points : numpy.ndarray
        int64 ``(N, 2)``.
    moved : numpy.ndarray
        bool ``(N,)``.
    voted : numpy.ndarray
        float64 ``(N, 2)`` geometric median of each cell's votes (NaN without votes).
    """
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    cells = np.asarray(cells)
    h, w = cells.shape
    n = len(pts)
    voters = np.asarray(fg, dtype=bool) & (cells >= 0)
    ys, xs = np.nonzero(voters)
    if n == 0 or len(ys) == 0:
        return pts.copy(), np.zeros(n, dtype=bool), np.full((n, 2), np.nan)
    votes = np.stack([xs + offsets[0][ys, xs], ys + offsets[1][ys, xs]], axis=1)
    weights = np.ones(len(ys)) if prob is None else np.asarray(prob)[ys, xs]
    voted = weighted_geometric_median(votes, weights, cells[ys, xs], n)
    ok = np.isfinite(voted).all(axis=1)
    cand = pts.copy()
    cand[ok] = np.round(voted[ok]).astype(np.int64)
    cand[:, 0] = cand[:, 0].clip(0, w - 1)
    cand[:, 1] = cand[:, 1].clip(0, h - 1)
    in_cell = cells[cand[:, 1], cand[:, 0]] == np.arange(n)
    moved = ok & in_cell & (np.linalg.norm(cand - pts, axis=1) < delta) & (cand != pts).any(axis=1)
    return np.where(moved[:, None], cand, pts), moved, voted
