"""Instances of DoNuSeg: the semantic mask split by the detected boxes (numpy).

The paper: "The predicted bounding boxes are used to distinguish instances within the semantic
masks". Rules chosen here:

- a foreground pixel belongs to a box when its centre ``(x + 0.5, y + 0.5)`` lies in the box
  (continuous coordinates, edges included);
- a pixel in several boxes goes, with ``rule="nearest_center"`` (default), to the box whose
  centre is nearest (ties: the higher score, then the earlier box): touching nuclei have
  overlapping boxes, and the nearest-centre rule cuts the overlap along the bisector between
  the two centres instead of giving it whole to one of them; with ``rule="score"`` it goes to
  the highest-scoring box (ties: the earlier box);
- foreground pixels in no box are dropped (``unboxed="drop"``, default: the detector decides
  what is a nucleus) or their 8-connected components become instances (``"components"``,
  score 0, so they rank below every detection);
- with ``keep_largest``, each instance keeps only its largest 8-connected piece (a box also
  covers bits of neighbouring nuclei that no other box claims); then instances smaller than
  ``min_area`` are removed and the rest numbered 1..K in box order.
"""

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SPLIT_RULES", "UNBOXED_RULES", "split_mask_by_boxes"]

SPLIT_RULES = ("nearest_center", "score")
UNBOXED_RULES = ("drop", "components")
_EIGHT = np.ones((3, 3), dtype=bool)


def _pixel_range(lo, hi, n):
    """Pixels ``k`` with ``lo <= k + 0.5 <= hi``, clipped to ``[0, n)``: ``(k0, k1)`` half-open."""
    k0 = max(int(np.ceil(lo - 0.5)), 0)
    k1 = min(int(np.floor(hi - 0.5)) + 1, n)
    return k0, max(k1, k0)


def _largest_piece(mask):
    label, n = ndi.label(mask, structure=_EIGHT)
    if n <= 1:
        return mask
    sizes = np.bincount(label.ravel())[1:]
    return label == (int(np.argmax(sizes)) + 1)


def split_mask_by_boxes(
    foreground, boxes, scores, rule="nearest_center", unboxed="drop", keep_largest=True, min_area=0
):
    """Split a foreground mask into instances with boxes.

    Parameters
    ----------
    foreground : numpy.ndarray
        ``(H, W)`` bool.
    boxes : numpy.ndarray
        ``(K, 4)`` float ``(x0, y0, x1, y1)`` continuous image coordinates.
    scores : numpy.ndarray
        ``(K,)`` detection scores.
    rule : {"nearest_center", "score"}
        Owner of a pixel in several boxes.
    unboxed : {"drop", "components"}
        What happens to foreground pixels in no box.
    keep_largest : bool
        Keep only the largest 8-connected piece of each instance.
    min_area : int
        Instances with fewer pixels are removed.

    Returns
    -------
    instance_map : numpy.ndarray
        ``(H, W)`` int32, 0 background, instances 1..M.
    owners : numpy.ndarray
        ``(M,)`` int64: the box of each instance (``-1`` for an unboxed component).
    """
    if rule not in SPLIT_RULES:
        raise ValueError(f"split rule must be one of {SPLIT_RULES}, got {rule!r}")
    if unboxed not in UNBOXED_RULES:
        raise ValueError(f"unboxed must be one of {UNBOXED_RULES}, got {unboxed!r}")
    fg = np.asarray(foreground, dtype=bool)
    h, w = fg.shape
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    owner = np.full((h, w), -1, dtype=np.int64)
    best = np.full((h, w), np.inf)
    windows = {}
    # visit boxes by decreasing score (stable): a later box takes a pixel only when strictly
    # better, so ties go to the higher score, then the earlier box
    for k in np.argsort(-scores, kind="stable"):
        x0, y0, x1, y1 = boxes[k]
        c0, c1 = _pixel_range(x0, x1, w)
        r0, r1 = _pixel_range(y0, y1, h)
        if c0 >= c1 or r0 >= r1:
            continue
        windows[k] = (slice(r0, r1), slice(c0, c1))
        region = fg[r0:r1, c0:c1]
        if rule == "score":
            cost = np.zeros(region.shape)
        else:
            yy, xx = np.mgrid[r0:r1, c0:c1] + 0.5
            cost = (xx - (x0 + x1) / 2) ** 2 + (yy - (y0 + y1) / 2) ** 2
        take = region & (cost < best[r0:r1, c0:c1])
        owner[r0:r1, c0:c1][take] = k
        best[r0:r1, c0:c1][take] = cost[take]

    pieces = []  # (window, mask in the window, owner box)
    for k in range(len(boxes)):
        if k in windows:
            mask = owner[windows[k]] == k
            pieces.append((windows[k], _largest_piece(mask) if keep_largest else mask, k))
    if unboxed == "components":
        label, _ = ndi.label(fg & (owner < 0), structure=_EIGHT)
        for i, window in enumerate(ndi.find_objects(label), start=1):
            if window is not None:
                pieces.append((window, label[window] == i, -1))
    instance_map = np.zeros((h, w), dtype=np.int32)
    kept = []
    for window, mask, k in pieces:
        if mask.sum() >= max(int(min_area), 1):
            kept.append(k)
            instance_map[window][mask] = len(kept)
    return instance_map, np.asarray(kept, dtype=np.int64)
