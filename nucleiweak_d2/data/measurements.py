"""Per-nucleus measurements and COCO RLE of nuclei cut from a large label map.

:func:`measure_nuclei` gives, for chosen ids of a label map crop and the RGB image under it,
the centroid, area, perimeter, eccentricity and solidity (scikit-image ``regionprops``) and
the mean hematoxylin and eosin optical densities (``skimage.color.rgb2hed``, colour
deconvolution of Ruifrok & Johnston). :func:`crop_rle` encodes a nucleus given as a crop and
its position as the COCO RLE of the whole image, without building a whole-image mask (so a
slide's nuclei are encoded tile by tile).

Units: pixels of the label map; centroids ``(x, y)`` in continuous coordinates (the centre
of pixel ``(c, r)`` is ``(c + 0.5, r + 0.5)``, as QuPath).
"""

import math

import numpy as np

from .rle import encode_counts

__all__ = ["MEASUREMENT_COLUMNS", "measure_nuclei", "crop_rle", "hed_image"]

#: Columns of the per-nucleus CSV of ``tools/predict.py``, in order.
MEASUREMENT_COLUMNS = (
    "id",
    "centroid_x",
    "centroid_y",
    "area",
    "perimeter",
    "eccentricity",
    "solidity",
    "hematoxylin_od",
    "eosin_od",
    "score",
    "area_um2",
    "perimeter_um",
)


def _hed_matrix():
    from skimage.color import hed_from_rgb

    return np.asarray(hed_from_rgb, dtype=np.float64)


_OD_LUT = None


def hed_image(image):
    """``(h, w, 2)`` float32 hematoxylin and eosin channels of ``skimage.color.rgb2hed``
    (the same colour deconvolution, through a lookup table of the 256 uint8 levels)."""
    global _OD_LUT
    if _OD_LUT is None:
        levels = np.maximum(np.arange(256, dtype=np.float64) / 255.0, 1e-6)
        _OD_LUT = (np.log(levels) / np.log(1e-6)).astype(np.float32)
    od = _OD_LUT[np.asarray(image, dtype=np.uint8)]
    stains = od.reshape(-1, 3) @ _hed_matrix()[:, :2].astype(np.float32)
    np.maximum(stains, 0, out=stains)
    return stains.reshape(od.shape[:2] + (2,))


def _index_map(label, ids):
    """``label`` with id ``ids[k]`` replaced by ``k + 1`` and every other value by 0."""
    top = int(label.max()) if label.size else 0
    if top < 2**24:
        lut = np.zeros(top + 1, dtype=np.int32)
        inside = ids <= top
        lut[ids[inside]] = np.flatnonzero(inside) + 1
        return lut[label]
    order = np.argsort(ids)
    pos = np.searchsorted(ids[order], label).clip(0, len(ids) - 1)
    hit = ids[order][pos] == label
    return np.where(hit, order[pos] + 1, 0).astype(np.int32)


_PERIMETER_WEIGHTS = np.zeros(50, dtype=np.float64)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2
_PERIMETER_KERNEL = (
    (-1, -1, 10),
    (-1, 0, 2),
    (-1, 1, 10),
    (0, -1, 2),
    (0, 1, 2),
    (1, -1, 10),
    (1, 0, 2),
    (1, 1, 10),
)


def _pair_slices(shape, dy, dx):
    """``(here, there)`` slices with ``there`` the pixels at offset ``(dy, dx)`` of ``here``."""
    h, w = shape
    here = (slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0)))
    there = (slice(max(dy, 0), h - max(-dy, 0)), slice(max(dx, 0), w - max(-dx, 0)))
    return here, there


def _perimeters(index, n):
    """scikit-image's ``regionprops`` perimeter (4-neighbourhood) of every region at once:
    inner border pixels weighted by the configuration of their same-region border
    neighbours (the convolution of ``skimage.measure.perimeter``)."""
    inside = index > 0
    interior = inside.copy()
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        here, there = _pair_slices(index.shape, dy, dx)
        same = np.zeros(index.shape, dtype=bool)
        same[here] = index[here] == index[there]
        interior &= same
    border = inside & ~interior
    code = border.astype(np.uint8)
    for dy, dx, weight in _PERIMETER_KERNEL:
        here, there = _pair_slices(index.shape, dy, dx)
        code[here] += weight * (border[there] & (index[here] == index[there])).astype(np.uint8)
    return np.bincount(index[border], weights=_PERIMETER_WEIGHTS[code[border]], minlength=n + 1)[
        1:
    ], border


def _hull_pixels(points):
    """Lattice points inside or on the convex hull of ``points`` (``(y, x)`` int tuples,
    sorted, unique): Andrew's monotone chain, then Pick's theorem."""
    lower, upper = [], []
    for chain, seq in ((lower, points), (upper, points[::-1])):
        for p in seq:
            while len(chain) >= 2:
                o, a = chain[-2], chain[-1]
                if (a[0] - o[0]) * (p[1] - o[1]) - (a[1] - o[1]) * (p[0] - o[0]) > 0:
                    break
                chain.pop()
            chain.append(p)
    hull = lower[:-1] + upper[:-1]
    twice_area, on_edges = 0, 0
    for (y0, x0), (y1, x1) in zip(hull, hull[1:] + hull[:1]):
        twice_area += x0 * y1 - x1 * y0
        on_edges += math.gcd(abs(x1 - x0), abs(y1 - y0))
    return abs(twice_area) / 2 + on_edges / 2 + 1


def _solidities(index, border, area, n):
    """Pixel area over the pixels whose centres lie in the convex hull of the pixel centres
    (the hull of each row's leftmost and rightmost pixels)."""
    rows, cols = np.nonzero(border)  # row-major: rows ascending, then columns
    which = index[rows, cols]
    order = np.lexsort((cols, rows, which))
    rows, cols, which = rows[order], cols[order], which[order]
    key = which.astype(np.int64) * (index.shape[0] + 1) + rows
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    ends = np.concatenate([starts[1:], [len(key)]]) - 1
    g_which, g_row = which[starts], rows[starts]
    g_left, g_right = cols[starts], cols[ends]
    bounds = np.searchsorted(g_which, np.arange(1, n + 2))
    out = np.ones(n)
    for k in range(n):
        a, b = bounds[k], bounds[k + 1]
        points = []
        for r, left, right in zip(g_row[a:b].tolist(), g_left[a:b].tolist(), g_right[a:b].tolist()):
            points.append((r, left))
            if right != left:
                points.append((r, right))
        if len(points) >= 3:
            out[k] = min(area[k] / _hull_pixels(points), 1.0)
    return out


def measure_nuclei(label, image, ids=None, hed=None):
    """Shape and stain measurements of the nuclei of a label map (crop), all at once.

    Parameters
    ----------
    label : numpy.ndarray
        ``(h, w)`` integer ids, 0 = background.
    image : numpy.ndarray
        ``(h, w, 3)`` uint8 RGB under ``label`` (ignored when ``hed`` is given).
    ids : sequence of int, optional
        Ids to measure (default: every id in ``label``); other ids are treated as
        background. Every id must be present.
    hed : numpy.ndarray, optional
        Precomputed :func:`hed_image` of ``image``.

    Returns
    -------
    dict of numpy.ndarray
        In the order of ``ids`` (sorted when not given): ``id``; ``centroid_x``,
        ``centroid_y`` (crop coordinates, pixel centres at +0.5); ``area`` (pixels);
        ``perimeter`` (scikit-image's ``regionprops`` perimeter, 4-neighbourhood);
        ``eccentricity`` (of the ellipse with the same second moments, as ``regionprops``);
        ``solidity`` (area over the number of pixels whose centres lie in the convex hull of
        the nucleus' pixel centres; ``regionprops`` hulls the pixel corners, which counts a
        few more pixels for small nuclei); ``hematoxylin_od``,
        ``eosin_od`` (mean of :func:`hed_image` over the nucleus).
    """
    label = np.asarray(label)
    if ids is None:
        ids = np.unique(label)
        ids = ids[ids > 0]
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    n = len(ids)
    # the measured columns: those between "id" and "score" (score and sizes come from elsewhere)
    keys = MEASUREMENT_COLUMNS[1 : MEASUREMENT_COLUMNS.index("score")]
    out = {"id": ids.copy()}
    out.update({k: np.full(n, np.nan) for k in keys})
    if not n:
        return out
    index = _index_map(label, ids)
    rows, cols = np.nonzero(index)  # only the pixels of the nuclei
    flat = index[rows, cols]
    count = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    missing = ids[count == 0]
    if len(missing):
        raise ValueError(f"measure_nuclei: ids {missing[:5].tolist()} are not in the label map")
    if hed is None:
        hed = hed_image(image)
    hed_values = hed[rows, cols].astype(np.float64)
    rows, cols = rows.astype(np.float64), cols.astype(np.float64)

    def total(weights):
        return np.bincount(flat, weights=weights, minlength=n + 1)[1:]

    cy, cx = total(rows) / count, total(cols) / count
    dy, dx = rows - cy[flat - 1], cols - cx[flat - 1]  # centred: no cancellation
    var_y, var_x, cov = total(dy * dy) / count, total(dx * dx) / count, total(dx * dy) / count
    half = np.sqrt(np.maximum(((var_x - var_y) / 2) ** 2 + cov * cov, 0.0))
    l1, l2 = (var_x + var_y) / 2 + half, (var_x + var_y) / 2 - half
    with np.errstate(divide="ignore", invalid="ignore"):
        ecc = np.where(l1 > 1e-12, np.sqrt(np.clip(1 - l2 / l1, 0.0, 1.0)), 0.0)
    out["centroid_x"], out["centroid_y"] = cx + 0.5, cy + 0.5
    out["area"] = count
    out["perimeter"], border = _perimeters(index, n)
    out["eccentricity"] = ecc
    out["solidity"] = _solidities(index, border, count, n)
    out["hematoxylin_od"] = total(hed_values[:, 0]) / count
    out["eosin_od"] = total(hed_values[:, 1]) / count
    return out


def crop_rle(mask, x0, y0, height, width):
    """COCO RLE (compressed counts) of a crop mask placed at ``(x0, y0)`` in an image.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(h, w)`` bool crop.
    x0, y0 : int
        Column and row of the crop's top-left pixel in the image.
    height, width : int
        Image size; the crop must lie inside.

    Returns
    -------
    dict
        ``{"size": [height, width], "counts": str}``, the same as
        ``pycocotools.mask.encode`` of the whole-image mask.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise ValueError(f"crop {w}x{h} at ({x0}, {y0}) exceeds the {width}x{height} image")
    # Column-major (as COCO), one background row appended to every column so that no run
    # crosses from one column of the crop into the next.
    flat = np.pad(mask, ((0, 1), (0, 0))).T.ravel()
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[0::2], edges[1::2]  # [start, end) in the padded column-major index
    cols, rows = starts // (h + 1), starts % (h + 1)
    gstarts = (x0 + cols).astype(np.int64) * height + y0 + rows
    gends = gstarts + (ends - starts)
    if len(gstarts) > 1:  # runs continuing into the next column (crop spans the full height)
        join = gstarts[1:] == gends[:-1]
        if join.any():
            keep = np.concatenate([[True], ~join])
            gends = np.maximum.reduceat(gends, np.flatnonzero(keep))
            gstarts = gstarts[keep]
    total = int(height) * int(width)
    counts = np.empty(2 * len(gstarts) + 1, dtype=np.int64)
    counts[0:-1:2] = gstarts - np.concatenate([[0], gends[:-1]])
    counts[1::2] = gends - gstarts
    counts[-1] = total - (gends[-1] if len(gends) else 0)
    if len(gends) and counts[-1] == 0:
        counts = counts[:-1]
    return {"size": [int(height), int(width)], "counts": encode_counts(counts)}
