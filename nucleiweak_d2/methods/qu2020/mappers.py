"""Dataset mappers of Qu et al.: dense targets made from points on the full image, then
augmented together with the image.

- ``NucleiWeakQu2020SegMapper``: Voronoi and cluster pseudo-labels (0 background, 1 nucleus,
  2 ignore) as a ``(2, H, W)`` long ``"sem_seg"``.
- ``NucleiWeakQu2020DetMapper``: extended-Gaussian target and MSE weights (optionally with the
  background of the previous self-training round) as ``"det_target"`` / ``"det_weight"``.

Targets are computed once per image on the whole image (never on a crop, so Voronoi cells and
k-means see the whole tissue), cached in memory and, when ``cache_dir`` is set, on disk
(:class:`~nucleiweak_d2.data.mapper.CachedTargetsMapper`).
"""

import json
from pathlib import Path

import numpy as np
import torch
from detectron2.config import configurable

from ...data.mapper import CachedTargetsMapper
from ...data.records import cache_key, record_points
from ...data.registry import NUCLEIWEAK_MAPPER_REGISTRY
from .config import label_settings
from .labels import check_label_settings, cluster_label_of

__all__ = ["NucleiWeakQu2020SegMapper", "NucleiWeakQu2020DetMapper"]


def _moved(maps, transforms):
    """Every map of ``maps`` moved by ``transforms.apply_segmentation``, in ``maps`` order."""
    return {k: transforms.apply_segmentation(v) for k, v in maps.items()}


@NUCLEIWEAK_MAPPER_REGISTRY.register()
class NucleiWeakQu2020SegMapper(CachedTargetsMapper):
    """Voronoi + cluster pseudo-labels of Qu et al., stacked as ``"sem_seg"`` ``(2, H, W)``.

    Points come from ``points_file`` (the merged annotated + detected points written by the
    pipeline) or, when it is empty, from the annotations with ``point_labeled``. At test time
    only the image is produced (annotations are kept for the evaluator).

    Deviation: Qu's ``LabelEncoding`` turns pure-black (padding) pixels into background; the
    augmentations used here (scale, flips, rot90, crop) create no padding, so it is not needed.
    """

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        points_file="",
        label_kind="kmeans",
        d_max=20.0,
        dilate_radius=5,
        erode_radius=7,
        **base,
    ):
        """
        Parameters
        ----------
        is_train : bool
        cache_dir : str
            Folder caching ``<image_id>.npz`` with ``voronoi`` and ``cluster``; "" = memory
            (the pipeline passes its ``pseudo_labels/labels`` folder).
        points_file : str
            JSON ``{image_id: [[x, y], ...]}``; "" uses the annotated points (the pipeline
            passes its merged annotated + detected points).
        label_kind, d_max, dilate_radius, erode_radius
            The cluster label (``NUCLEIWEAK.QU2020.LABEL``): see
            :func:`~nucleiweak_d2.methods.qu2020.labels.cluster_label_of`.
        **base
            ``augmentations``, ``image_format``, ``cache_dir`` (above), ``stain_normalizer``
            and ``stain_jitter`` of :class:`~nucleiweak_d2.data.mapper.CachedTargetsMapper`
            (from ``from_config``).
        """
        super().__init__(is_train, **base)
        check_label_settings(label_kind, d_max, dilate_radius, erode_radius)
        self.label_kind, self.d_max = label_kind, float(d_max)
        self.dilate_radius, self.erode_radius = int(dilate_radius), int(erode_radius)
        self.points_by_image = None
        if points_file and is_train:  # test time needs only the image
            with open(points_file) as f:
                self.points_by_image = {str(k): v for k, v in json.load(f).items()}

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        label = label_settings(cfg)
        ret.update(label_kind=label.pop("kind"), **label)
        return ret

    def _aug_points(self, record):
        """The merged points of the image (a crop at points centres on annotated or detected
        nuclei alike)."""
        return record_points(record, self.points_by_image) + 0.5

    def _targets(self, record, image):
        from ...pseudo_labels.voronoi import voronoi_label

        pts = record_points(record, self.points_by_image)
        if len(pts) == 0:
            ignore = np.full(image.shape[:2], 2, dtype=np.uint8)
            return {"voronoi": ignore, "cluster": ignore.copy()}
        return {
            "voronoi": voronoi_label(pts, image.shape[:2]).astype(np.uint8),
            "cluster": cluster_label_of(
                self.label_kind,
                image,
                pts,
                self.d_max,
                self.dilate_radius,
                self.erode_radius,
            ),
        }

    def _put(self, d, maps, transforms, shape):
        maps = _moved(maps, transforms)
        d["sem_seg"] = torch.as_tensor(
            np.stack([maps["voronoi"], maps["cluster"]]).astype(np.int64)
        )


@NUCLEIWEAK_MAPPER_REGISTRY.register()
class NucleiWeakQu2020DetMapper(CachedTargetsMapper):
    """Extended Gaussian mask of Qu et al. (Eq. 1, 3) as ``"det_target"``/``"det_weight"``.

    ``det_target`` is ``exp(-D^2 / 2 sigma^2)`` within r1 of an annotated point, 0 elsewhere;
    ``det_weight`` is ``fg_weight`` where the target is > 0, 1 on the background annulus
    ``r1 < D < r2``, 0 (ignored) beyond r2, except that pixels beyond r2 marked as background
    by the previous self-training round (``background_dir/<image_id>.png``, non-zero =
    background) get target 0 and weight 1 (Eq. 3). Only annotated points are used.
    Both maps are ``(1, H, W)`` float32.
    """

    # warps fill both maps with 0 outside the image: target 0 with weight 0, i.e. ignored
    SEG_FILL = 0

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        r1=11.0,
        r2=22.0,
        sigma=2.75,
        fg_weight=10.0,
        background_dir="",
        **base,
    ):
        """
        Parameters
        ----------
        is_train : bool
        cache_dir : str
            As :class:`NucleiWeakQu2020SegMapper` (the cache holds ``target`` and ``weight``).
        r1, r2, sigma : float
            Extended Gaussian mask parameters (MO: 11, 22, 2.75).
        fg_weight : float
            Weight of target > 0 pixels (paper: 10).
        background_dir : str
            Background maps of the previous round; "" for the initial round (the pipeline
            passes it).
        **base
            ``augmentations``, ``image_format``, ``cache_dir`` (above), ``stain_normalizer``
            and ``stain_jitter`` of :class:`~nucleiweak_d2.data.mapper.CachedTargetsMapper`
            (from ``from_config``).
        """
        super().__init__(is_train, **base)
        self.r1, self.r2, self.sigma = float(r1), float(r2), float(sigma)
        self.fg_weight = float(fg_weight)
        self.background_dir = str(background_dir)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        det = cfg.NUCLEIWEAK.QU2020.DET
        ret.update(r1=det.R1, r2=det.R2, sigma=det.SIGMA, fg_weight=det.FG_WEIGHT)
        return ret

    def _targets(self, record, image):
        from ...pseudo_labels.detection import extended_gaussian_target

        shape = image.shape[:2]
        target, weight = extended_gaussian_target(
            record_points(record),
            shape,
            r1=self.r1,
            r2=self.r2,
            sigma=self.sigma,
            positive_weight=self.fg_weight,
        )
        if self.background_dir:
            from ...data.io import read_label

            bg = read_label(Path(self.background_dir) / f"{cache_key(record)}.png") > 0
            if bg.shape != shape:
                raise ValueError(
                    f"background map of {record['file_name']} is {bg.shape}, image is {shape}"
                )
            new_bg = bg & (weight == 0)
            target[new_bg] = 0.0
            weight[new_bg] = 1.0
        return {"target": target, "weight": weight}

    def _put(self, d, maps, transforms, shape):
        maps = _moved(maps, transforms)
        d["det_target"] = torch.as_tensor(np.ascontiguousarray(maps["target"])[None])
        d["det_weight"] = torch.as_tensor(np.ascontiguousarray(maps["weight"])[None])
