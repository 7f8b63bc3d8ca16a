"""Augmentations for nuclei images that Detectron2 lacks.

Rot90 and relative random resize; any-angle rotation with an affine perturbation, elastic
deformation and crops centred near annotated points (Qu et al. 2020's training augmentation).

Conventions, shared by every transform of this module:

* Coordinates follow Detectron2: continuous ``(x, y)`` with pixel centres at ``+0.5``, so
  ``apply_coords`` maps the centre of a pixel to the centre of the pixel it moves to. Pixel
  ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``.
* ``apply_image`` resamples bilinearly, channel by channel; it accepts ``(H, W)`` or
  ``(H, W, C)`` arrays of any dtype (uint8 images, float32 coordinate grids, ...) and returns
  the input's dtype (integers rounded and clipped to their range).
* ``apply_segmentation`` resamples with the nearest neighbour (the source pixel that contains
  the source point), so label values are copied, never interpolated.
* An output pixel whose source point lies outside the source image (``x`` not in ``[0, W)`` or
  ``y`` not in ``[0, H)``) is filled: images with 0 (pure black, which the CRF loss takes for
  padding; for float grids it is 0 too), segmentations with ``seg_fill`` (default 2, the
  ignore label of the two-class target maps). The fill is the same for *every* map moved by
  ``apply_segmentation``, including float32 instance-id maps whose background is 0: a mapper
  that moves such a map through :class:`AffineTransform` or :class:`ElasticTransform` must
  take the fill into account (the lead checks the mappers).
"""

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform, Transform
from PIL import Image
from scipy.ndimage import gaussian_filter

__all__ = [
    "Rot90Transform",
    "RandomRot90",
    "RandomScale",
    "ResizeCropTransform",
    "RandomScaledCrop",
    "AffineTransform",
    "RandomAffine",
    "ElasticTransform",
    "RandomElastic",
    "RandomCropAtPoints",
    "CenterCrop",
    "NucleiAugInput",
    "build_nuclei_augmentation",
]


class Rot90Transform(Transform):
    """Rotate by ``k`` quarter turns counter-clockwise, like ``np.rot90(image, k)``.

    Parameters
    ----------
    h, w : int
        Input image size.
    k : int
        Number of counter-clockwise quarter turns (taken modulo 4).
    """

    def __init__(self, h, w, k):
        super().__init__()
        self._set_attributes({"h": int(h), "w": int(w), "k": int(k) % 4})

    def apply_image(self, img):
        assert img.shape[:2] == (self.h, self.w), (img.shape, self.h, self.w)
        return np.ascontiguousarray(np.rot90(img, self.k, axes=(0, 1)))

    def apply_coords(self, coords):
        coords = np.asarray(coords, dtype=np.float64).copy()
        width = self.w
        height = self.h
        for _ in range(self.k):
            # one CCW turn: pixel (row r, col c) -> (row W-1-c, col r); centres: (x, y) -> (y, W-x)
            x = coords[:, 0].copy()
            coords[:, 0] = coords[:, 1]
            coords[:, 1] = width - x
            width, height = height, width
        return coords

    def apply_segmentation(self, segmentation):
        return self.apply_image(segmentation)

    def inverse(self):
        new_h, new_w = (self.w, self.h) if self.k % 2 else (self.h, self.w)
        return Rot90Transform(new_h, new_w, (4 - self.k) % 4)


class RandomRot90(T.Augmentation):
    """Rotate by 0, 90, 180 or 270 degrees, chosen uniformly."""

    def get_transform(self, image):
        k = int(np.random.randint(4))
        if k == 0:
            return NoOpTransform()
        return Rot90Transform(image.shape[0], image.shape[1], k)


class _WritableResize(T.ResizeTransform):
    """``ResizeTransform`` that returns a writable array (PIL's output is read-only, which makes
    the flips that follow warn when they wrap it in a torch tensor)."""

    def apply_image(self, img, interp=None):
        return np.array(super().apply_image(img, interp))


class RandomScale(T.Augmentation):
    """Resize by a factor drawn uniformly in ``[min_scale, max_scale]`` (both axes alike).

    Qu et al. resize by a random factor in [0.8, 1.25] before cropping.
    """

    def __init__(self, min_scale, max_scale):
        super().__init__()
        if not (0 < min_scale <= max_scale):
            raise ValueError(
                f"RandomScale needs 0 < min_scale <= max_scale, got {min_scale}, {max_scale}"
            )
        self._init(locals())

    def get_transform(self, image):
        scale = np.random.uniform(self.min_scale, self.max_scale)
        h, w = image.shape[:2]
        new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        if (new_h, new_w) == (h, w):
            return NoOpTransform()
        return _WritableResize(h, w, new_h, new_w)


class ResizeCropTransform(Transform):
    """``ResizeTransform(h, w, new_h, new_w)`` then ``CropTransform(x0, y0, cw, ch)``, one step.

    A uint8 array (an RGB image, a label map) is resampled on the crop alone (PIL's ``resize``
    with the crop's source ``box``), about 20x less work than resizing a whole 1000 x 1000
    tile for a 279 x 279 crop. The output pixels have the same source positions as those of
    the two steps; PIL's fixed-point rounding differs (bilinear: at most 2 grey levels, on 1-12
    % of the pixels; nearest: a pixel centre that falls on a source pixel edge may take the
    neighbour).
    Any other dtype goes through the two steps (exact). Coordinates are moved exactly as by the
    two steps, polygons are clipped to the crop as by ``CropTransform``.
    """

    def __init__(self, h, w, new_h, new_w, x0, y0, cw, ch, interp=None):
        super().__init__()
        if interp is None:
            interp = Image.BILINEAR
        if not (0 <= x0 and x0 + cw <= new_w and 0 <= y0 and y0 + ch <= new_h):
            raise ValueError(
                f"crop ({x0}, {y0}, {cw}, {ch}) does not fit the resized {new_w}x{new_h} image"
            )
        self._set_attributes(locals())

    def steps(self):
        """The two transforms this one stands for."""
        resize = _WritableResize(self.h, self.w, self.new_h, self.new_w, self.interp)
        return resize, T.CropTransform(self.x0, self.y0, self.cw, self.ch)

    def apply_image(self, img, interp=None):
        interp = self.interp if interp is None else interp
        if img.dtype != np.uint8 or img.ndim > 3 or img.shape[:2] != (self.h, self.w):
            resize, crop = self.steps()  # (a wrong shape fails there, as in ResizeTransform)
            return crop.apply_image(resize.apply_image(img, interp))
        sx, sy = self.w / self.new_w, self.h / self.new_h
        box = (self.x0 * sx, self.y0 * sy, (self.x0 + self.cw) * sx, (self.y0 + self.ch) * sy)
        single = img.ndim == 3 and img.shape[2] == 1
        pil = Image.fromarray(np.ascontiguousarray(img[:, :, 0] if single else img))
        out = np.array(pil.resize((self.cw, self.ch), interp, box=box))
        return out[:, :, None] if single else out

    def apply_segmentation(self, segmentation):
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def apply_coords(self, coords):
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w) - self.x0
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h) - self.y0
        return coords

    def apply_polygons(self, polygons):
        resize, crop = self.steps()
        return crop.apply_polygons(resize.apply_polygons(polygons))


class RandomScaledCrop(T.Augmentation):
    """:class:`RandomScale` followed by a crop, as one :class:`ResizeCropTransform`.

    Draws exactly what the two augmentations in a row draw (the scale, then the crop of
    ``crop`` on the resized image, with the points moved by the resize), so a seed gives the
    same scale and window as before; only the resampling is restricted to the window.

    Parameters
    ----------
    min_scale, max_scale : float
        Range of :class:`RandomScale`.
    crop : RandomCropAtPoints or detectron2.data.transforms.RandomCrop
        The crop placed on the resized image (``RandomCrop`` of type ``"absolute"``).
    """

    def __init__(self, min_scale, max_scale, crop):
        super().__init__()
        if not isinstance(crop, (RandomCropAtPoints, T.RandomCrop)):
            raise TypeError(f"crop must be a RandomCropAtPoints or RandomCrop, got {crop!r}")
        self.scale = RandomScale(min_scale, max_scale)
        self._init(locals())

    @property
    def reads_points(self):
        """Whether its crop is placed at the annotated points (see ``RandomCropAtPoints``)."""
        return isinstance(self.crop, RandomCropAtPoints)

    def __call__(self, aug_input):
        tfm = self.get_transform(aug_input.image, getattr(aug_input, "points", None))
        aug_input.transform(tfm)
        return tfm

    def _window(self, shape, points):
        shape_only = np.empty((*shape, 0), dtype=np.uint8)  # the crops read the shape alone
        if self.reads_points:
            return self.crop.get_transform(shape_only, points)
        return self.crop.get_transform(shape_only)

    def get_transform(self, image, points=None):
        h, w = image.shape[:2]
        resize = self.scale.get_transform(image)
        if isinstance(resize, NoOpTransform):
            return self._window((h, w), points)
        if points is not None:
            points = resize.apply_coords(np.array(points, dtype=np.float64).reshape(-1, 2))
        crop = self._window((resize.new_h, resize.new_w), points)
        return ResizeCropTransform(
            h, w, resize.new_h, resize.new_w, crop.x0, crop.y0, crop.w, crop.h, resize.interp
        )


# ---------------------------------------------------------------------------------------------
# resampling helpers (continuous source coordinates -> output pixels)


def _pixel_centres(h, w):
    """Continuous ``(x, y)`` of the centres of an ``h x w`` grid, two ``(h, w)`` float64 arrays."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs + 0.5, ys + 0.5


def _inside(xs, ys, h, w):
    return (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)


def _cast_like(values, dtype):
    """``values`` (float) in ``dtype``: integers rounded and clipped to the dtype's range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    if dtype == np.bool_:
        return values >= 0.5
    return values.astype(dtype, copy=False)


def _sample_bilinear(img, xs, ys, fill=0.0):
    """Bilinear samples of ``img`` (``(H, W)`` or ``(H, W, C)``) at continuous ``(xs, ys)``.

    Inside the image the four nearest pixel centres are blended (edge pixels replicated for
    the half pixel along the border); samples outside ``[0, W) x [0, H)`` get ``fill``.
    The blend is ``torch.nn.functional.grid_sample`` in float64 (about 10x faster than numpy
    fancy indexing on one thread; float64 keeps an identity warp exact), then cast back to the
    image's dtype (integers rounded).
    """
    img = np.asarray(img)
    h, w = img.shape[:2]
    inside = _inside(xs, ys, h, w)
    # align_corners=False: -1 and 1 are the outer edges of the border pixels, so a pixel
    # centre i + 0.5 is at 2 (i + 0.5) / w - 1; "border" replicates the edge pixels
    src = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64))
    src = src[None, None] if img.ndim == 2 else src.permute(2, 0, 1)[None]
    grid = np.stack([xs * (2.0 / w) - 1.0, ys * (2.0 / h) - 1.0], axis=-1)
    grid = torch.from_numpy(grid.astype(np.float64, copy=False))[None]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out[0, 0].numpy() if img.ndim == 2 else out[0].permute(1, 2, 0).numpy()
    if img.ndim == 3:
        inside = inside[..., None]
    out = np.where(inside, out, fill)
    return np.ascontiguousarray(_cast_like(out, img.dtype))


def _sample_nearest(seg, xs, ys, fill):
    """Values of the pixels of ``seg`` containing the continuous points ``(xs, ys)``; ``fill``
    outside the image. Values are copied, so the output's values are those of ``seg`` and
    ``fill``."""
    seg = np.asarray(seg)
    h, w = seg.shape[:2]
    cols = np.floor(xs)
    rows = np.floor(ys)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    out = seg[
        np.clip(rows, 0, h - 1).astype(np.intp), np.clip(cols, 0, w - 1).astype(np.intp)
    ].copy()
    out[~inside] = fill
    return out


# ---------------------------------------------------------------------------------------------
# affine


class AffineTransform(Transform):
    """Affine warp given by a 2x3 matrix in continuous pixel-centre coordinates.

    A point ``p = (x, y)`` of the input goes to ``matrix[:, :2] @ p + matrix[:, 2]`` of the
    output (``apply_coords`` is this formula, exactly). Each output pixel takes the value at
    the source of its centre (bilinear for images, nearest for segmentations); outside the
    input it gets 0 (images) or ``seg_fill`` (segmentations).

    Parameters
    ----------
    h, w : int
        Input size.
    matrix : array-like, (2, 3)
        Forward map, input -> output; its 2x2 part must be invertible.
    out_h, out_w : int
        Output size.
    seg_fill : int or float
        Value of segmentation pixels coming from outside the input (default 2, the ignore
        label; it applies to every map moved by ``apply_segmentation``).
    """

    def __init__(self, h, w, matrix, out_h, out_w, seg_fill=2):
        super().__init__()
        matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
        if abs(np.linalg.det(matrix[:, :2])) < 1e-12:
            raise ValueError(f"AffineTransform needs an invertible matrix, got {matrix.tolist()}")
        self._set_attributes(
            {
                "h": int(h),
                "w": int(w),
                "matrix": matrix,
                "out_h": int(out_h),
                "out_w": int(out_w),
                "seg_fill": seg_fill,
            }
        )

    def _sources(self):
        """Continuous source ``(x, y)`` of every output pixel centre."""
        qx, qy = _pixel_centres(self.out_h, self.out_w)
        inv = np.linalg.inv(self.matrix[:, :2])
        dx, dy = qx - self.matrix[0, 2], qy - self.matrix[1, 2]
        return inv[0, 0] * dx + inv[0, 1] * dy, inv[1, 0] * dx + inv[1, 1] * dy

    def apply_image(self, img):
        assert img.shape[:2] == (self.h, self.w), (img.shape, self.h, self.w)
        return _sample_bilinear(img, *self._sources(), fill=0.0)

    def apply_segmentation(self, segmentation):
        assert segmentation.shape[:2] == (self.h, self.w), (segmentation.shape, self.h, self.w)
        return _sample_nearest(segmentation, *self._sources(), fill=self.seg_fill)

    def apply_coords(self, coords):
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        return coords @ self.matrix[:, :2].T + self.matrix[:, 2]

    def inverse(self):
        inv = np.linalg.inv(self.matrix[:, :2])
        matrix = np.concatenate([inv, -inv @ self.matrix[:, 2:]], axis=1)
        return AffineTransform(self.out_h, self.out_w, matrix, self.h, self.w, self.seg_fill)


class RandomAffine(T.Augmentation):
    """Any-angle rotation combined with Qu et al.'s random affine perturbation, about the image
    centre, output the size of the input (one resampling for both).

    Definition (continuous pixel-centre coordinates, image centre ``c = (W/2, H/2)``):

    * ``theta`` ~ U(``rotate[0]``, ``rotate[1]``) degrees, counter-clockwise as displayed
      (y points down): ``R = [[cos, sin], [-sin, cos]]``; ``theta = 90`` equals
      ``np.rot90(image, 1)`` on a square image.
    * ``B = I + E`` with each of the four entries of ``E`` ~ U(-``affine``, ``affine``). As in
      Qu et al.'s ``RandomAffine(0.3)`` (PIL's ``Image.AFFINE`` convention) ``B`` maps the
      *output* to the *input*: the perturbation alone is ``p_out = c + B^-1 (p_in - c)``.
    * Their code applies the perturbation, then the rotation; combined, the forward map is
      ``p_out = c + A (p_in - c)`` with ``A = R B^-1``.

    Draws, in this order, from the global ``np.random``: ``theta``, then the four entries of
    ``E`` (row-major). ``affine`` must be in ``[0, 0.5)`` (Qu et al.'s bound), so that ``B`` is
    invertible (``det B >= 1 - 2 affine``). Pixels coming from outside the input are black in
    the image and ``seg_fill`` in segmentations (the corners of a rotated image).

    Parameters
    ----------
    affine : float
        Bound of the perturbation of each matrix entry (0 = none; Qu et al.: 0.3).
    rotate : (float, float)
        Range of the rotation angle in degrees (``(0, 360)`` = any angle; ``(0, 0)`` = none).
    seg_fill : int or float
        Fill of segmentation pixels from outside the image (default 2, the ignore label).
    """

    def __init__(self, affine=0.3, rotate=(0.0, 360.0), seg_fill=2):
        super().__init__()
        if not 0 <= affine < 0.5:
            raise ValueError(f"RandomAffine needs 0 <= affine < 0.5, got {affine}")
        rotate = tuple(float(v) for v in rotate)
        if len(rotate) != 2 or rotate[0] > rotate[1]:
            raise ValueError(f"RandomAffine needs rotate = (low, high), low <= high, got {rotate}")
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        theta = np.deg2rad(np.random.uniform(self.rotate[0], self.rotate[1]))
        perturbation = np.random.uniform(-self.affine, self.affine, size=(2, 2))
        cos, sin = np.cos(theta), np.sin(theta)
        rotation = np.array([[cos, sin], [-sin, cos]])
        a = rotation @ np.linalg.inv(np.eye(2) + perturbation)
        if np.allclose(a, np.eye(2), rtol=0, atol=1e-12):
            return NoOpTransform()
        centre = np.array([w / 2.0, h / 2.0])
        matrix = np.concatenate([a, (centre - a @ centre)[:, None]], axis=1)
        return AffineTransform(h, w, matrix, h, w, self.seg_fill)


# ---------------------------------------------------------------------------------------------
# elastic


class ElasticTransform(Transform):
    """Warp by a dense displacement field (Simard et al. 2003's elastic deformation).

    The output pixel of centre ``q`` takes the input's value at ``q + d(q)``, with
    ``d = (dx, dy)`` given at every pixel centre (output size = input size). Images are
    sampled bilinearly, segmentations with the nearest neighbour; sources outside the input
    give 0 (images) or ``seg_fill`` (segmentations).

    ``apply_coords`` needs the forward map, the solution ``q`` of ``q + d(q) = p`` for an input
    point ``p``; it is found by the fixed-point iteration ``q <- p - d(q)`` from ``q = p``
    (``d`` interpolated bilinearly between pixel centres, edges replicated), which converges
    when the field is a contraction (``|grad d| < 1``: smooth fields, no folds). On a folding
    field the result is an approximation. ``inverse()`` is the elastic transform whose field is
    this forward map on the pixel grid, minus the grid (exact up to that approximation and
    to resampling).

    Parameters
    ----------
    h, w : int
        Image size.
    dx, dy : array, (h, w)
        Displacements in pixels along x (columns) and y (rows).
    seg_fill : int or float
        Fill of segmentation pixels from outside the image (default 2, the ignore label).
    """

    _ITERATIONS = 50

    def __init__(self, h, w, dx, dy, seg_fill=2):
        super().__init__()
        dx = np.asarray(dx, dtype=np.float64)
        dy = np.asarray(dy, dtype=np.float64)
        if dx.shape != (int(h), int(w)) or dy.shape != (int(h), int(w)):
            raise ValueError(f"fields {dx.shape}, {dy.shape} do not match the size {(h, w)}")
        self._set_attributes({"h": int(h), "w": int(w), "dx": dx, "dy": dy, "seg_fill": seg_fill})

    def __repr__(self):
        mag = float(np.sqrt(np.mean(self.dx**2 + self.dy**2))) if self.dx.size else 0.0
        return f"ElasticTransform(h={self.h}, w={self.w}, rms_displacement={mag:.3g})"

    def _sources(self):
        qx, qy = _pixel_centres(self.h, self.w)
        return qx + self.dx, qy + self.dy

    def apply_image(self, img):
        assert img.shape[:2] == (self.h, self.w), (img.shape, self.h, self.w)
        return _sample_bilinear(img, *self._sources(), fill=0.0)

    def apply_segmentation(self, segmentation):
        assert segmentation.shape[:2] == (self.h, self.w), (segmentation.shape, self.h, self.w)
        return _sample_nearest(segmentation, *self._sources(), fill=self.seg_fill)

    def _field_at(self, xs, ys):
        field = np.stack([self.dx, self.dy], axis=-1)
        # _sample_bilinear fills outside the image; replicate the edges instead
        xs = np.clip(xs, 0.0, self.w - 1e-9)
        ys = np.clip(ys, 0.0, self.h - 1e-9)
        out = _sample_bilinear(field, xs[:, None], ys[:, None])[:, 0]
        return out[:, 0], out[:, 1]

    def apply_coords(self, coords):
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        px, py = coords[:, 0], coords[:, 1]
        qx, qy = px.copy(), py.copy()
        for _ in range(self._ITERATIONS):
            dx, dy = self._field_at(qx, qy)
            nx, ny = px - dx, py - dy
            change = np.max(np.abs(np.concatenate([nx - qx, ny - qy]))) if len(px) else 0.0
            qx, qy = nx, ny
            if change < 1e-7:
                break
        return np.stack([qx, qy], axis=1)

    def inverse(self):
        px, py = _pixel_centres(self.h, self.w)
        q = self.apply_coords(np.stack([px.ravel(), py.ravel()], axis=1))
        dx = q[:, 0].reshape(self.h, self.w) - px
        dy = q[:, 1].reshape(self.h, self.w) - py
        return ElasticTransform(self.h, self.w, dx, dy, self.seg_fill)


class RandomElastic(T.Augmentation):
    """Simard-style elastic deformation, with probability ``prob``.

    Each displacement component is white noise U(-1, 1) per pixel, smoothed by a Gaussian of
    standard deviation ``sigma`` pixels (``scipy.ndimage.gaussian_filter``, reflected borders)
    and multiplied by ``alpha`` pixels. The smoothed noise has a standard deviation of about
    ``0.17 / sigma`` (measured on 250 px fields), so the RMS displacement per axis is about
    ``0.17 alpha / sigma`` pixels; the field's gradient is about ``0.08 alpha / sigma**2``
    typically and ``0.5 alpha / sigma**2`` at most (the warp folds when it reaches 1).
    Defaults ``alpha=50, sigma=6``: about 1.4 px RMS per axis (at most ~7 px), varying over
    ~10-20 px, gradient at most ~0.7: wobbly nucleus outlines on 200-250 px crops without
    folds.

    Draws from the global ``np.random``: the coin (``np.random.rand() < prob``), then the x
    noise, then the y noise (each ``(H, W)``).

    Parameters
    ----------
    alpha : float
        Scale of the displacements in pixels (0 = identity).
    sigma : float
        Smoothness of the field, in pixels (> 0).
    prob : float
        Probability of deforming an image.
    seg_fill : int or float
        Fill of segmentation pixels from outside the image (default 2, the ignore label).
    """

    def __init__(self, alpha=50.0, sigma=6.0, prob=1.0, seg_fill=2):
        super().__init__()
        if alpha < 0 or sigma <= 0 or not 0 <= prob <= 1:
            raise ValueError(
                f"RandomElastic needs alpha >= 0, sigma > 0, 0 <= prob <= 1, got "
                f"{alpha}, {sigma}, {prob}"
            )
        self._init(locals())

    def get_transform(self, image):
        if not np.random.rand() < self.prob:
            return NoOpTransform()
        h, w = image.shape[:2]
        dx = gaussian_filter(np.random.uniform(-1, 1, size=(h, w)), self.sigma) * self.alpha
        dy = gaussian_filter(np.random.uniform(-1, 1, size=(h, w)), self.sigma) * self.alpha
        if self.alpha == 0:
            return NoOpTransform()
        return ElasticTransform(h, w, dx, dy, self.seg_fill)


# ---------------------------------------------------------------------------------------------
# point-aware input and crop


class NucleiAugInput(T.AugInput):
    """``T.AugInput`` that also carries the annotated ``points`` through the augmentations.

    ``points`` is an ``(N, 2)`` array of continuous ``(x, y)`` (pixel centres at ``+0.5``) in
    the current image; every transform applied to the input also moves them with
    ``apply_coords``, so an augmentation later in the list (e.g. :class:`RandomCropAtPoints`)
    sees where the points are after the earlier ones. Points that leave the image are kept
    (the crop ignores them).
    """

    def __init__(self, image, *, boxes=None, sem_seg=None, points=None):
        super().__init__(image, boxes=boxes, sem_seg=sem_seg)
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
        self.points = points

    def transform(self, tfm):
        super().transform(tfm)
        if self.points is not None and len(self.points):
            # copy: some fvcore transforms (flips) move coordinates in place
            self.points = np.asarray(tfm.apply_coords(self.points.copy()), dtype=np.float64)


class RandomCropAtPoints(T.Augmentation):
    """Fixed-size crop centred, with probability ``prob_at_point``, near an annotated point.

    With probability ``prob_at_point`` (and at least one point inside the image), a point is
    drawn uniformly among those inside the image and the crop centre is that point plus a
    uniform jitter of up to ``jitter`` times the crop size along each axis (default 1/4, so the
    point lies in the central half of the crop before clamping); the crop is then moved inside
    the image, which keeps the point inside it. Otherwise the crop is uniform, exactly as
    ``T.RandomCrop("absolute", crop_size)``. Like that crop, the size is clamped to the image
    (an image smaller than the crop is not padded: the crop is the whole image along that
    axis).

    The points come from the augmentation input's ``points`` attribute (a
    :class:`NucleiAugInput`, moved by the earlier augmentations); an input without the
    attribute, or with ``points=None`` or none inside the image, gets the uniform crop.

    Draws from the global ``np.random``: the coin (``np.random.rand()``), then either the
    point index and the two jitters (x, y) or the uniform offsets (y then x, as
    ``T.RandomCrop``).

    Parameters
    ----------
    crop_size : (int, int)
        ``(height, width)`` of the crop.
    prob_at_point : float
        Probability of centring the crop near a point.
    jitter : float
        Largest offset of the crop centre from the point, as a fraction of the crop size.
    """

    #: the mappers pass the annotated points to an augmentation list holding one that reads them
    reads_points = True

    def __init__(self, crop_size, prob_at_point=0.5, jitter=0.25):
        super().__init__()
        crop_size = tuple(int(v) for v in crop_size)
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"crop_size must be two positive ints, got {crop_size}")
        if not 0 <= prob_at_point <= 1 or not 0 <= jitter <= 0.5:
            raise ValueError(
                f"RandomCropAtPoints needs 0 <= prob_at_point <= 1 and 0 <= jitter <= 0.5, "
                f"got {prob_at_point}, {jitter}"
            )
        self._init(locals())

    def __call__(self, aug_input):
        tfm = self.get_transform(aug_input.image, getattr(aug_input, "points", None))
        aug_input.transform(tfm)
        return tfm

    def get_transform(self, image, points=None):
        h, w = image.shape[:2]
        ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        at_point = np.random.rand() < self.prob_at_point
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            points = points[_inside(points[:, 0], points[:, 1], h, w)]
        if at_point and points is not None and len(points):
            px, py = points[np.random.randint(len(points))]
            cx = px + np.random.uniform(-self.jitter, self.jitter) * cw
            cy = py + np.random.uniform(-self.jitter, self.jitter) * ch
            x0 = int(np.clip(np.floor(cx - cw / 2.0 + 0.5), 0, w - cw))
            y0 = int(np.clip(np.floor(cy - ch / 2.0 + 0.5), 0, h - ch))
            # rounding may leave a point on the very edge of a tiny crop outside it: recentre
            if not (x0 <= px < x0 + cw):
                x0 = int(np.clip(np.floor(px - cw / 2.0), 0, w - cw))
            if not (y0 <= py < y0 + ch):
                y0 = int(np.clip(np.floor(py - ch / 2.0), 0, h - ch))
        else:
            y0 = np.random.randint(h - ch + 1)
            x0 = np.random.randint(w - cw + 1)
        return T.CropTransform(int(x0), int(y0), int(cw), int(ch))


class CenterCrop(T.Augmentation):
    """The central ``(height, width)`` crop (clamped to the image size)."""

    def __init__(self, crop_size):
        super().__init__()
        crop_size = tuple(int(v) for v in crop_size)
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"crop_size must be two positive ints, got {crop_size}")
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        return T.CropTransform((w - cw) // 2, (h - ch) // 2, cw, ch)


# Side of the region cut before the warps, relative to the crop: a square of side s rotated by
# any angle still covers its central s / sqrt(2), so 1.45 keeps the final central crop free of
# out-of-image corners under rotation (the affine perturbation may still bring some in).
WARP_MARGIN = 1.45


# ---------------------------------------------------------------------------------------------


def build_nuclei_augmentation(cfg, is_train, seg_fill=2):
    """Augmentations from ``cfg.NUCLEIWEAK.DATA`` (none at test time).

    ``seg_fill`` is the value the warps (affine, rotation, elastic) give to the pixels of a
    moved map that come from outside the image: 2, the ignore label of the two-class target
    maps, by default; a mapper moving a map of another meaning passes its own (e.g. 0).

    Training order: random scale, any-angle rotation / affine perturbation
    (:class:`RandomAffine`), elastic deformation, horizontal flip, vertical flip, rot90, random
    crop (:class:`RandomCropAtPoints` when ``CROP_AT_POINTS > 0``, else ``T.RandomCrop``).
    With warps and a crop, the random crop (of side :data:`WARP_MARGIN` x the crop) comes
    before the warps, so that only that region is resampled (with a random scale, the two are
    one :class:`RandomScaledCrop`, which resizes that region alone), and the last step is the
    :class:`CenterCrop` of the crop size: the rotation's out-of-image corners stay outside it. With the default config (all
    of ``AFFINE``, ``ROTATE_ANY``, ``ELASTIC.PROB``, ``CROP_AT_POINTS`` off) the list is the
    same as before they existed. ``RandomCropAtPoints`` reads the points from a
    :class:`NucleiAugInput`; with a plain ``T.AugInput`` it crops uniformly.
    """
    if not is_train:
        return []
    data = cfg.NUCLEIWEAK.DATA
    augs = []
    lo, hi = data.RESIZE_SCALE
    scale = (lo, hi) != (1.0, 1.0)
    crop = None
    if len(data.CROP_SIZE) == 2 and min(data.CROP_SIZE) > 0:
        crop = tuple(int(v) for v in data.CROP_SIZE)
    at_points = float(data.CROP_AT_POINTS)
    warps = float(data.AFFINE) > 0 or data.ROTATE_ANY or float(data.ELASTIC.PROB) > 0
    if warps and crop is not None:
        # warp only a region around the future crop, not the whole image (12x fewer pixels for
        # a 192 crop of a 1000 image); the final crop is then its centre
        region = tuple(int(np.ceil(WARP_MARGIN * v)) for v in crop)
        cut = (
            RandomCropAtPoints(region, prob_at_point=at_points)
            if at_points > 0
            else T.RandomCrop("absolute", region)
        )
        # with a random scale, resample the region alone (same draws as the scale, then the cut)
        augs.append(RandomScaledCrop(lo, hi, cut) if scale else cut)
    elif scale:
        augs.append(RandomScale(lo, hi))
    affine = float(data.AFFINE)
    if affine > 0 or data.ROTATE_ANY:
        rotate = (0.0, 360.0) if data.ROTATE_ANY else (0.0, 0.0)
        augs.append(RandomAffine(affine=affine, rotate=rotate, seg_fill=seg_fill))
    elastic = data.ELASTIC
    if float(elastic.PROB) > 0:
        augs.append(
            RandomElastic(
                alpha=float(elastic.ALPHA),
                sigma=float(elastic.SIGMA),
                prob=float(elastic.PROB),
                seg_fill=seg_fill,
            )
        )
    if data.HFLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=data.HFLIP_PROB, horizontal=True, vertical=False))
    if data.VFLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=data.VFLIP_PROB, horizontal=False, vertical=True))
    if data.ROT90:
        augs.append(RandomRot90())
    if crop is not None:
        if warps:
            augs.append(CenterCrop(crop))
        elif at_points > 0:
            augs.append(RandomCropAtPoints(crop, prob_at_point=at_points))
        else:
            augs.append(T.RandomCrop("absolute", crop))
    return augs
