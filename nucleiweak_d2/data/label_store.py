"""A label map too large for memory, held as compressed square blocks, and its tiled TIFF.

:class:`BlockLabelCanvas` stores a ``(H, W)`` uint32 label map in ``block x block`` pieces.
Boxes are read and written whole (:meth:`~BlockLabelCanvas.read`,
:meth:`~BlockLabelCanvas.write`); at most ``cache_mb`` of uncompressed blocks stay in memory
(least recently used first out, zlib-compressed in memory; blocks of zeros take nothing).
The caller announces the boxes it will write (``plan``) and reports each one done
(:meth:`~BlockLabelCanvas.done`): a block that no remaining box touches is final, goes to an
unnamed scratch file (``scratch_dir``; deleted when closed) and is passed to the
``on_final`` callbacks (overlays). Memory therefore follows the tile and cache size, not the
image: the blocks still pending are those of the boxes not yet done, compressed.

:func:`write_label_tiff` writes the canvas block by block as a tiled, zlib-compressed TIFF
(uint16 when the ids fit, else uint32), the form QuPath, ImageJ/Fiji and tifffile read.
"""

import os
import tempfile
import zlib
from collections import OrderedDict

import numpy as np

__all__ = ["BlockLabelCanvas", "write_label_tiff", "DEFAULT_BLOCK"]

DEFAULT_BLOCK = 256  # TIFF tile side (a multiple of 16)
_LEVEL = 1  # zlib level of the in-memory and scratch copies (fast; labels compress well)


class BlockLabelCanvas:
    """Label map ``(height, width)`` of uint32 ids in compressed square blocks.

    Parameters
    ----------
    height, width : int
    block : int
        Block side (a multiple of 16 so that blocks are TIFF tiles).
    cache_mb : float
        Most memory of uncompressed blocks kept between calls.
    scratch_dir : str, optional
        Folder of the scratch file of final blocks (default: the system's temporary folder).
    """

    def __init__(self, height, width, block=DEFAULT_BLOCK, cache_mb=256, scratch_dir=None):
        if block <= 0 or block % 16:
            raise ValueError(f"block must be a positive multiple of 16, got {block}")
        self.height, self.width, self.block = int(height), int(width), int(block)
        self.rows = -(-self.height // self.block)
        self.cols = -(-self.width // self.block)
        self._block_bytes = self.block * self.block * 4
        self._max_live = max(4, int(cache_mb * 2**20 // self._block_bytes))
        self._live = OrderedDict()  # key -> uint32 array (uncompressed, maybe dirty)
        self._packed = {}  # key -> zlib bytes of pending blocks (absent: zeros)
        self._final = {}  # key -> (offset, length) in the scratch file, or None for zeros
        self._pending = None  # key -> number of planned boxes still to come
        self._scratch = None
        self._scratch_dir = scratch_dir
        self.on_final = []  # callbacks f(row, col, block array), in the order blocks finish
        self.peak_live = 0

    # ------------------------------------------------------------------ blocks
    def _keys(self, box):
        x0, y0, x1, y1 = box
        b = self.block
        return [
            (r, c)
            for r in range(y0 // b, (y1 - 1) // b + 1)
            for c in range(x0 // b, (x1 - 1) // b + 1)
        ]

    def _get(self, key):
        """Uncompressed block (made live, most recently used)."""
        if key in self._final:
            raise ValueError(f"block {key} is final; it cannot be read or written again")
        arr = self._live.pop(key, None)
        if arr is None:
            packed = self._packed.pop(key, None)
            if packed is None:
                arr = np.zeros((self.block, self.block), dtype=np.uint32)
            else:
                arr = (
                    np.frombuffer(zlib.decompress(packed), dtype=np.uint32)
                    .reshape(self.block, self.block)
                    .copy()
                )
        self._live[key] = arr
        return arr

    def _evict(self, keep=()):
        while len(self._live) > self._max_live:
            for key in self._live:
                if key not in keep:
                    break
            else:
                return
            arr = self._live.pop(key)
            if arr.any():
                self._packed[key] = zlib.compress(arr.tobytes(), _LEVEL)

    def _check_box(self, box):
        x0, y0, x1, y1 = (int(v) for v in box)
        if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise ValueError(f"box {box} is not inside the {self.width}x{self.height} canvas")
        return x0, y0, x1, y1

    def read(self, box):
        """``(y1 - y0, x1 - x0)`` uint32 copy of a box ``(x0, y0, x1, y1)``."""
        x0, y0, x1, y1 = self._check_box(box)
        out = np.empty((y1 - y0, x1 - x0), dtype=np.uint32)
        b = self.block
        keys = self._keys((x0, y0, x1, y1))
        for r, c in keys:
            arr = self._get((r, c))
            ya, yb = max(y0, r * b), min(y1, (r + 1) * b)
            xa, xb = max(x0, c * b), min(x1, (c + 1) * b)
            out[ya - y0 : yb - y0, xa - x0 : xb - x0] = arr[
                ya - r * b : yb - r * b, xa - c * b : xb - c * b
            ]
        self.peak_live = max(self.peak_live, len(self._live))
        self._evict(keep=set(keys))
        return out

    def write(self, box, values):
        """Store ``values`` (``(y1 - y0, x1 - x0)`` ids) into the box ``(x0, y0, x1, y1)``."""
        x0, y0, x1, y1 = self._check_box(box)
        values = np.asarray(values)
        if values.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"values of shape {values.shape} for a box of {y1 - y0}x{x1 - x0}")
        b = self.block
        keys = self._keys((x0, y0, x1, y1))
        for r, c in keys:
            arr = self._get((r, c))
            ya, yb = max(y0, r * b), min(y1, (r + 1) * b)
            xa, xb = max(x0, c * b), min(x1, (c + 1) * b)
            arr[ya - r * b : yb - r * b, xa - c * b : xb - c * b] = values[
                ya - y0 : yb - y0, xa - x0 : xb - x0
            ]
        self.peak_live = max(self.peak_live, len(self._live))
        self._evict(keep=set(keys))

    # ------------------------------------------------------------- finishing
    def plan(self, boxes):
        """Announce every box that will be written; blocks no box touches are final now."""
        self._pending = {}
        for box in boxes:
            for key in self._keys(self._check_box(box)):
                self._pending[key] = self._pending.get(key, 0) + 1

    def done(self, box):
        """A planned box is finished: blocks no remaining box touches become final."""
        if self._pending is None:
            return
        for key in self._keys(self._check_box(box)):
            self._pending[key] -= 1
            if self._pending[key] == 0:
                del self._pending[key]
                self._finalize(key)

    def _finalize(self, key):
        arr = self._live.pop(key, None)
        if arr is None:
            packed = self._packed.pop(key, None)
            arr = (
                np.zeros((self.block, self.block), np.uint32)
                if packed is None
                else np.frombuffer(zlib.decompress(packed), np.uint32).reshape(
                    self.block, self.block
                )
            )
        else:
            packed = zlib.compress(arr.tobytes(), _LEVEL) if arr.any() else None
        if packed is None:
            self._final[key] = None
        else:
            if self._scratch is None:
                self._scratch = tempfile.TemporaryFile(dir=self._scratch_dir)
            self._scratch.seek(0, os.SEEK_END)
            self._final[key] = (self._scratch.tell(), len(packed))
            self._scratch.write(packed)
        for callback in self.on_final:
            callback(key[0], key[1], arr)

    def finish(self):
        """Make every block final (those never planned included), in row-major order."""
        for r in range(self.rows):
            for c in range(self.cols):
                if (r, c) not in self._final:
                    self._finalize((r, c))
        self._pending = {}

    def block_array(self, row, col):
        """A final block, ``(block, block)`` uint32 (zeros beyond the image)."""
        where = self._final[(row, col)]
        if where is None:
            return np.zeros((self.block, self.block), dtype=np.uint32)
        offset, length = where
        self._scratch.seek(offset)
        return np.frombuffer(zlib.decompress(self._scratch.read(length)), np.uint32).reshape(
            self.block, self.block
        )

    def iter_blocks(self, dtype=np.uint32):
        """Final blocks in row-major order (TIFF tile order), as ``dtype``."""
        for r in range(self.rows):
            for c in range(self.cols):
                yield self.block_array(r, c).astype(dtype, copy=False)

    def to_array(self, dtype=np.int32):
        """The whole map (for images that fit in memory)."""
        out = np.zeros((self.rows * self.block, self.cols * self.block), dtype=dtype)
        b = self.block
        for r in range(self.rows):
            for c in range(self.cols):
                out[r * b : (r + 1) * b, c * b : (c + 1) * b] = self.block_array(r, c)
        return out[: self.height, : self.width]

    def close(self):
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_label_tiff(path, canvas, max_id, mpp=None):
    """Write a finished :class:`BlockLabelCanvas` as a tiled zlib TIFF, block by block.

    Parameters
    ----------
    path : str or Path
        Destination (written as is; wrap it in :func:`~nucleiweak_d2.data.atomic.atomic_path`).
    canvas : BlockLabelCanvas
        After :meth:`~BlockLabelCanvas.finish`.
    max_id : int
        Largest id: uint16 when it is at most 65 535, else uint32.
    mpp : float, optional
        Pixel size in µm, stored as the TIFF resolution (pixels per centimetre).

    Returns
    -------
    numpy.dtype
        The dtype written.
    """
    import tifffile

    dtype = np.dtype(np.uint16 if max_id <= 65535 else np.uint32)
    extra = {}
    if mpp:
        extra = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(
        str(path),
        canvas.iter_blocks(dtype),
        shape=(canvas.height, canvas.width),
        dtype=dtype,
        tile=(canvas.block, canvas.block),
        compression="zlib",
        # tifffile compresses tiles in threads, buffering up to `buffersize` bytes of tiles
        # (512 MiB by default: a whole label map); keep it small
        buffersize=16 * 2**20,
        bigtiff=canvas.height * canvas.width * dtype.itemsize > 2**31,
        **extra,
    )
    return dtype
