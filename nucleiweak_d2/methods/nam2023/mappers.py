"""``NucleiWeakNam2023Mapper``: PROnet's training targets, augmented with the image.

Per training image:

- ``"sem_seg"`` ``(2, H, W)`` long: the Voronoi and cluster labels of the *annotated* points,
  or of the starting points of ``label_points_file`` (the pipeline's ``NAM2023.POINTS_FILE``)
  (the paper keeps V and K from the clicks; only the centre map follows the refined points);
  computed once on the whole image with the Voronoi cells, cached in memory and in
  ``cache_dir/<image_id>.npz`` (``voronoi``, ``cluster``, ``cells``) by
  :class:`~nucleiweak_d2.data.mapper.CachedTargetsMapper`;
- ``"center_target"`` ``(1, H, W)`` float: the Gaussian centre map of the current points
  (``points_file``, written by the pipeline after each E-step; the annotated points without it),
  drawn after augmentation;
- with ``targets_dir`` (the pipeline's shape-guided targets of the current round,
  ``<image_id>.npz`` with ``nuclei`` and ``centres``): ``"offset_target"`` ``(2, H, W)`` and
  ``"offset_weight"`` ``(1, H, W)``, formed after augmentation from the moved nucleus map and
  centres (:func:`~.targets.offset_target`); pixels a warp brings in from outside the image
  weigh 0.

Warps (the recipe's affine, any-angle rotation and elastic deformation, not in the paper) move
the label maps with the ignore fill, the centre map's points exactly, and the nucleus map with
the outside marked (:meth:`NucleiWeakNam2023Mapper._move_nuclei`).

At test time only the image is produced (annotations are kept for the evaluator).
"""

from pathlib import Path

import numpy as np
import torch
from detectron2.config import configurable

from ...data.mapper import CachedTargetsMapper
from ...data.records import cache_key, record_points
from ...data.registry import NUCLEIWEAK_MAPPER_REGISTRY
from .config import label_settings
from .labels import binary_labels
from .points import read_points_json
from .targets import center_target, offset_target

__all__ = ["NucleiWeakNam2023Mapper"]


def _move_points(transforms, points):
    """Pixel-index (x, y) points through ``transforms`` (pixel centres at +0.5, as Detectron2)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return pts
    return transforms.apply_coords(pts + 0.5) - 0.5


@NUCLEIWEAK_MAPPER_REGISTRY.register()
class NucleiWeakNam2023Mapper(CachedTargetsMapper):
    """Binary labels, centre map and (from round 0 on) offset targets; see the module docstring."""

    # Warps (affine, any-angle rotation, elastic) fill every moved map with SEG_FILL (2, the
    # labels' ignore) outside the image; _put moves the nuclei map with its ids offset by
    # _NUCLEI_OFFSET so that the fill marks the outside, where the offset loss weighs 0.
    SUPPORTS_WARPS = True
    _NUCLEI_OFFSET = CachedTargetsMapper.SEG_FILL + 1

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        geodesic=True,
        beta=40.0,
        d_max=70.0,
        center_radius=8.0,
        offset_background_weight=1.0,
        erode_radius=7,
        points_file="",
        label_points_file="",
        targets_dir="",
        **base,
    ):
        """
        Parameters
        ----------
        is_train : bool
        geodesic, beta, d_max, erode_radius
            Binary labels, see :func:`~.labels.binary_labels`.
        center_radius : float
            Gaussian radius r of the centre map.
        offset_background_weight : float
            Weight of background pixels in the offset loss.
        cache_dir : str
            Folder of the binary labels' cache; "" = memory only (the pipeline passes its
            ``pseudo_labels/labels``).
        points_file : str
            JSON ``{image_id: [[x, y], ...]}`` of the current points, in annotation order;
            "" = the annotated points (the pipeline passes the refined points of the round).
        label_points_file : str
            JSON of the same form: the points the binary labels are built from; "" = the
            annotated points (the pipeline passes its starting points with
            ``NAM2023.POINTS_FILE``).
        targets_dir : str
            Folder of the shape-guided offset targets; "" = no offset targets (warm-up).
        **base
            ``augmentations``, ``image_format``, ``cache_dir`` (above), ``stain_normalizer``
            and ``stain_jitter`` of :class:`~nucleiweak_d2.data.mapper.CachedTargetsMapper`
            (from ``from_config``).
        """
        super().__init__(is_train, **base)
        if not int(erode_radius) >= 0:
            raise ValueError(
                f"NUCLEIWEAK.NAM2023.LABELS.ERODE_RADIUS must be >= 0, got {erode_radius}"
            )
        self.label_args = {
            "geodesic": bool(geodesic),
            "beta": float(beta),
            "d_max": float(d_max),
            "erode_radius": int(erode_radius),
        }
        self.center_radius = float(center_radius)
        self.offset_background_weight = float(offset_background_weight)
        self.targets_dir = str(targets_dir)
        # test time needs only the image
        self.points_by_image = read_points_json(points_file) if points_file and is_train else None
        self.label_points = (
            read_points_json(label_points_file) if label_points_file and is_train else None
        )

    @classmethod
    def from_config(cls, cfg, is_train=True):
        n = cfg.NUCLEIWEAK.NAM2023
        ret = super().from_config(cfg, is_train)
        ret.update(
            **label_settings(cfg),
            center_radius=n.CENTER.RADIUS,
            offset_background_weight=n.LOSS.OFFSET_BACKGROUND_WEIGHT,
        )
        return ret

    def binary_labels(self, record, image):
        """``{"voronoi", "cluster", "cells"}`` of ``record`` (full size), cached.

        Parameters
        ----------
        record : dict
            Detectron2 dataset dict.
        image : numpy.ndarray
            ``(H, W, 3)`` RGB uint8 full image of ``record``.

        Returns
        -------
        dict of str to numpy.ndarray
            :meth:`cached_targets` (the labels of :func:`~.labels.binary_labels`).
        """
        return self.cached_targets(record, image)

    def _targets(self, record, image):
        return binary_labels(image, record_points(record, self.label_points), **self.label_args)

    def _offset_maps(self, record):
        path = Path(self.targets_dir) / f"{cache_key(record)}.npz"
        if not path.is_file():
            raise FileNotFoundError(
                f"no offset targets for {record['file_name']} in {self.targets_dir}"
            )
        with np.load(path) as z:
            return z["nuclei"], z["centres"]

    def _move_nuclei(self, transforms, nuclei):
        """``(moved nuclei map, outside mask)``: the ``(H, W)`` id map (0 = background) moved by
        ``transforms`` (nearest neighbour), and where a warp brought in pixels from outside the
        image (there the map is 0).

        The map goes through the transforms as float32 (exact for ids < 2**24) with its ids
        raised by :attr:`_NUCLEI_OFFSET`, so that the warps' fill (``SEG_FILL``) differs from
        every id and from the background.
        """
        lifted = nuclei.astype(np.float32) + self._NUCLEI_OFFSET
        moved = np.rint(transforms.apply_segmentation(lifted)).astype(np.int64)
        outside = moved < self._NUCLEI_OFFSET
        return np.where(outside, 0, moved - self._NUCLEI_OFFSET), outside

    def _put(self, d, maps, transforms, shape):
        """Add the targets of record ``d`` moved by ``transforms``.

        See :meth:`~nucleiweak_d2.data.mapper.CachedTargetsMapper._put`; ``maps`` are the
        full-size binary labels, ``shape`` is the augmented image's ``(H, W)``.
        """
        seg = [transforms.apply_segmentation(maps[k]) for k in ("voronoi", "cluster")]
        d["sem_seg"] = torch.as_tensor(np.stack(seg).astype(np.int64))
        points = _move_points(transforms, record_points(d, self.points_by_image))
        d["center_target"] = torch.as_tensor(center_target(points, shape, self.center_radius)[None])
        if self.targets_dir:
            nuclei, centres = self._offset_maps(d)
            nuclei, outside = self._move_nuclei(transforms, nuclei)
            target, weight = offset_target(
                nuclei, _move_points(transforms, centres), self.offset_background_weight
            )
            weight[:, outside] = 0.0
            d["offset_target"], d["offset_weight"] = (
                torch.as_tensor(target),
                torch.as_tensor(weight),
            )
