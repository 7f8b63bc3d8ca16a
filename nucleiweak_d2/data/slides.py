"""Large images and whole slides read region by region: pyramid levels, pixel size, tissue.

Sources (:func:`open_source`):

- :class:`TiffSource`: TIFF files (``.tif .tiff .btf``, also OME-TIFF and pyramidal TIFFs
  with SubIFDs or reduced-resolution pages) read with tifffile. A region decodes only the
  tiles or strips it touches, so memory follows the region, not the file (a TIFF stored as
  one compressed strip has to be decoded whole). JPEG / JPEG 2000 compressed tiles need the
  ``imagecodecs`` package.
- :class:`OpenSlideSource`: ``.svs .ndpi .mrxs .scn .vms .vmu .bif .svslide`` through
  OpenSlide (``pip install openslide-python openslide-bin``). Without OpenSlide, TIFF-based
  formats (.svs, .ndpi, .scn, .bif) fall back to tifffile when ``imagecodecs`` is installed;
  otherwise opening one is refused with one line saying what to install.
- :class:`ArraySource`: an image already in memory (ordinary PNG/JPG/TIFF files read with
  :func:`~nucleiweak_d2.data.io.read_image`).

A :class:`SlideView` is the frame the model sees: a region (``region``, level-0 pixels) of
one pyramid level (``level``), optionally resampled to a pixel size (``mpp``, µm per pixel;
the level is then the coarsest one still at least as fine, and the rest is a resize). It
reads any box of its own pixels (``view.read``) and maps its pixel coordinates to level-0
coordinates of the slide (``view.to_slide``), the frame of QuPath.

Pixel values: uint8 as stored; other integer types are scaled by the TIFF's BitsPerSample
(``value * 255 / (2**bits - 1)``; a per-file rule, so every tile of a slide is scaled alike);
floats in [0, 1] by 255; gray becomes RGB and alpha is dropped.

:func:`tissue_mask` finds tissue on a low-resolution copy (Otsu threshold of the HSV
saturation, clamped to [0.02, 0.15] so that an image without background keeps its pale
stroma), for skipping tiles of empty glass.
"""

import math
import re
from pathlib import Path

import numpy as np

__all__ = [
    "TIFF_EXTENSIONS",
    "OPENSLIDE_EXTENSIONS",
    "SLIDE_EXTENSIONS",
    "SlideSource",
    "ArraySource",
    "TiffSource",
    "OpenSlideSource",
    "open_source",
    "SlideView",
    "make_view",
    "TissueMask",
    "tissue_mask",
    "to_rgb_uint8",
]

TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
OPENSLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
SLIDE_EXTENSIONS = TIFF_EXTENSIONS + OPENSLIDE_EXTENSIONS
_TIFF_BASED = (".svs", ".ndpi", ".scn", ".bif")  # readable by tifffile (+ imagecodecs)
_OPENSLIDE_HINT = (
    "pip install openslide-python openslide-bin, or convert the slide to a "
    "pyramidal TIFF (e.g. with QuPath or vips)"
)
_MPP_RANGE = (0.01, 100.0)  # plausible µm per pixel; other values of the metadata are ignored


def to_rgb_uint8(arr, bits=None, where="image"):
    """``(h, w, 3)`` uint8 RGB from ``(h, w)``, ``(h, w, 1..4)`` data of any numeric type.

    Integer data other than uint8 is scaled by ``bits`` (default: the dtype's size, at most
    16); floats in [0, 1] by 255, other floats clipped to [0, 255].
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(
            f"{where}: unsupported pixel layout {arr.shape} (expected gray, "
            f"gray + alpha, RGB or RGBA)"
        )
    arr = arr[..., :1] if arr.shape[2] in (1, 2) else arr[..., :3]
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == bool:
        out = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.integer):
        bits = int(bits or min(arr.dtype.itemsize * 8, 16))
        scale = 255.0 / (2**bits - 1)
        out = np.clip(np.round(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float64))
        top = float(arr.max()) if arr.size else 0.0
        out = np.clip(np.round(arr * (255.0 if top <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"{where}: unsupported pixel type {arr.dtype}")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


class SlideSource:
    """A multi-resolution image read by regions. Subclasses fill the attributes and
    :meth:`_read`.

    Attributes
    ----------
    path : str
    level_dimensions : list of tuple
        ``(width, height)`` of each level, level 0 the finest.
    level_downsamples : list of float
        Level-0 pixels per pixel of each level.
    mpp : float or None
        Level-0 pixel size in µm, from the file or given by the user.
    kind : str
        ``"tiff"``, ``"openslide"`` or ``"array"``.
    """

    kind = "base"

    def __init__(self, path, level_dimensions, level_downsamples=None, mpp=None):
        self.path = str(path)
        self.level_dimensions = [(int(w), int(h)) for w, h in level_dimensions]
        w0 = self.level_dimensions[0][0]
        self.level_downsamples = (
            list(level_downsamples)
            if level_downsamples is not None
            else [w0 / max(w, 1) for w, _ in self.level_dimensions]
        )
        self.mpp = mpp

    @property
    def level_count(self):
        return len(self.level_dimensions)

    def read(self, level, x, y, width, height):
        """``(height, width, 3)`` uint8 RGB of a box of ``level`` (its own pixels); parts
        outside the level are 0."""
        lw, lh = self.level_dimensions[level]
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise ValueError(f"empty region {width}x{height} of {self.path}")
        x0, y0 = max(int(x), 0), max(int(y), 0)
        x1, y1 = min(int(x) + width, lw), min(int(y) + height, lh)
        out = np.zeros((height, width, 3), dtype=np.uint8)
        if x1 > x0 and y1 > y0:
            part = self._read(level, x0, y0, x1 - x0, y1 - y0)
            out[y0 - int(y) : y1 - int(y), x0 - int(x) : x1 - int(x)] = part
        return out

    def _read(self, level, x, y, width, height):  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ArraySource(SlideSource):
    """One image in memory, as a single-level source."""

    kind = "array"

    def __init__(self, image, path="<array>", mpp=None):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or not image.size:
            raise ValueError(
                f"ArraySource takes a non-empty (H, W, 3) uint8 RGB image, got "
                f"{image.dtype} {image.shape}"
            )
        self.image = image
        super().__init__(path, [(image.shape[1], image.shape[0])], [1.0], mpp)

    def _read(self, level, x, y, width, height):
        return self.image[y : y + height, x : x + width]


def _tiff_mpp(tif):
    """Level-0 µm per pixel of a TIFF: SVS/OME metadata, else X resolution in cm or inch."""
    page = tif.pages[0]
    description = page.description or ""
    match = re.search(r"\bMPP\s*=\s*([0-9.eE+-]+)", description)
    candidates = [float(match.group(1))] if match else []
    ome = getattr(tif, "ome_metadata", None) if tif.is_ome else None
    if ome:
        match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', ome)
        if match and (unit is None or unit.group(1) in ("µm", "um", "micron")):
            candidates.append(float(match.group(1)))
    tag, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if tag is not None and unit is not None:
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value))  # inch, centimetre
        if per_unit and num:
            candidates.append(per_unit * den / num)
    for mpp in candidates:
        if _MPP_RANGE[0] <= mpp <= _MPP_RANGE[1]:
            return mpp
    return None


class _TiffLevel:
    """Region reading of one TIFF page by its tiles or strips."""

    def __init__(self, tif, page, path):
        self.tif, self.page, self.path = tif, page, path
        self.shaped = page.shaped  # (separate samples, depth, length, width, contig samples)
        if self.shaped[1] != 1:
            raise ValueError(
                f"{path}: volumetric TIFF pages (depth {self.shaped[1]}) are not supported"
            )
        self.height, self.width = int(self.shaped[2]), int(self.shaped[3])
        self.samples = int(self.shaped[0]) * int(self.shaped[4])
        if page.is_tiled:
            self.seg_h, self.seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_h, self.seg_w = int(page.rowsperstrip or self.height), self.width
            self.seg_h = min(self.seg_h, self.height)
        self.n_down = math.ceil(self.height / self.seg_h)
        self.n_across = math.ceil(self.width / self.seg_w)
        self.per_plane = self.n_down * self.n_across
        self.bits = int(page.bitspersample)
        self._decode = None

    def _decoder(self):
        if self._decode is None:
            try:
                self._decode = self.page.decode
            except Exception as exc:  # noqa: BLE001  (tifffile raises various types)
                raise ValueError(_codec_message(self.path, self.page, exc)) from exc
        return self._decode

    def _read_contiguous(self, x, y, width, height):
        """Rows of uncompressed, contiguous pixel data, read directly from the file."""
        page = self.page
        dtype = np.dtype(page.dtype).newbyteorder(self.tif.byteorder)
        samples = int(self.shaped[4])
        row_bytes = self.width * samples * dtype.itemsize
        out = np.empty((height, width, samples), dtype=dtype)
        fh = self.tif.filehandle
        start = int(page.dataoffsets[0])
        for r in range(height):
            fh.seek(start + (y + r) * row_bytes + x * samples * dtype.itemsize)
            out[r] = np.frombuffer(fh.read(width * samples * dtype.itemsize), dtype=dtype).reshape(
                width, samples
            )
        return out.astype(dtype.newbyteorder("="))

    def read(self, x, y, width, height):
        page = self.page
        if (
            page.is_contiguous
            and int(self.shaped[0]) == 1
            and self.bits % 8 == 0
            and page.predictor in (1, None)
            and not page.is_tiled
            and getattr(page, "fillorder", 1) == 1
        ):
            out = self._read_contiguous(x, y, width, height)
            return to_rgb_uint8(out, self.bits if self.bits < 16 else None, self.path)
        decode = self._decoder()
        n_sep, contig = int(self.shaped[0]), int(self.shaped[4])
        out = np.zeros((n_sep, height, width, contig), dtype=page.dtype)
        fh = self.tif.filehandle
        r0, r1 = y // self.seg_h, (y + height - 1) // self.seg_h
        c0, c1 = x // self.seg_w, (x + width - 1) // self.seg_w
        for s in range(n_sep):
            for r in range(r0, r1 + 1):
                for c in range(c0, c1 + 1):
                    index = s * self.per_plane + r * self.n_across + c
                    offset, count = page.dataoffsets[index], page.databytecounts[index]
                    if not count:
                        continue  # sparse segment: zeros
                    fh.seek(offset)
                    data = fh.read(count)
                    try:
                        segment, _, _ = decode(data, index, jpegtables=page.jpegtables)
                    except Exception as exc:  # noqa: BLE001
                        raise ValueError(_codec_message(self.path, page, exc)) from exc
                    if segment is None:
                        continue
                    segment = np.asarray(segment)[0]  # (length, width, contig samples)
                    sy, sx = r * self.seg_h, c * self.seg_w
                    ya, yb = max(sy, y), min(sy + segment.shape[0], y + height, self.height)
                    xa, xb = max(sx, x), min(sx + segment.shape[1], x + width, self.width)
                    if ya >= yb or xa >= xb:
                        continue
                    out[s, ya - y : yb - y, xa - x : xb - x] = segment[
                        ya - sy : yb - sy, xa - sx : xb - sx, :contig
                    ]
        if n_sep > 1:  # planar configuration: planes become channels
            out = np.moveaxis(out[..., 0], 0, -1)
        else:
            out = out[0]
        return to_rgb_uint8(out, self.bits if self.bits < 16 else None, self.path)


def _codec_message(path, page, exc):
    compression = getattr(page.compression, "name", page.compression)
    hint = ""
    if "imagecodecs" in str(exc) or compression not in (
        "NONE",
        "ADOBE_DEFLATE",
        "DEFLATE",
        "LZW",
        "PACKBITS",
    ):
        hint = " (install imagecodecs: pip install imagecodecs)"
    return f"cannot decode {compression} data of {path}: {exc}{hint}"


class TiffSource(SlideSource):
    """A TIFF file read region by region with tifffile (pyramid levels of its first series)."""

    kind = "tiff"

    def __init__(self, path, mpp=None):
        import tifffile

        self.tif = None
        try:
            self.tif = tifffile.TiffFile(str(path))
            series = self.tif.series[0]
            levels = list(series.levels) if len(series.levels) > 1 else [series]
            self.levels = [
                _TiffLevel(
                    self.tif, level.keyframe if hasattr(level, "keyframe") else level.pages[0], path
                )
                for level in levels
            ]
        except Exception as exc:  # noqa: BLE001  (any reader error becomes one line)
            if self.tif is not None:
                self.tif.close()
            if isinstance(exc, ValueError) and str(path) in str(exc):
                raise
            raise ValueError(f"cannot read {path}: {exc}") from exc
        dims = [(lv.width, lv.height) for lv in self.levels]
        super().__init__(path, dims, None, mpp or _tiff_mpp(self.tif))

    def _read(self, level, x, y, width, height):
        return self.levels[level].read(x, y, width, height)

    def close(self):
        self.tif.close()


class OpenSlideSource(SlideSource):
    """A whole-slide image read with OpenSlide."""

    kind = "openslide"

    def __init__(self, path, mpp=None):
        import openslide

        try:
            self.slide = openslide.OpenSlide(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"cannot open slide {path} with OpenSlide: {exc}") from exc
        props = self.slide.properties
        found = None
        try:
            found = float(props.get("openslide.mpp-x"))
        except (TypeError, ValueError):
            pass
        if found is not None and not _MPP_RANGE[0] <= found <= _MPP_RANGE[1]:
            found = None
        super().__init__(
            path, self.slide.level_dimensions, self.slide.level_downsamples, mpp or found
        )

    def _read(self, level, x, y, width, height):
        ds = self.level_downsamples[level]
        region = self.slide.read_region(
            (int(round(x * ds)), int(round(y * ds))), level, (int(width), int(height))
        )
        rgba = np.asarray(region, dtype=np.uint8)
        rgb = rgba[..., :3].astype(np.float32)
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        # premultiplied RGBA over white (transparent = outside the scanned area)
        return np.clip(np.round(rgb + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)

    def close(self):
        self.slide.close()


def _has_module(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def open_source(path, *, mpp=None, prefer_array=False):
    """Open an image or slide for region reading.

    Parameters
    ----------
    path : str or Path
    mpp : float, optional
        Level-0 pixel size in µm when the file does not record it (or to override it).
    prefer_array : bool
        Read a TIFF whole with :func:`~nucleiweak_d2.data.io.read_image` (as training does)
        instead of region by region.

    Returns
    -------
    SlideSource

    Raises
    ------
    ValueError
        One line naming the file: unreadable, an OpenSlide format without OpenSlide, ...
    """
    from .io import IMAGE_EXTENSIONS, read_image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_EXTENSIONS:
        if _has_module("openslide"):
            return OpenSlideSource(path, mpp)
        if suffix in _TIFF_BASED and _has_module("imagecodecs"):
            return TiffSource(path, mpp)
        raise ValueError(
            f"reading {suffix} slides needs OpenSlide, which is not installed: "
            f"{_OPENSLIDE_HINT} ({path})"
        )
    if suffix in TIFF_EXTENSIONS and not prefer_array:
        return TiffSource(path, mpp)
    if suffix in IMAGE_EXTENSIONS:
        return ArraySource(read_image(path), path, mpp)
    raise ValueError(f"unsupported image or slide format {suffix!r}: {path}")


def _resize(image, size, box):
    """PIL resize of ``image`` (uint8 RGB) to ``size`` (w, h) from the float ``box``."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, box=box))


class SlideView:
    """The frame a model sees: a region of one level of a source, optionally resampled.

    Build it with :func:`make_view`. Its pixel ``(c, r)`` of the view covers level-0
    coordinates ``origin + [c, c + 1) * downsample`` (and the same in y).

    Attributes
    ----------
    source : SlideSource
    level : int
    scale : float
        View pixels per level pixel (1: no resampling).
    origin : tuple of float
        Level-0 ``(x, y)`` of the view's top-left corner.
    width, height : int
        Size of the view.
    downsample : float
        Level-0 pixels per view pixel.
    mpp : float or None
        µm per view pixel when the source's pixel size is known.
    """

    def __init__(self, source, level, scale, origin, width, height):
        self.source, self.level, self.scale = source, int(level), float(scale)
        self.origin = (float(origin[0]), float(origin[1]))
        self.width, self.height = int(width), int(height)
        self.level_downsample = float(source.level_downsamples[self.level])
        self.downsample = self.level_downsample / self.scale
        self.mpp = None if source.mpp is None else source.mpp * self.downsample
        # The view's origin in level pixels (the region is given in level-0 pixels).
        self._level_origin = (
            self.origin[0] / self.level_downsample,
            self.origin[1] / self.level_downsample,
        )

    @property
    def shape(self):
        return (self.height, self.width)

    @property
    def is_whole_image(self):
        """True when the view is the whole level-0 image without resampling."""
        return (
            self.level == 0
            and self.scale == 1.0
            and self.origin == (0.0, 0.0)
            and (self.width, self.height) == self.source.level_dimensions[0]
        )

    def read(self, x0, y0, x1, y1):
        """``(y1 - y0, x1 - x0, 3)`` uint8 RGB of a box of view pixels."""
        w, h = int(x1 - x0), int(y1 - y0)
        lx, ly = self._level_origin
        if self.scale == 1.0:
            return self.source.read(self.level, int(round(lx)) + x0, int(round(ly)) + y0, w, h)
        # level coordinates of the box, read with a margin for the filter, then resampled
        fx0, fy0 = lx + x0 / self.scale, ly + y0 / self.scale
        fx1, fy1 = lx + x1 / self.scale, ly + y1 / self.scale
        margin = int(math.ceil(2 / min(self.scale, 1.0))) + 1
        lw, lh = self.source.level_dimensions[self.level]
        ix0, iy0 = int(math.floor(fx0)) - margin, int(math.floor(fy0)) - margin
        ix1, iy1 = int(math.ceil(fx1)) + margin, int(math.ceil(fy1)) + margin
        # read inside the level only; beyond it the edge pixels are repeated (not black)
        rx0, ry0 = min(max(ix0, 0), lw - 1), min(max(iy0, 0), lh - 1)
        rx1, ry1 = max(min(ix1, lw), rx0 + 1), max(min(iy1, lh), ry0 + 1)
        patch = self.source.read(self.level, rx0, ry0, rx1 - rx0, ry1 - ry0)
        pads = (
            (max(ry0 - iy0, 0), max(iy1 - ry1, 0)),
            (max(rx0 - ix0, 0), max(ix1 - rx1, 0)),
            (0, 0),
        )
        if any(p for pair in pads for p in pair):
            patch = np.pad(patch, pads, mode="edge")
        ix0, iy0 = rx0 - pads[1][0], ry0 - pads[0][0]
        return _resize(patch, (w, h), (fx0 - ix0, fy0 - iy0, fx1 - ix0, fy1 - iy0))

    def to_slide(self, xy):
        """Level-0 slide coordinates of view coordinates ``(..., 2)`` ``[x, y]`` (continuous)."""
        xy = np.asarray(xy, dtype=np.float64)
        return xy * self.downsample + np.asarray(self.origin)

    def describe(self):
        """A few words for messages: level, size, pixel size."""
        mpp = f", {self.mpp:.3f} µm/px" if self.mpp else ""
        scale = f", resampled x{self.scale:.3f}" if self.scale != 1.0 else ""
        region = (
            ""
            if self.origin == (0.0, 0.0)
            else f", region at ({self.origin[0]:.0f}, {self.origin[1]:.0f})"
        )
        return f"level {self.level}{scale}{region}: {self.width}x{self.height} px{mpp}"


def choose_level(source, mpp):
    """``(level, scale)`` for a target pixel size: the coarsest level whose pixels are at
    most ``mpp`` (never upsampled from a coarser level), and the resampling to ``mpp``."""
    if source.mpp is None:
        raise ValueError(
            f"--mpp {mpp} needs the pixel size of {source.path}, which its "
            f"metadata does not give; pass --slide-mpp (µm per level-0 pixel)"
        )
    best = 0
    for level, ds in enumerate(source.level_downsamples):
        if source.mpp * ds <= mpp * (1 + 1e-3):
            best = level
    level_mpp = source.mpp * source.level_downsamples[best]
    scale = level_mpp / mpp
    if abs(scale - 1.0) < 1e-3:
        scale = 1.0
    return best, scale


def make_view(source, *, level=None, mpp=None, region=None):
    """The processing frame of a source.

    Parameters
    ----------
    source : SlideSource
    level : int, optional
        Pyramid level (0 = full resolution). Default: 0, or chosen by ``mpp``.
    mpp : float, optional
        Target µm per pixel: the level (unless given) and the resampling factor follow.
    region : tuple of int, optional
        ``(x, y, width, height)`` in level-0 pixels (QuPath's coordinates); default the whole
        image.

    Returns
    -------
    SlideView

    Raises
    ------
    ValueError
        A level that does not exist, a region outside the image or empty, a non-positive
        ``mpp``, an ``mpp`` without a known pixel size.
    """
    if level is not None and not 0 <= int(level) < source.level_count:
        raise ValueError(
            f"--level {level} does not exist in {source.path}: it has "
            f"{source.level_count} level(s) "
            f"{[f'{w}x{h}' for w, h in source.level_dimensions]}"
        )
    if mpp is not None and not float(mpp) > 0:
        raise ValueError(f"--mpp must be > 0, got {mpp}")
    if mpp is not None and level is None:
        level, scale = choose_level(source, float(mpp))
    else:
        level = int(level or 0)
        scale = 1.0
        if mpp is not None:
            if source.mpp is None:
                choose_level(source, float(mpp))  # raises the message
            scale = source.mpp * source.level_downsamples[level] / float(mpp)
    w0, h0 = source.level_dimensions[0]
    if region is None:
        x, y, w, h = 0, 0, w0, h0
    else:
        x, y, w, h = (int(v) for v in region)
        if w <= 0 or h <= 0:
            raise ValueError(f"--region needs a positive width and height, got {w}x{h}")
        if x < 0 or y < 0 or x + w > w0 or y + h > h0:
            raise ValueError(
                f"--region {x} {y} {w} {h} is not inside the {w0}x{h0} level-0 "
                f"image of {source.path}"
            )
    ds = source.level_downsamples[level] / scale
    width, height = max(int(round(w / ds)), 1), max(int(round(h / ds)), 1)
    if region is None and scale == 1.0:  # exactly the level's own size
        width, height = source.level_dimensions[level]
    return SlideView(source, level, scale, (x, y), width, height)


def thumbnail(view, factor):
    """The view downsampled by an integer ``factor``, read from the coarsest pyramid level
    at least as fine and resized (PIL bilinear with antialiasing), chunk by chunk."""
    factor = max(int(factor), 1)
    tw, th = math.ceil(view.width / factor), math.ceil(view.height / factor)
    src = view.source
    ds_needed = view.downsample * factor
    level = 0
    for k, ds in enumerate(src.level_downsamples):
        if ds <= ds_needed * (1 + 1e-3):
            level = k
    sub = SlideView(src, level, src.level_downsamples[level] / ds_needed, view.origin, tw, th)
    out = np.zeros((th, tw, 3), dtype=np.uint8)
    step = 2048
    for y in range(0, th, step):
        for x in range(0, tw, step):
            out[y : y + step, x : x + step] = sub.read(x, y, min(x + step, tw), min(y + step, th))
    return out


class TissueMask:
    """A boolean tissue map at low resolution and its mapping to view pixels.

    ``mask[r, c]`` covers view pixels ``[c, c + 1) * factor`` x ``[r, r + 1) * factor``.
    """

    def __init__(self, mask, factor):
        self.mask, self.factor = np.asarray(mask, dtype=bool), int(factor)

    def any_in(self, box):
        """Whether the view box ``(x0, y0, x1, y1)`` holds tissue."""
        x0, y0, x1, y1 = box
        f = self.factor
        return bool(self.mask[y0 // f : -(-y1 // f), x0 // f : -(-x1 // f)].any())

    @property
    def fraction(self):
        return float(self.mask.mean()) if self.mask.size else 0.0


def tissue_mask(view, max_side=2048, margin=0):
    """Tissue of a view, by Otsu's threshold on the saturation of a low-resolution copy.

    Parameters
    ----------
    view : SlideView
    max_side : int
        Longest side of the low-resolution copy (its factor is the smallest integer that
        brings the view under it).
    margin : int
        Dilation of the tissue in view pixels (e.g. the tile overlap), so that nuclei at the
        tissue border are not cut off by skipped tiles.

    Returns
    -------
    TissueMask
        Saturation above the Otsu threshold clamped to [0.02, 0.15] (white glass has a
        saturation below ~0.05, H&E tissue above ~0.15; the clamp keeps pale stroma of an
        image without background), holes filled, specks under 16 low-resolution pixels
        removed.
    """
    from scipy import ndimage
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu

    factor = max(1, math.ceil(max(view.width, view.height) / max_side))
    thumb = thumbnail(view, factor)
    sat = rgb2hsv(thumb)[..., 1]
    try:
        threshold = float(threshold_otsu(sat))
    except ValueError:  # a constant image
        threshold = 0.15
    threshold = min(max(threshold, 0.02), 0.15)
    mask = sat > threshold
    mask = ndimage.binary_closing(mask, iterations=2, border_value=0) | mask
    mask = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n:
        sizes = ndimage.sum(mask, labels, np.arange(1, n + 1))
        mask = np.isin(labels, np.flatnonzero(sizes >= 16) + 1)
    if margin > 0:
        mask = ndimage.binary_dilation(mask, iterations=int(math.ceil(margin / factor)))
    return TissueMask(mask, factor)
