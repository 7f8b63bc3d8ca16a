"""Reading and writing images and instance label maps (numpy, Pillow, tifffile).

Every reader raises a ``ValueError`` that names the offending file, so a bad file in a
dataset folder is easy to find.
"""

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


def _to_uint8(arr, path):
    """Scale an array of any supported dtype to uint8 (16-bit: full range, value / 257)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16 or (
        np.issubdtype(arr.dtype, np.integer)
        and arr.min() >= 0
        and arr.max() <= 65535
        and arr.max() > 255
    ):
        return np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"integer image {path} has values outside [0, 65535]")
        return arr.astype(np.uint8)
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
        dropped, 16-bit data is scaled by ``1/257`` (full 16-bit range to 0..255), float data in
        [0, 1] is scaled by 255. Channel-first TIFs ``(3, H, W)`` are transposed.

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
            f"image for {path} must be non-empty (H, W, 3) uint8, got "
            f"{image.dtype} {image.shape}"
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


def read_xy_csv(path):
    """Points ``x,y`` from a text file: one per line (``,`` or ``;``), an optional header on
    the first line, ``#`` comments and blank lines skipped; extra columns are ignored.

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
        Naming the file when it cannot be read, or the file and line of a line that is not
        ``x,y``.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read points file {path}: {exc}") from exc
    points, numbers = [], []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(";", ",").split(",")
        try:
            points.append([float(parts[0]), float(parts[1])])
        except (ValueError, IndexError):
            if number == 1:  # header such as "x,y"
                continue
            raise ValueError(
                f"points file {path} line {number}: expected 'x,y', got {line!r}"
            ) from None
        numbers.append(number)
    return np.asarray(points, dtype=np.float64).reshape(-1, 2), np.asarray(numbers, dtype=np.int64)
