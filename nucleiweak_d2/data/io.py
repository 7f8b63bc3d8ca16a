"""Reading and writing images and instance label maps (numpy, Pillow, tifffile).

Every reader raises a ``ValueError`` that names the offending file, so a bad file in a
dataset folder is easy to find.
"""

import csv
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "read_xy_csv",
    "IMAGE_EXTENSIONS",
    "LABEL_EXTENSIONS",
    "read_image",
    "read_label",
    "write_label",
    "write_image",
    "image_size",
    "bit_depth",
    "check_image_decodes",
]

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
LABEL_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")
_TIFF = (".tif", ".tiff")


def _read_array(path):
    """Read ``path`` into a numpy array without any conversion; ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    try:
        suffix = path.suffix.lower()
        if suffix in _TIFF:
            import tifffile

            arr = tifffile.imread(str(path))
        elif suffix == ".npy":
            arr = np.load(str(path), allow_pickle=False)
        else:
            with Image.open(path) as im:
                if im.mode in ("P", "PA"):
                    arr = np.array(im.convert("RGBA" if "transparency" in im.info else "RGB"))
                elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                    arr = np.array(im.convert("L" if im.mode == "1" else "RGB"))
                else:
                    arr = np.array(im)
    except Exception as exc:  # noqa: BLE001  (any decoder error becomes a ValueError)
        raise ValueError(f"cannot read {path}: {exc}") from exc
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ValueError(f"empty image in {path}")
    return arr


#: Bit depths tried, smallest first, for integer images with values above 255.
BIT_DEPTHS = (8, 10, 12, 14, 16)


def bit_depth(arr):
    """Bit depth assumed for an integer image: the smallest of 8, 10, 12, 14 and 16 bits
    whose range ``0 .. 2**bits - 1`` holds the image's maximum.

    A camera or scanner writing 12-bit data stores it in 16-bit containers; scaling by the
    container (``1/257``) would make such an image nearly black. The rule looks at one image
    only, so it is deterministic per image (but two tiles of one slide whose maxima fall on
    either side of a limit, e.g. 4095 and 4100, are scaled differently).
    """
    top = int(arr.max()) if arr.size else 0
    for bits in BIT_DEPTHS:
        if top <= 2**bits - 1:
            return bits
    raise ValueError(f"integer values up to {top} exceed 16 bits")


def _to_uint8(arr, path):
    """Scale an array of any supported dtype to uint8.

    Integer data is scaled by its :func:`bit_depth`: ``value / (2**bits - 1) * 255``, rounded
    (8-bit data, including 8-bit data in a 16-bit container, is kept as is). Bool becomes
    0/255; float data in [0, 1] is scaled by 255, other floats are rounded and clipped.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"integer image {path} has values outside [0, 65535]")
        bits = bit_depth(arr)
        if bits == 8:
            return arr.astype(np.uint8)
        return np.round(arr.astype(np.float64) * (255.0 / (2**bits - 1))).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"float image {path} contains NaN or inf")
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {arr.dtype} in {path}")


def read_image(path):
    """Read an image file as RGB uint8.

    Parameters
    ----------
    path : str or Path
        PNG, TIF, JPG or BMP file. Grayscale is replicated to 3 channels, an alpha channel is
        dropped, channel-first TIFs ``(3, H, W)`` are transposed. Integer data above 8 bits
        is scaled by its bit depth (:func:`bit_depth`: the smallest of 8, 10, 12, 14, 16 bits
        that holds the image's maximum, so 12-bit data with maximum 4095 becomes 255); float
        data in [0, 1] is scaled by 255.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8 RGB.

    Raises
    ------
    ValueError
        When the file is missing, unreadable, empty or of an unsupported layout.
    """
    arr = _read_array(path)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # gray or gray + alpha
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., :3]
    else:
        raise ValueError(f"unsupported image layout {arr.shape} in {path}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image in {path}")
    return np.ascontiguousarray(_to_uint8(arr, path))


def read_label(path):
    """Read an integer instance label map (0 = background).

    Parameters
    ----------
    path : str or Path
        16-bit or 8-bit PNG, TIF or ``.npy``. A 3-channel file is accepted only when its three
        channels are identical.

    Returns
    -------
    np.ndarray
        ``(H, W)`` int32.

    Raises
    ------
    ValueError
        When the file is missing or unreadable, holds floats (even integral ones: a float map
        usually means a probability or resized map), negative values, or is not 2-D.
    """
    arr = _read_array(path)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        if not (
            np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
        ):
            raise ValueError(
                f"label map {path} is a colour image; expected an integer instance map"
            )
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"label map {path} has shape {arr.shape}; expected (H, W)")
    if arr.dtype == bool:
        return arr.astype(np.int32)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"label map {path} has dtype {arr.dtype}; expected an integer instance map"
        )
    if arr.min() < 0:
        raise ValueError(f"label map {path} has negative values")
    if arr.max() > np.iinfo(np.int32).max:
        raise ValueError(f"label map {path} has ids beyond int32")
    return arr.astype(np.int32)


def write_label(path, label):
    """Write an instance label map as a 16-bit PNG.

    Parameters
    ----------
    path : str or Path
        Destination, must end in ``.png``; parent folders are created.
    label : np.ndarray
        ``(H, W)`` integer or bool array with values in [0, 65535].
    """
    path = Path(path)
    label = np.asarray(label)
    if path.suffix.lower() != ".png":
        raise ValueError(f"write_label writes 16-bit PNG; got path {path}")
    if label.ndim != 2 or label.size == 0:
        raise ValueError(
            f"label for {path} must be a non-empty (H, W) array, got shape {label.shape}"
        )
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        raise ValueError(f"label for {path} has dtype {label.dtype}; expected integers")
    if label.size and (label.min() < 0 or label.max() > 65535):
        raise ValueError(f"label for {path} has values outside [0, 65535]")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint16)).save(path)


def write_image(path, image):
    """Write an ``(H, W, 3)`` uint8 RGB image (format from the suffix; parents created)."""
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ValueError(
            f"image for {path} must be non-empty (H, W, 3) uint8, got {image.dtype} {image.shape}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in _TIFF:
        import tifffile

        tifffile.imwrite(str(path), image)
    else:
        Image.fromarray(image).save(path)


def image_size(path):
    """Return ``(height, width, dtype_kind)`` of an image or label file from its header.

    ``dtype_kind`` is numpy's kind character (``"u"``, ``"i"``, ``"f"``, ``"b"``), so callers
    can reject float label maps without decoding them. Raises ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in _TIFF:
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                page = tif.pages[0]
                shape, kind = page.shape, np.dtype(page.dtype).kind
            if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 2, 3, 4):
                shape = shape[1:]
        elif suffix == ".npy":
            arr = np.load(str(path), mmap_mode="r", allow_pickle=False)
            shape, kind = arr.shape, arr.dtype.kind
        else:
            with Image.open(path) as im:
                width, height = im.size
                shape = (height, width)
                kind = "f" if im.mode == "F" else ("b" if im.mode == "1" else "u")
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if len(shape) < 2 or shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"empty image in {path}")
    return int(shape[0]), int(shape[1]), kind


def check_image_decodes(path):
    """Fully decode an image file once, so that a truncated or corrupt file fails now.

    File headers (read by :func:`image_size` when a dataset is listed) can be intact while
    the pixel data is cut off; such a file would only fail in the middle of training.

    Parameters
    ----------
    path : str or Path

    Raises
    ------
    ValueError
        ``"cannot decode image <path>: <reason>"``.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF:
            import tifffile

            tifffile.imread(str(path))
        elif path.suffix.lower() == ".npy":
            np.load(str(path), allow_pickle=False)
        else:
            with Image.open(path) as im:
                im.load()
    except Exception as exc:  # noqa: BLE001  (any decoder error becomes a ValueError)
        raise ValueError(f"cannot decode image {path}: {exc}") from exc


# Column names of points files, after _normalise_column (lower case, units in brackets and
# "_" turned into spaces). Pixel columns are taken; columns in physical units are refused.
_PIXEL_COLUMN = re.compile(r"^(?:centroid )?([xy])(?: (?:px|pixels?))?$")
_PHYSICAL_COLUMN = re.compile(r"^(?:centroid )?([xy]) (?:µm|μm|um|microns?|micrometers?|mm|nm)$")
_DELIMITERS = ("\t", ",", ";")
_ACCEPTED = "x/y, X/Y or Centroid X px/Centroid Y px"


def _normalise_column(name):
    """``"Centroid X [µm]"`` -> ``"centroid x µm"``: lower case, no quotes/brackets/``_``."""
    name = name.strip().strip("\"'").lower()
    name = re.sub(r"[()\[\]_]", " ", name)
    return " ".join(name.split())


def _split_fields(line, delimiter):
    """Fields of one line (quotes allowed), trailing empty fields dropped."""
    fields = next(csv.reader([line], delimiter=delimiter))
    while fields and not fields[-1].strip():
        fields.pop()
    return [f.strip() for f in fields]


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header_columns(fields, path):
    """Indices ``(ix, iy)`` of the pixel x and y columns of a header line."""
    found = {"x": [], "y": []}
    physical = {"x": [], "y": []}
    for index, field in enumerate(fields):
        name = _normalise_column(field)
        match = _PIXEL_COLUMN.match(name)
        if match:
            found[match.group(1)].append(index)
        elif _PHYSICAL_COLUMN.match(name):
            physical[_PHYSICAL_COLUMN.match(name).group(1)].append(index)
    for axis in ("x", "y"):
        if len(found[axis]) > 1:
            names = ", ".join(repr(fields[i]) for i in found[axis])
            raise ValueError(
                f"points file {path} has several {axis} columns ({names}); keep exactly one"
            )
        if not found[axis]:
            if physical[axis]:
                raise ValueError(
                    f"points file {path}: column {fields[physical[axis][0]]!r} is in physical "
                    f"units; pixel columns are needed ({_ACCEPTED}; e.g. export QuPath "
                    f"measurements in pixels or divide by the pixel size)"
                )
            raise ValueError(
                f"points file {path} has no {axis} column in its header {fields}; expected "
                f"columns named {_ACCEPTED} (case-insensitive), or no header and exactly 2 "
                f"columns x,y"
            )
    return found["x"][0], found["y"][0]


def _read_lines(path):
    """``[(line_number, text)]`` of the non-blank, non-comment lines of a text file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read points file {path}: {exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # e.g. a "µm" header written by a Windows tool
    return [
        (number, line)
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]


def read_xy_csv(path):
    """Points ``(x, y)`` in pixels from a CSV/TSV file, columns found by their header.

    Accepted layouts (blank lines and ``#`` comments are skipped; the delimiter is a tab,
    ``,`` or ``;``, the first of these found on the first line):

    - a header naming the columns: ``x``/``y``, ``X``/``Y``, ``Centroid X px``/
      ``Centroid Y px`` (case-insensitive; ``_`` and brackets count as spaces, so
      ``centroid_x`` and ``X (px)`` are accepted too). Other columns (an ImageJ index, a
      QuPath class, ...) are ignored, and the columns may come in any order (``y,x`` works).
      Columns in physical units (``Centroid X µm``) are refused: pixels are needed.
    - no header (the first line is numeric) and exactly 2 columns, read as ``x,y``.

    Coordinates may be floats (as QuPath and ImageJ write them); they are returned as is.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    points : np.ndarray
        ``(N, 2)`` float64 ``(x, y)``; ``N`` may be 0.
    line_numbers : np.ndarray
        ``(N,)`` 1-based line of each point, for error messages of stricter readers.

    Raises
    ------
    ValueError
        One line naming the file: unreadable file; a header without exactly one pixel x and
        one pixel y column; a header-less file with other than 2 columns; a line (named)
        whose x or y is missing, not a number, NaN or infinite.
    """
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        return np.zeros((0, 2), dtype=np.float64), np.zeros(0, dtype=np.int64)
    first = lines[0][1]
    delimiter = next((d for d in _DELIMITERS if d in first), ",")
    fields = _split_fields(first, delimiter)
    if all(_is_number(f) for f in fields):  # no header
        if len(fields) != 2:
            raise ValueError(
                f"points file {path} has {len(fields)} columns and no header; expected a "
                f"header naming the x and y columns ({_ACCEPTED}) or exactly 2 columns x,y"
            )
        ix, iy, body = 0, 1, lines
    else:
        (ix, iy), body = _header_columns(fields, path), lines[1:]
    return _parse_rows(body, delimiter, ix, iy, path)


def _parse_rows(lines, delimiter, ix, iy, path):
    """Parse the x and y columns of the data lines (see :func:`read_xy_csv`)."""
    points, numbers = [], []
    for number, line in lines:
        fields = _split_fields(line, delimiter)
        try:
            x, y = float(fields[ix]), float(fields[iy])
        except (ValueError, IndexError):
            raise ValueError(
                f"points file {path} line {number}: expected numbers in columns {ix + 1} (x) "
                f"and {iy + 1} (y), got {line.strip()!r}"
            ) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(
                f"points file {path} line {number}: x and y must be finite, got {line.strip()!r}"
            )
        points.append((x, y))
        numbers.append(number)
    return np.asarray(points, dtype=np.float64).reshape(-1, 2), np.asarray(numbers, dtype=np.int64)
