"""Dataset mappers of Liu et al.: targets made once per full image, then augmented with it.

- ``NucleiWeakLiu2022SPNMapper``: Voronoi and *adaptive* k-means cluster labels (0 background,
  1 nucleus, 2 ignore) as a ``(2, H, W)`` long ``"sem_seg"`` (the SPN's two targets).
- ``NucleiWeakLiu2022IENMapper``: the instance pseudo-label of :mod:`.pseudo_labels` from the
  SPN probability of the image as ``"ins_seg"`` ``(H, W)`` long (0 ignore, 1 background,
  ``2 + k`` instance of point ``k``), and the CoordConv coordinates of :mod:`.coords` as
  ``"coords"`` ``(2, H, W)`` float.

Targets are computed on the whole image (Voronoi cells and k-means see the whole tissue),
cached in memory and, with ``cache_dir``, on disk (``<image_id>.npz``), by
:class:`~nucleiweak_d2.data.mapper.CachedTargetsMapper`. At test time only the image is
produced (annotations are kept for the evaluator).
"""

from pathlib import Path

import numpy as np
import torch
from detectron2.config import configurable

from ...data.mapper import CachedTargetsMapper
from ...data.records import cache_key, record_points
from ...data.registry import NUCLEIWEAK_MAPPER_REGISTRY
from .coords import coordinate_grid

__all__ = ["NucleiWeakLiu2022SPNMapper", "NucleiWeakLiu2022IENMapper"]


@NUCLEIWEAK_MAPPER_REGISTRY.register()
class NucleiWeakLiu2022SPNMapper(CachedTargetsMapper):
    """Voronoi + adaptive k-means labels of Liu et al., stacked as ``"sem_seg"`` ``(2, H, W)``.

    Points are the record's annotated points (``point_labeled``); an image without points gets
    all-ignored targets.
    """

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        color_weight=0.2,
        patch_size=60,
        d_max=20.0,
        **base,
    ):
        """
        Parameters
        ----------
        is_train : bool
        cache_dir : str
            Folder caching ``<image_id>.npz`` with ``voronoi`` and ``cluster``; "" = memory
            only (the pipeline passes its ``pseudo_labels/labels`` folder).
        color_weight, patch_size, d_max
            lambda, L and d* of :func:`~nucleiweak_d2.pseudo_labels.adaptive_cluster_label`.
        **base
            ``augmentations``, ``image_format``, ``cache_dir`` (above), ``stain_normalizer``
            and ``stain_jitter`` of :class:`~nucleiweak_d2.data.mapper.CachedTargetsMapper`
            (from ``from_config``).
        """
        super().__init__(is_train, **base)
        self.color_weight, self.patch_size, self.d_max = (
            float(color_weight),
            int(patch_size),
            float(d_max),
        )

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        c = cfg.NUCLEIWEAK.LIU2022.CLUSTER
        ret.update(color_weight=c.LAMBDA, patch_size=c.PATCH_SIZE, d_max=c.D_MAX)
        return ret

    def _targets(self, record, image):
        from ...pseudo_labels.adaptive import adaptive_cluster_label
        from ...pseudo_labels.voronoi import voronoi_label

        pts = record_points(record)
        if len(pts) == 0:
            ignore = np.full(image.shape[:2], 2, dtype=np.uint8)
            return {"voronoi": ignore, "cluster": ignore.copy()}
        cluster = adaptive_cluster_label(
            image, pts, alpha=self.color_weight, patch_size=self.patch_size, d_max=self.d_max
        )
        return {
            "voronoi": voronoi_label(pts, image.shape[:2]).astype(np.uint8),
            "cluster": cluster.astype(np.uint8),
        }

    def _put(self, d, maps, transforms, shape):
        vor = transforms.apply_segmentation(maps["voronoi"])
        clu = transforms.apply_segmentation(maps["cluster"])
        d["sem_seg"] = torch.as_tensor(np.stack([vor, clu]).astype(np.int64))


@NUCLEIWEAK_MAPPER_REGISTRY.register()
class NucleiWeakLiu2022IENMapper(CachedTargetsMapper):
    """Instance pseudo-labels (``"ins_seg"``) and CoordConv coordinates (``"coords"``).

    The instance label of an image is made from the SPN probability that the ``spn_predict``
    stage wrote (``prob_dir/<image_id>.npz``, array ``prob``) and the record's annotated
    points. ``"coords"`` holds the normalised full-image coordinates of every pixel after the
    augmentation (:func:`~.coords.coordinate_grid` moved by the same transforms as the image).
    """

    # warps fill the instance map with 0 (ignore) outside the image
    SEG_FILL = 0

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        prob_dir="",
        t_fg=0.5,
        t_bg=0.3,
        min_area=20,
        **base,
    ):
        """
        Parameters
        ----------
        is_train : bool
        cache_dir : str
            Folder caching ``<image_id>.npz`` with ``instances``; "" = memory only.
        prob_dir : str
            Folder of the SPN probabilities of the training images (the pipeline passes it;
            needed in training only).
        t_fg, t_bg, min_area
            See :func:`~.pseudo_labels.instance_pseudo_label`.
        **base
            ``augmentations``, ``image_format``, ``cache_dir`` (above), ``stain_normalizer``
            and ``stain_jitter`` of :class:`~nucleiweak_d2.data.mapper.CachedTargetsMapper`
            (from ``from_config``).
        """
        super().__init__(is_train, **base)
        self.prob_dir = str(prob_dir)
        self.t_fg, self.t_bg, self.min_area = float(t_fg), float(t_bg), int(min_area)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        ien = cfg.NUCLEIWEAK.LIU2022.IEN
        ret.update(t_fg=ien.T_FG, t_bg=ien.T_BG, min_area=ien.LABEL_MIN_AREA)
        return ret

    def _targets(self, record, image):
        from .pseudo_labels import instance_pseudo_label

        if not self.prob_dir:
            raise ValueError(
                "NucleiWeakLiu2022IENMapper needs prob_dir (the SPN probabilities "
                "of the training images) in training"
            )
        path = Path(self.prob_dir) / f"{cache_key(record)}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"no SPN probability for {record['file_name']}: {path}")
        with np.load(path) as z:
            prob = z["prob"].astype(np.float32)
        if prob.shape != image.shape[:2]:
            raise ValueError(
                f"SPN probability of {record['file_name']} is {prob.shape}, image "
                f"is {image.shape[:2]}"
            )
        label = instance_pseudo_label(
            prob, record_points(record), t_fg=self.t_fg, t_bg=self.t_bg, min_area=self.min_area
        )
        return {"instances": label}

    def _put(self, d, maps, transforms, shape):
        # float32 holds ids exactly up to 2**24; Detectron2's resize has no integer path
        ins = transforms.apply_segmentation(maps["instances"].astype(np.float32))
        d["ins_seg"] = torch.as_tensor(np.rint(ins).astype(np.int64))
        # the grid of the full image (``shape`` is the augmented one's), moved like the image
        coords = transforms.apply_image(coordinate_grid(d["height"], d["width"]))
        d["coords"] = torch.as_tensor(np.ascontiguousarray(coords.transpose(2, 0, 1)))
