"""Augmentations for nuclei images that Detectron2 lacks: rot90 and relative random resize.

Coordinates follow Detectron2: continuous ``(x, y)`` with pixel centres at ``+0.5``, so
``apply_coords`` maps the centre of a pixel to the centre of the pixel it moves to.
"""

import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform, Transform

__all__ = ["Rot90Transform", "RandomRot90", "RandomScale", "build_nuclei_augmentation"]


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


def build_nuclei_augmentation(cfg, is_train):
    """Augmentations from ``cfg.NUCLEIWEAK.DATA`` (none at test time).

    Training order: random scale, horizontal flip, vertical flip, rot90, random crop.
    """
    if not is_train:
        return []
    data = cfg.NUCLEIWEAK.DATA
    augs = []
    lo, hi = data.RESIZE_SCALE
    if (lo, hi) != (1.0, 1.0):
        augs.append(RandomScale(lo, hi))
    if data.HFLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=data.HFLIP_PROB, horizontal=True, vertical=False))
    if data.VFLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=data.VFLIP_PROB, horizontal=False, vertical=True))
    if data.ROT90:
        augs.append(RandomRot90())
    if len(data.CROP_SIZE) == 2 and min(data.CROP_SIZE) > 0:
        augs.append(T.RandomCrop("absolute", tuple(int(v) for v in data.CROP_SIZE)))
    return augs
