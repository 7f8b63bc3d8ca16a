"""``NucleiWeakNam2023Mapper``: PROnet's training targets, augmented with the image.

Per training image:

- ``"sem_seg"`` ``(2, H, W)`` long: the Voronoi and cluster labels of the *annotated* points
  (the paper keeps V and K from the clicks; only the centre map follows the refined points);
  computed once on the whole image with the Voronoi cells, cached in memory and in
  ``cache_dir/<image_id>.npz`` (``voronoi``, ``cluster``, ``cells``);
- ``"center_target"`` ``(1, H, W)`` float: the Gaussian centre map of the current points
  (``points_file``, written by the pipeline after each E-step; the annotated points without it),
  drawn after augmentation;
- with ``targets_dir`` (the pipeline's shape-guided targets of the current round,
  ``<image_id>.npz`` with ``nuclei`` and ``centres``): ``"offset_target"`` ``(2, H, W)`` and
  ``"offset_weight"`` ``(1, H, W)``, formed after augmentation from the moved nucleus map and
  centres (:func:`~.targets.offset_target`).

At test time only the image is produced (annotations are kept for the evaluator).
"""

import copy
import json
from pathlib import Path

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T

from ...data.atomic import savez_compressed
from ...data.io import read_image
from ...data.records import cache_key, record_points
from ...data.registry import NUCLEIWEAK_MAPPER_REGISTRY
from ...data.transforms import build_nuclei_augmentation
from .labels import binary_labels
from .targets import center_target, offset_target

__all__ = ["NucleiWeakNam2023Mapper"]


def _move_points(transforms, points):
    """Pixel-index (x, y) points through ``transforms`` (pixel centres at +0.5, as Detectron2)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return pts
    return transforms.apply_coords(pts + 0.5) - 0.5


@NUCLEIWEAK_MAPPER_REGISTRY.register()
class NucleiWeakNam2023Mapper:
    """Binary labels, centre map and (from round 0 on) offset targets; see the module docstring."""

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        augmentations,
        image_format="RGB",
        geodesic=True,
        beta=40.0,
        d_max=70.0,
        center_radius=8.0,
        offset_background_weight=1.0,
        cache_dir="",
        points_file="",
        targets_dir="",
    ):
        """
        Parameters
        ----------
        is_train : bool
        augmentations : list of Augmentation
        image_format : {"RGB", "BGR"}
        geodesic, beta, d_max
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
        targets_dir : str
            Folder of the shape-guided offset targets; "" = no offset targets (warm-up).
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.label_args = {"geodesic": bool(geodesic), "beta": float(beta), "d_max": float(d_max)}
        self.center_radius = float(center_radius)
        self.offset_background_weight = float(offset_background_weight)
        self.cache_dir, self.targets_dir = str(cache_dir), str(targets_dir)
        self.points_by_image = None
        if points_file and is_train:  # test time needs only the image
            with open(points_file) as f:
                self.points_by_image = {str(k): v for k, v in json.load(f).items()}
        self._cache = {}

    @classmethod
    def from_config(cls, cfg, is_train=True):
        n = cfg.NUCLEIWEAK.NAM2023
        return {
            "is_train": is_train,
            "augmentations": build_nuclei_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "geodesic": n.LABELS.GEODESIC,
            "beta": n.LABELS.BETA,
            "d_max": n.LABELS.D_MAX,
            "center_radius": n.CENTER.RADIUS,
            "offset_background_weight": n.LOSS.OFFSET_BACKGROUND_WEIGHT,
        }

    def binary_labels(self, record, image):
        """``{"voronoi", "cluster", "cells"}`` of ``record`` (full size), cached."""
        key = cache_key(record)
        if key in self._cache:
            return self._cache[key]
        path = Path(self.cache_dir) / f"{key}.npz" if self.cache_dir else None
        if path is not None and path.is_file():
            with np.load(path) as z:
                maps = {k: z[k] for k in z.files}
        else:
            maps = binary_labels(image, record_points(record), **self.label_args)
            if path is not None:
                savez_compressed(path, **maps)
        self._cache[key] = maps
        return maps

    def _offset_maps(self, record):
        path = Path(self.targets_dir) / f"{cache_key(record)}.npz"
        if not path.is_file():
            raise FileNotFoundError(
                f"no offset targets for {record['file_name']} in {self.targets_dir}"
            )
        with np.load(path) as z:
            return z["nuclei"], z["centres"]

    def __call__(self, dataset_dict):
        d = copy.deepcopy(dataset_dict)
        image = np.array(read_image(d["file_name"]))  # RGB uint8, writable
        if image.shape[:2] != (d["height"], d["width"]):
            raise ValueError(
                f"{d['file_name']}: image is {image.shape[:2]}, record says "
                f"{(d['height'], d['width'])}"
            )
        original = image
        aug = T.AugInput(image)
        transforms = self.augmentations(aug)
        image = aug.image
        if self.is_train:
            self._put_targets(d, original, transforms, image.shape[:2])
        if self.image_format == "BGR":
            image = image[:, :, ::-1]
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return d

    def _put_targets(self, d, image, transforms, shape):
        """Add the targets of record ``d`` (original ``image``) moved by ``transforms``."""
        maps = self.binary_labels(d, image)
        seg = [transforms.apply_segmentation(maps[k]) for k in ("voronoi", "cluster")]
        d["sem_seg"] = torch.as_tensor(np.stack(seg).astype(np.int64))
        points = _move_points(transforms, record_points(d, self.points_by_image))
        d["center_target"] = torch.as_tensor(center_target(points, shape, self.center_radius)[None])
        if self.targets_dir:
            nuclei, centres = self._offset_maps(d)
            # float32 through the transforms (exact for ids < 2**24; resizing is nearest-neighbour)
            nuclei = np.rint(transforms.apply_segmentation(nuclei.astype(np.float32))).astype(
                np.int64
            )
            target, weight = offset_target(
                nuclei, _move_points(transforms, centres), self.offset_background_weight
            )
            d["offset_target"], d["offset_weight"] = (
                torch.as_tensor(target),
                torch.as_tensor(weight),
            )
