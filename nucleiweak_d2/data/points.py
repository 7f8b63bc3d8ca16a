"""Point annotations from instance masks: point extraction, partial sampling, shifts (numpy).

Conventions (docs/CONTRACTS.md): points are ``(N, 2)`` integer pixels in ``(x, y)`` =
``(column, row)`` order. Seeds are an ``int`` or a sequence of ints (passed to
``numpy.random.default_rng``), so callers can derive one independent stream per image, e.g.
``(seed, crc32(name))``.
"""

import logging
import math

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

__all__ = [
    "SHIFT_PRESETS",
    "POINT_MODES",
    "points_from_labels",
    "sample_partial",
    "shift_points",
    "parse_shift",
    "instance_boxes",
    "points_and_boxes",
]

#: Shift ranges ``(min, max)`` in pixels used by PROnet (Nam et al. 2023, Table 1).
SHIFT_PRESETS = {"0": (0.0, 0.0), "2-4": (2.0, 4.0), "4-6": (4.0, 6.0), "6-8": (6.0, 8.0)}

POINT_MODES = ("bbox_center", "centroid")


def _check_label(label):
    label = np.asarray(label)
    if label.ndim != 2 or label.size == 0:
        raise ValueError(f"label must be a non-empty (H, W) array, got shape {label.shape}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        raise ValueError(f"label must hold integers, got dtype {label.dtype}")
    if label.min() < 0:
        raise ValueError("label must not hold negative ids")
    return label.astype(np.uint8) if label.dtype == bool else label


def instance_boxes(label):
    """Ids, bounding slices and areas of the instances of a label map.

    Parameters
    ----------
    label : np.ndarray
        ``(H, W)`` integer instance map, 0 = background; ids need not be consecutive.

    Returns
    -------
    ids : np.ndarray
        ``(N,)`` int64, sorted ascending.
    slices : list of tuple of slice
        ``(rows, cols)`` bounding slices, one per id (end exclusive).
    areas : np.ndarray
        ``(N,)`` int64 pixel counts.
    """
    label = _check_label(label)
    top = int(label.max())
    if top <= 4 * label.size:  # small ids: one linear pass, no sort
        counts = np.bincount(label.ravel(), minlength=top + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        areas = counts[ids]
        objects = ndimage.find_objects(label) if top else []
        slices = [objects[i - 1] for i in ids]
        return ids.astype(np.int64), slices, areas.astype(np.int64)
    ids, inverse, areas = np.unique(label.ravel(), return_inverse=True, return_counts=True)
    if ids.size and ids[0] == 0:
        compact = inverse.reshape(label.shape)  # 0 stays background, ids become 1..N
        ids, areas = ids[1:], areas[1:]
    else:
        compact = inverse.reshape(label.shape) + 1
    slices = ndimage.find_objects(compact, max_label=len(ids)) if len(ids) else []
    return ids.astype(np.int64), list(slices), areas.astype(np.int64)


def points_from_labels(label, mode="bbox_center", where=None):
    """One point per instance of a label map.

    Parameters
    ----------
    label : np.ndarray
        ``(H, W)`` integer instance map, 0 = background.
    mode : {"bbox_center", "centroid"}
        ``"bbox_center"`` (default, as all five papers and the authors' code):
        ``((rmin + rmax) // 2, (cmin + cmax) // 2)`` with inclusive max, returned as (x, y).
        ``"centroid"``: the mean pixel position rounded half up. Neither is guaranteed to lie
        on the instance for strongly concave shapes (the papers accept this).
    where : str, optional
        Name of the label map; when given, ids made of several pieces are logged (below).

    Returns
    -------
    ids : np.ndarray
        ``(N,)`` int64 instance ids, ascending.
    points : np.ndarray
        ``(N, 2)`` int64 ``(x, y)``.

    Notes
    -----
    An id whose pixels form several 8-connected pieces (two nuclei given one id by mistake,
    or a nucleus cut by another's mask) keeps one point, placed on its largest piece: the
    bbox centre (or centroid) of that piece, not of the union, which would often fall on
    background between the pieces. Ties go to the piece met first in raster order. With
    ``where``, a warning gives the number of such ids.
    """
    ids, points, _, _ = points_and_boxes(label, mode, where=where)
    return ids, points


def points_and_boxes(label, mode="bbox_center", where=None):
    """:func:`points_from_labels` plus the bounding slices and areas, from one pass.

    Slices and areas are those of the whole id (all its pieces); only the point moves to the
    largest piece of an id made of several pieces (see :func:`points_from_labels`).

    Returns
    -------
    ids, points, slices, areas
        As in :func:`points_from_labels` and :func:`instance_boxes`.
    """
    if mode not in POINT_MODES:
        raise ValueError(f"point mode must be one of {POINT_MODES}, got {mode!r}")
    label = _check_label(label)
    ids, slices, areas = instance_boxes(label)
    points = np.zeros((len(ids), 2), dtype=np.int64)
    if not len(ids):
        return ids, points, slices, areas
    if mode == "bbox_center":
        for i, (rs, cs) in enumerate(slices):
            points[i] = _bbox_center(rs, cs)
    else:
        flat = label.ravel()
        fg = np.flatnonzero(flat)
        order = np.searchsorted(ids, flat[fg])
        rows, cols = np.divmod(fg, label.shape[1])
        sum_r = np.bincount(order, weights=rows, minlength=len(ids))
        sum_c = np.bincount(order, weights=cols, minlength=len(ids))
        points[:, 0] = np.floor(sum_c / areas + 0.5)
        points[:, 1] = np.floor(sum_r / areas + 0.5)
    _points_on_largest_pieces(label, ids, slices, points, mode, where)
    return ids, points, slices, areas


def _bbox_center(rs, cs):
    """(x, y) bbox centre of a (rows, cols) slice pair, inclusive max, rounded down."""
    return (cs.start + cs.stop - 1) // 2, (rs.start + rs.stop - 1) // 2


def _split_ids(label, ids):
    """Indices (into ``ids``) of the ids whose pixels form several 8-connected pieces."""
    from skimage.measure import label as connected_pieces

    pieces = connected_pieces(label, background=0, connectivity=2)  # equal-value regions
    n_pieces = int(pieces.max())
    if n_pieces == len(ids):  # every id is one piece (the usual case: one pass, no more)
        return np.zeros(0, dtype=np.int64)
    fg = np.flatnonzero(pieces)
    owner = np.zeros(n_pieces + 1, dtype=np.int64)  # piece -> index into ids
    owner[pieces.ravel()[fg]] = np.searchsorted(ids, label.ravel()[fg])
    return np.flatnonzero(np.bincount(owner[1:], minlength=len(ids)) > 1)


def _largest_piece_point(mask, mode):
    """(x, y) in ``mask`` coordinates of the largest 8-connected piece of a boolean mask
    (ties: the piece met first in raster order)."""
    pieces, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    piece = int(np.argmax(np.bincount(pieces.ravel())[1:])) + 1
    if mode == "bbox_center":
        rs, cs = ndimage.find_objects(pieces, max_label=piece)[piece - 1]
        return _bbox_center(rs, cs)
    rows, cols = np.nonzero(pieces == piece)
    return np.floor(cols.mean() + 0.5), np.floor(rows.mean() + 0.5)


def _points_on_largest_pieces(label, ids, slices, points, mode, where):
    """Move the point of every id made of several 8-connected pieces onto its largest piece
    (in place); log the number of such ids when ``where`` is given."""
    split = _split_ids(label, ids)
    for index in split:
        rs, cs = slices[index]
        x, y = _largest_piece_point(label[rs, cs] == ids[index], mode)
        points[index] = (x + cs.start, y + rs.start)
    if len(split) and where is not None:
        logger.warning(
            "%s: %d label id(s) cover several disconnected pieces (first: id %d); each keeps "
            "one annotation (mask = all pieces) with its point on its largest piece",
            where,
            len(split),
            int(ids[split[0]]),
        )


def _n_kept(n, ratio):
    """round(ratio * n) rounded half up, at least 1 when n > 0."""
    if n == 0:
        return 0
    return min(n, max(1, int(math.floor(ratio * n + 0.5 + 1e-9))))


def sample_partial(n, ratio, seed):
    """Choose which of ``n`` points are labelled.

    Parameters
    ----------
    n : int
        Number of points (instances) in the image.
    ratio : float
        Fraction in (0, 1].
    seed : int or sequence of int
        Seed of the permutation.

    Returns
    -------
    np.ndarray
        ``(n,)`` bool mask with exactly ``round(ratio * n)`` True entries (rounded half up; at
        least 1 when ``n > 0``), drawn without replacement.

    Notes
    -----
    The mask keeps the first k entries of one seeded permutation of ``range(n)``, so for one
    seed the sets are nested across ratios (5 % inside 10 % inside 25 % ...). Qu et al.'s code
    draws ``int(N * ratio)`` ids *with* replacement and unseeded; we fix both (methods.md).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    ratio = float(ratio)
    if not (0.0 < ratio <= 1.0):
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    order = np.random.default_rng(seed).permutation(int(n))
    mask = np.zeros(int(n), dtype=bool)
    mask[order[: _n_kept(int(n), ratio)]] = True
    return mask


def parse_shift(shift):
    """Turn a preset name (``"2-4"``), ``"a-b"`` string, number or ``(min, max)`` into floats."""
    if isinstance(shift, str):
        if shift in SHIFT_PRESETS:
            return SHIFT_PRESETS[shift]
        parts = shift.split("-")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(
                f"shift must be 'min-max' or one of {sorted(SHIFT_PRESETS)}, got {shift!r}"
            ) from None
    elif np.isscalar(shift):
        values = [float(shift)] * 2
    else:
        values = [float(v) for v in shift]
    if len(values) == 1:
        values = values * 2
    if (
        len(values) != 2
        or not (0.0 <= values[0] <= values[1])
        or not all(map(math.isfinite, values))
    ):
        raise ValueError(f"shift range must be (min, max) with 0 <= min <= max, got {shift!r}")
    return float(values[0]), float(values[1])


def _ring_offsets(lo, hi):
    """All integer offsets (dx, dy) whose length lies in [lo, hi]."""
    r = int(math.floor(hi))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    length = np.hypot(dx, dy)
    keep = (length >= lo - 1e-9) & (length <= hi + 1e-9)
    return np.stack([dx[keep], dy[keep]], axis=1).astype(np.int64)


def shift_points(points, shape, shift_range, seed):
    """Move each point by a random integer offset of bounded length, staying inside the image.

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` integer ``(x, y)`` inside the image.
    shape : tuple
        ``(H, W)`` of the image.
    shift_range : tuple or str
        ``(min, max)`` shift length in pixels, or a :data:`SHIFT_PRESETS` name.
    seed : int or sequence of int
        Seed.

    Returns
    -------
    new_points : np.ndarray
        ``(N, 2)`` int64.
    shifts : np.ndarray
        ``(N, 2)`` int64 ``(dx, dy)`` with ``new_points = points + shifts``.

    Notes
    -----
    As PROnet describes, each point draws a length uniform in [min, max] and a direction
    uniform in [0, 2 pi). Because points are integer pixels, the continuous offset is replaced
    by the nearest integer offset whose length is also in [min, max] and that keeps the point
    inside the image, so the length bounds hold exactly after rounding. The shifted point may
    leave its nucleus (as with a careless click). Raises ValueError when no integer offset of
    the requested length exists (e.g. ``(2.5, 2.6)``) or none fits in the image.
    """
    lo, hi = parse_shift(shift_range)
    pts = np.asarray(points)
    if pts.size == 0:
        pts = pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    if len(shape) < 2 or shape[0] <= 0 or shape[1] <= 0:
        raise ValueError(f"shape must be (H, W) with positive sizes, got {shape}")
    height, width = int(shape[0]), int(shape[1])
    pts = pts.astype(np.int64)
    if len(pts) and (pts.min() < 0 or np.any(pts[:, 0] >= width) or np.any(pts[:, 1] >= height)):
        raise ValueError(f"points must lie inside the {height}x{width} image")
    rng = np.random.default_rng(seed)
    n = len(pts)
    length = rng.uniform(lo, hi, size=n)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    if hi == 0.0 or n == 0:
        return pts.copy(), np.zeros_like(pts)
    wanted = np.stack([length * np.cos(angle), length * np.sin(angle)], axis=1)
    ring = _ring_offsets(lo, hi)
    if not len(ring):
        raise ValueError(f"no integer offset has a length in [{lo}, {hi}]")
    cand = pts[:, None, :] + ring[None, :, :]  # (N, M, 2)
    inside = (
        (cand[..., 0] >= 0) & (cand[..., 0] < width) & (cand[..., 1] >= 0) & (cand[..., 1] < height)
    )
    if not inside.any(axis=1).all():
        raise ValueError(f"a {height}x{width} image is too small for shifts in [{lo}, {hi}]")
    dist = ((ring[None, :, :] - wanted[:, None, :]) ** 2).sum(axis=2)
    dist[~inside] = np.inf
    shifts = ring[np.argmin(dist, axis=1)]
    return pts + shifts, shifts
