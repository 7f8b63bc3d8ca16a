"""Centre-type targets: Feng-lab centerness, DoNuSeg initial label, PROnet heatmap and offsets.

- Feng et al. (2019; ``feng-lab/nuclei``, ``docs/REFERENCE_CODE.md`` section 2): on the stride-4
  feature map, the centre box (30 % of the width and height of the bounding box) of every
  labelled nucleus is positive (1), the rest of its projected mask negative (0), everything
  else ignored (-1), since unlabelled nuclei may lie there.
- DoNuSeg (Wang et al., MICCAI 2024, Sec. 2.1): initial label ``M``: foreground within ``r``
  (4) pixels of a point, background more than ``d`` (20) pixels away, ignored in between.
- PROnet (Nam et al., MICCAI 2023): centre map = the points expanded by a Gaussian within radius
  ``r`` (MoNuSeg 8, CPM17 6), following CenterNet; offset map = for every foreground pixel of
  a binary mask the vector to the centre of its nucleus (the nucleus being the mask inside the
  Voronoi cell of a point, as in the paper's E-step).

Empty inputs: :func:`donuseg_initial_label` is a segmentation label and raises on no points
like the other segmentation labels; the dense training targets (centerness, heatmap, offsets)
accept no points / no labelled instances and return all-ignored or zero targets, since they are
recomputed on augmented crops that may hold none.
"""

import math

import numpy as np
from scipy import ndimage as ndi

from ._common import BACKGROUND, IGNORE, NUCLEUS, check_points, check_shape, nearest_point

__all__ = ["centerness_targets", "donuseg_initial_label", "center_heatmap", "offset_targets"]


def _instances(masks_or_instance_map, labeled_ids):
    """Yield ``(id, (y0, x0), crop_bool)`` for every labelled instance, plus the image shape."""
    arr = np.asarray(masks_or_instance_map)
    if arr.size == 0 and not (arr.ndim == 3 and arr.shape[1] and arr.shape[2]):  # (0, H, W) is fine
        raise ValueError("masks_or_instance_map is empty")
    ids = np.unique(np.asarray(labeled_ids, dtype=np.int64).ravel())
    if arr.ndim == 2:
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError("masks_or_instance_map: a 2-D input must be an integer instance map")
        shape = arr.shape
        objs = ndi.find_objects(arr.astype(np.int64)) if arr.max() > 0 else []
        out = []
        for i in ids:
            if i <= 0:
                raise ValueError(f"labeled_ids must be positive instance ids, got {i}")
            if i > len(objs) or objs[i - 1] is None:
                raise ValueError(f"labeled_ids: instance {i} is not in the instance map")
            sl = objs[i - 1]
            out.append((int(i), (sl[0].start, sl[1].start), arr[sl] == i))
        return shape, out
    if arr.ndim == 3:
        shape = arr.shape[1:]
        out = []
        for i in ids:
            if i < 0 or i >= arr.shape[0]:
                raise ValueError(f"labeled_ids: mask index {i} out of range [0, {arr.shape[0]})")
            m = arr[i].astype(bool)
            sl = ndi.find_objects(m.view(np.uint8))
            if not sl:
                raise ValueError(f"labeled_ids: mask {i} is empty")
            sl = sl[0]
            out.append((int(i), (sl[0].start, sl[1].start), m[sl]))
        return shape, out
    raise ValueError(f"masks_or_instance_map must be (H, W) or (N, H, W), got {arr.shape}")


def _cell_range(lo, hi, centre, n):
    """Cells ``k`` with ``k + 0.5`` in ``[lo, hi]``, plus the cell holding ``centre``; clipped.

    The same rule, line for line, as in :mod:`nucleiweak_d2.methods.feng2019.centerness`.
    """
    k0 = min(math.ceil(lo - 0.5), math.floor(centre))
    k1 = max(math.floor(hi - 0.5), math.floor(centre))
    return max(k0, 0), min(k1, n - 1)


def centerness_targets(
    masks_or_instance_map, labeled_ids, stride, center_frac=0.3, return_boxes=False
):
    """Feng-lab centerness targets on a feature map of stride ``stride`` (numpy).

    A numpy mirror of the definition the model trains with,
    :func:`nucleiweak_d2.methods.feng2019.centerness.centerness_targets` (torch, on the GPU),
    for offline use without torch: on the grid ``(ceil(H / stride), ceil(W / stride))`` both
    give the same labels and boxes (``tests/test_feng2019_centerness.py`` checks it on
    hand-made and random instances).

    Parameters
    ----------
    masks_or_instance_map : array_like
        Either an ``(H, W)`` integer instance map (0 = background, ids > 0) or ``(N, H, W)``
        boolean masks.
    labeled_ids : sequence of int
        Labelled instances: ids in the instance map, or indices ``0..N-1`` of the masks.
        May be empty (everything is then ignored).
    stride : int
        Feature stride (Feng: 4, the P2 level).
    center_frac : float
        Side of the positive centre box relative to the bounding box (Feng: 0.3).
    return_boxes : bool
        Also return the bounding box of the instance assigned to every positive location.

    Returns
    -------
    targets : numpy.ndarray
        int8 ``(Hs, Ws) = (ceil(H / stride), ceil(W / stride))``: 1 positive, 0 negative, -1
        ignored. Cell ``(i, j)`` covers the pixels ``[s j, s j + s) x [s i, s i + s)``
        (``s = stride``); its centre is ``(s (j + 0.5), s (i + 0.5))`` in continuous (x, y)
        coordinates (pixel ``k`` spans ``[k, k + 1)``).

        - positive: the centre of the cell lies in the centre box ``|x - xc| <= center_frac *
          w / 2``, ``|y - yc| <= center_frac * h / 2`` of a labelled instance with bounding box
          centre ``(xc, yc)`` and size ``(w, h)``, or the cell holds ``(xc, yc)`` (so every
          labelled instance has a positive, however small);
        - negative: not positive, and at least half of the cell's ``s * s`` pixels lie in the
          union of the labelled masks (pixels beyond the image count as outside);
        - ignored: everything else (unlabelled nuclei may lie there).
    boxes : numpy.ndarray
        Only with ``return_boxes``: float32 ``(Hs, Ws, 4)`` ``(x0, y0, x1, y1)`` continuous
        boxes (``x1 = last column + 1``) of the instance owning each positive location, 0
        elsewhere. Where centre boxes overlap, the instance with the smaller box wins (equal
        areas: the later one in ``labeled_ids`` order).
    """
    if int(stride) < 1:
        raise ValueError(f"stride must be a positive int, got {stride}")
    if not 0 < center_frac <= 1:
        raise ValueError(f"center_frac must lie in (0, 1], got {center_frac}")
    stride = int(stride)
    shape, insts = _instances(masks_or_instance_map, labeled_ids)
    h, w = shape
    hs, ws = -(-h // stride), -(-w // stride)
    targets = np.full((hs, ws), -1, dtype=np.int8)
    boxes = np.zeros((hs, ws, 4), dtype=np.float32)
    # negatives: cells at least half covered by the union of the labelled masks
    union = np.zeros((hs * stride, ws * stride), dtype=np.int64)
    gt = np.zeros((len(insts), 4), dtype=np.float32)
    for k, (_, (y0, x0), crop) in enumerate(insts):
        ch, cw = crop.shape
        union[y0 : y0 + ch, x0 : x0 + cw] |= crop
        ys, xs = np.nonzero(crop)
        gt[k] = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    covered = union.reshape(hs, stride, ws, stride).sum(axis=(1, 3))
    targets[2 * covered >= stride * stride] = 0
    # positives, smaller boxes written last (float32 like the torch targets)
    areas = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    for k in np.argsort(-areas, kind="stable"):
        x1, y1, x2, y2 = (gt[k] / np.float32(stride)).tolist()
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        hw, hh = center_frac * (x2 - x1) / 2, center_frac * (y2 - y1) / 2
        j0, j1 = _cell_range(cx - hw, cx + hw, cx, ws)
        i0, i1 = _cell_range(cy - hh, cy + hh, cy, hs)
        targets[i0 : i1 + 1, j0 : j1 + 1] = 1
        boxes[i0 : i1 + 1, j0 : j1 + 1] = gt[k]
    return (targets, boxes) if return_boxes else targets


def donuseg_initial_label(points, shape, r=4, d=20):
    """DoNuSeg initial label ``M`` (MoNuSeg defaults ``r = 4``, ``d = 20``).

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` integer (x, y) points, ``N >= 1``, inside the image.
    shape : tuple of int
        ``(H, W)``.
    r : float
        Pixels with distance ``<= r`` to the nearest point are foreground.
    d : float
        Pixels with distance ``> d`` are background.

    Returns
    -------
    numpy.ndarray
        uint8 ``(H, W)``: 0 background, 1 nucleus, 2 ignore.
    """
    shape = check_shape(shape)
    pts = check_points(points, shape)
    if not 0 <= r <= d:
        raise ValueError(f"need 0 <= r <= d, got r={r}, d={d}")
    dist = nearest_point(pts, shape)[0]
    label = np.full(shape, IGNORE, dtype=np.uint8)
    label[dist <= r] = NUCLEUS
    label[dist > d] = BACKGROUND
    return label


def center_heatmap(points, shape, radius=8):
    """PROnet centre map: a CenterNet Gaussian around each point, cut at ``radius``.

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` integer (x, y) points (may be empty: an all-zero map).
    shape : tuple of int
        ``(H, W)``.
    radius : float
        Gaussian radius ``r`` (PROnet: 8 on MoNuSeg, 6 on CPM17); ``sigma = (2 r + 1) / 6`` as
        in CenterNet's ``draw_umich_gaussian``.

    Returns
    -------
    numpy.ndarray
        float32 ``(H, W)``: ``exp(-D^2 / (2 sigma^2))`` where the distance ``D`` to the nearest
        point is ``<= radius`` (the maximum over points), 0 elsewhere; exactly 1 at points.
    """
    shape = check_shape(shape)
    pts = check_points(points, shape, allow_empty=True)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    heat = np.zeros(shape, dtype=np.float32)
    if len(pts) == 0:
        return heat
    dist = nearest_point(pts, shape)[0]
    sigma = (2.0 * radius + 1.0) / 6.0
    inside = dist <= radius
    heat[inside] = np.exp(-(dist[inside] ** 2) / (2.0 * sigma * sigma))
    return heat


def offset_targets(mask, points, cells=None, center="point"):
    """PROnet offset targets: vector from each foreground pixel to its nucleus centre.

    Parameters
    ----------
    mask : array_like
        ``(H, W)`` binary foreground (PROnet: the predicted binary mask).
    points : array_like
        ``(N, 2)`` integer (x, y) points (may be empty: no valid pixel).
    cells : numpy.ndarray, optional
        ``(H, W)`` cell map assigning pixels to point indices; the Euclidean Voronoi cells of
        the points when ``None`` (pass geodesic cells to use those).
    center : {"point", "centroid"}
        Target of the vectors: the point itself (PROnet), or the centroid of the foreground
        pixels of its cell.

    Returns
    -------
    offsets : numpy.ndarray
        float32 ``(2, H, W)``: ``(dx, dy) = centre - pixel`` on valid pixels, 0 elsewhere.
    valid : numpy.ndarray
        bool ``(H, W)``: the foreground pixels (each belongs to the cell of one point).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty (H, W) array, got shape {mask.shape}")
    mask = mask.astype(bool)
    pts = check_points(points, mask.shape, allow_empty=True)
    if center not in ("point", "centroid"):
        raise ValueError(f"center must be 'point' or 'centroid', got {center!r}")
    h, w = mask.shape
    offsets = np.zeros((2, h, w), dtype=np.float32)
    if len(pts) == 0:
        return offsets, np.zeros((h, w), dtype=bool)
    if cells is None:
        cells = nearest_point(pts, (h, w))[1]
    cells = np.asarray(cells)
    if cells.shape != (h, w):
        raise ValueError(f"cells shape {cells.shape} does not match mask shape {(h, w)}")
    if cells.min() < 0 or cells.max() >= len(pts):
        raise ValueError("cells values must index points")
    ys, xs = np.nonzero(mask)
    owner = cells[ys, xs]
    if center == "point":
        cx, cy = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
    else:
        n = np.maximum(np.bincount(owner, minlength=len(pts)), 1)
        cx = np.bincount(owner, weights=xs, minlength=len(pts)) / n
        cy = np.bincount(owner, weights=ys, minlength=len(pts)) / n
    offsets[0, ys, xs] = cx[owner] - xs
    offsets[1, ys, xs] = cy[owner] - ys
    return offsets, mask.copy()
