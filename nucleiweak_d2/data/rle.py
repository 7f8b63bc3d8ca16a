"""COCO run-length encoding of instance label maps, in numpy (no pycocotools needed).

COCO RLE runs over the pixels in column-major (Fortran) order and alternates background and
foreground runs, starting with background. The compressed ``counts`` string stores each count
(after the third, as the difference to the count two places earlier) in 5-bit groups, low
group first, each group offset by 48 and flagged with 0x20 when another group follows; the
last group's 0x10 bit is the sign. These functions write and read exactly that format, so
``pycocotools.mask.decode`` reads our output and we read its output.
"""

import numpy as np

__all__ = ["encode_counts", "decode_counts", "label_to_rles", "rle_area", "paint_rles"]


def encode_counts(counts):
    """Compress a list of non-negative run lengths into a COCO RLE counts string."""
    counts = [int(c) for c in counts]
    out = []
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def decode_counts(counts):
    """Read a COCO RLE counts string (or bytes, or an already uncompressed list) into ints."""
    if isinstance(counts, (list, tuple)):
        return [int(c) for c in counts]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    values = []
    pos = 0
    while pos < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[pos]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            pos += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(values) > 2:
            x += values[-2]
        values.append(x)
    return values


def label_to_rles(label, ids):
    """COCO RLE (compressed counts) of every instance id of a label map, in one pass.

    Parameters
    ----------
    label : np.ndarray
        ``(H, W)`` integer instance map.
    ids : sequence of int
        Instance ids to encode (absent ids give an all-background RLE).

    Returns
    -------
    list of dict
        ``{"size": [H, W], "counts": str}`` per id, in the order of ``ids``.
    """
    label = np.asarray(label)
    height, width = label.shape
    total = height * width
    flat = label.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [total]])
    values = flat[starts]
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ids = np.asarray(ids, dtype=flat.dtype if len(ids) == 0 else np.int64)
    los = np.searchsorted(sorted_values, ids, side="left")
    his = np.searchsorted(sorted_values, ids, side="right")
    compress = _fast_compressor(height, width)
    rles = []
    for lo, hi in zip(los, his):
        sel = order[lo:hi]
        s, e = starts[sel], ends[sel]
        counts = np.empty(2 * len(sel) + 1, dtype=np.int64)
        counts[0:-1:2] = s - np.concatenate([[0], e[:-1]])
        counts[1::2] = e - s
        counts[-1] = total - (e[-1] if len(sel) else 0)
        if counts[-1] == 0:
            counts = counts[:-1]
        rles.append({"size": [int(height), int(width)], "counts": compress(counts)})
    return rles


def _fast_compressor(height, width):
    """pycocotools' C compressor when installed (same output, ~10x faster), else ours."""
    try:
        from pycocotools import mask as mask_util
    except ImportError:
        return encode_counts

    def compress(counts):
        rle = mask_util.frPyObjects(
            {"size": [height, width], "counts": counts.tolist()}, height, width
        )
        return rle["counts"].decode("ascii")

    return compress


def rle_area(rle):
    """Number of foreground pixels of an RLE dict."""
    return int(sum(decode_counts(rle["counts"])[1::2]))


def paint_rles(rles, values, shape):
    """Paint RLE masks into one integer map (later masks win where they overlap).

    Parameters
    ----------
    rles : sequence of dict
        COCO RLEs (compressed or uncompressed counts) of size ``shape``.
    values : sequence of int
        Value to paint for each RLE (e.g. annotation index + 1).
    shape : tuple
        ``(H, W)``.

    Returns
    -------
    np.ndarray
        ``(H, W)`` int32 map, 0 where no mask is set.
    """
    height, width = int(shape[0]), int(shape[1])
    flat = np.zeros(height * width, dtype=np.int32)
    for rle, value in zip(rles, values):
        size = [int(v) for v in rle["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE of size {size} does not fit an image of size {[height, width]}")
        counts = np.asarray(decode_counts(rle["counts"]), dtype=np.int64)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        if bounds[-1] > height * width:
            raise ValueError(f"RLE counts sum to {bounds[-1]} > {height * width} pixels")
        run_starts, run_ends = bounds[1:-1:2], bounds[2::2]
        lengths = run_ends - run_starts
        if not lengths.sum():
            continue
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        flat[np.repeat(run_starts, lengths) + offsets] = value
    return flat.reshape((width, height)).T.copy()
