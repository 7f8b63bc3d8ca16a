"""Dataset mappers of the data layer.

- ``NucleiDatasetMapper``: carries point annotations (and optionally masks) through
  augmentation, onto ``Instances``.
- ``CachedTargetsMapper``: base of the method mappers whose dense training targets are made
  once per full image, cached, and augmented together with the image.
"""

import abc
import copy
from pathlib import Path

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

from .atomic import savez_compressed
from .io import read_image
from .records import cache_key, record_points
from .registry import NUCLEIWEAK_MAPPER_REGISTRY
from .rle import paint_rles
from .stain import StainJitter, StainNormalizer
from .transforms import NucleiAugInput, build_nuclei_augmentation

__all__ = ["NucleiDatasetMapper", "CachedTargetsMapper", "build_stain_steps"]

_USE_MASKS = {"auto": "auto", "always": True, "never": False}


def build_stain_steps(cfg, is_train):
    """``(normalizer, jitter)`` of a training mapper from ``cfg.NUCLEIWEAK.DATA`` (each None
    when off; both None at test time, where the model normalises its own inputs).

    Raises
    ------
    ValueError
        Stain normalisation on without a target (the trainer fits it on ``DATASETS.TRAIN``
        before it builds the mappers, see :func:`nucleiweak_d2.engine.stain.fit_stain_target`).
    """
    if not is_train:
        return None, None
    data = cfg.NUCLEIWEAK.DATA
    normalizer = None
    if data.STAIN_NORM.METHOD != "none":
        if not len(data.STAIN_NORM.TARGET):
            raise ValueError(
                f"NUCLEIWEAK.DATA.STAIN_NORM.METHOD is {data.STAIN_NORM.METHOD!r} but "
                "STAIN_NORM.TARGET is empty: fit it on the training images first "
                "(nucleiweak_d2.engine.stain.fit_stain_target) or set it"
            )
        normalizer = StainNormalizer(data.STAIN_NORM.METHOD, data.STAIN_NORM.TARGET)
    jitter = None
    if data.STAIN_JITTER.SIGMA > 0 or data.STAIN_JITTER.BIAS > 0:
        jitter = StainJitter(
            data.STAIN_JITTER.SIGMA, data.STAIN_JITTER.BIAS, data.STAIN_JITTER.PROB
        )
    return normalizer, jitter


def _wants_points(augmentations):
    """Whether an augmentation reads the points (a crop placed at annotated points, alone or
    after a random scale: its ``reads_points``)."""
    return any(getattr(a, "reads_points", False) for a in augmentations)


@NUCLEIWEAK_MAPPER_REGISTRY.register()
class NucleiDatasetMapper:
    """Map a nuclei dataset dict (docs/CONTRACTS.md) to model input with points on Instances.

    Training output: ``image`` (CHW uint8 tensor in ``image_format``) and ``instances`` with
    ``gt_points`` ((N, 2) float32, augmented continuous coordinates, pixel centre at +0.5),
    ``gt_point_labeled`` ((N,) bool), ``gt_point_inside`` ((N,) bool, False for an instance
    whose point left the image, whose ``gt_points`` row is then ``(-1, -1)``), ``gt_classes``
    (zeros), and

    * with masks: ``gt_masks`` (BitMasks) and ``gt_boxes`` recomputed from the augmented masks;
    * without: ``gt_boxes`` = squares of side ``point_box_size`` centred on the points and
      clipped to the image (point-derived, documented in the config), or no ``gt_boxes`` when
      ``point_box_size`` is 0.

    The same transforms move image, masks and points (masks are painted into one label map,
    transformed once with nearest-neighbour resampling, then split again). Without masks, an
    instance whose point leaves the image is dropped. With masks, an instance is kept as long
    as part of its mask is visible (``keep_cut_masks``): a random crop that cuts a nucleus
    keeps its visible part, with the box of that part, and marks its point as outside
    (``gt_point_inside`` False, point ``(-1, -1)``; point-based losses must skip such rows).
    Dropping it instead, as this mapper did before, made its visible pixels background, i.e. a
    false negative in every crop for every mask-trained model; Detectron2's own mapper keeps
    such instances too (``filter_empty_instances`` only removes empty ones). An instance whose
    mask becomes empty is dropped. Points-only records (no ``segmentation``/``bbox``) work
    without masks.

    In training, the whole image is first stain-normalised (``stain_normalizer``; kept in
    memory, see :class:`_ImageCache`), then augmented, then stain-jittered (``stain_jitter``,
    on the crop: a per-pixel colour change, ~30x cheaper there); a crop at points
    (``RandomCropAtPoints``) sees the annotated points. Warps fill the label map with 0
    (background) outside the image.

    At test time (``is_train=False``) the image is transformed by the test augmentations
    (none by default) and ``annotations`` are kept untouched, in original coordinates, so
    the evaluator can read the ground truth from them.
    """

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        augmentations,
        image_format="RGB",
        use_masks="auto",
        labeled_only=True,
        point_box_size=16,
        keep_cut_masks=True,
        stain_normalizer=None,
        stain_jitter=None,
    ):
        """
        Parameters
        ----------
        is_train : bool
            Training (build instances) or inference mode.
        augmentations : list
            Detectron2 ``Augmentation`` or ``Transform`` objects.
        image_format : {"RGB", "BGR"}
            Channel order of the output image.
        use_masks : {"auto", True, False}
            Put ``gt_masks`` on the instances: ``"auto"`` only when the record's settings say
            ``annotation == "partial_mask"``.
        labeled_only : bool
            Keep only annotations with ``point_labeled`` in training.
        point_box_size : int
            Side of the point-centred boxes used when masks are not used (0 = no boxes).
        keep_cut_masks : bool
            With masks, keep an instance whose point left the image while part of its mask is
            visible (True, the default since the fix of issue 17); False restores the old
            behaviour (dropped, its pixels become background), for comparisons only.
        stain_normalizer, stain_jitter : callable, optional
            Training steps on the whole RGB image before the augmentations
            (:class:`~nucleiweak_d2.data.stain.StainNormalizer`,
            :class:`~nucleiweak_d2.data.stain.StainJitter`).
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if use_masks not in ("auto", True, False):
            raise ValueError(f"use_masks must be 'auto', True or False, got {use_masks!r}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.use_masks = use_masks
        self.labeled_only = labeled_only
        self.point_box_size = float(point_box_size)
        self.keep_cut_masks = bool(keep_cut_masks)
        self.stain_normalizer, self.stain_jitter = stain_normalizer, stain_jitter
        self._wants_points = _wants_points(augmentations)
        self._images = _ImageCache()

    @classmethod
    def from_config(cls, cfg, is_train=True):
        data = cfg.NUCLEIWEAK.DATA
        if data.USE_MASKS not in _USE_MASKS:
            raise ValueError(
                f"cfg.NUCLEIWEAK.DATA.USE_MASKS must be one of {sorted(_USE_MASKS)}, "
                f"got {data.USE_MASKS!r}"
            )
        normalizer, jitter = build_stain_steps(cfg, is_train)
        return {
            "is_train": is_train,
            "augmentations": build_nuclei_augmentation(cfg, is_train, seg_fill=0),
            "image_format": cfg.INPUT.FORMAT,
            "use_masks": _USE_MASKS[data.USE_MASKS],
            "labeled_only": data.LABELED_ONLY,
            "point_box_size": data.POINT_BOX_SIZE,
            "stain_normalizer": normalizer,
            "stain_jitter": jitter,
        }

    def _wants_masks(self, dataset_dict, annos):
        if self.use_masks == "auto":
            wanted = dataset_dict.get("nucleiweak", {}).get("annotation") == "partial_mask"
        else:
            wanted = self.use_masks
        if wanted and any("segmentation" not in a for a in annos):
            raise ValueError(
                f"masks requested for {dataset_dict['file_name']} but some "
                f"annotations have no 'segmentation' (points-only file?)"
            )
        return wanted

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._images.peek(dataset_dict) if self.is_train else None
        if image is None:  # a normalised training image is kept: decode only the first time
            image = read_image(dataset_dict["file_name"])
        expected = (dataset_dict.get("height"), dataset_dict.get("width"))
        if None not in expected and image.shape[:2] != tuple(expected):
            raise ValueError(
                f"image {dataset_dict['file_name']} is {image.shape[:2]} but its record "
                f"says {expected}"
            )
        if not self.is_train:
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            dataset_dict["image"] = self._to_tensor(aug_input.image)
            return dataset_dict

        annos = [
            a
            for a in dataset_dict.pop("annotations", [])
            if not a.get("iscrowd", 0) and (a.get("point_labeled", True) or not self.labeled_only)
        ]
        use_masks = self._wants_masks(dataset_dict, annos)
        label_map = None
        if use_masks:
            label_map = paint_rles(
                [a["segmentation"] for a in annos], range(1, len(annos) + 1), image.shape[:2]
            ).astype(np.float32)
        if self.stain_normalizer is not None:
            image = self._images.get(dataset_dict, lambda: self.stain_normalizer(image))
        points = np.asarray([a["point"] for a in annos], dtype=np.float64).reshape(-1, 2) + 0.5
        aug_input = NucleiAugInput(
            image, sem_seg=label_map, points=points if self._wants_points else None
        )
        transforms = self.augmentations(aug_input)
        image = _apply(self.stain_jitter, aug_input.image)  # on the crop: cheaper
        height, width = image.shape[:2]
        dataset_dict["image"] = self._to_tensor(image)

        points = transforms.apply_coords(points) if len(points) else points
        inside = (
            (points[:, 0] >= 0)
            & (points[:, 0] < width)
            & (points[:, 1] >= 0)
            & (points[:, 1] < height)
        )
        keep = inside.copy()
        masks = None
        if use_masks:
            index = np.rint(aug_input.sem_seg).astype(np.int64)
            ids = np.arange(1, len(annos) + 1)
            masks = index[None, :, :] == ids[:, None, None]
            visible = masks.reshape(len(annos), -1).any(axis=1)
            keep = visible if self.keep_cut_masks else keep & visible
            masks = masks[keep]
        points, inside = points[keep], inside[keep]
        points[~inside] = -1.0
        labeled = np.asarray([bool(a.get("point_labeled", True)) for a in annos], dtype=bool)[keep]

        instances = Instances((height, width))
        instances.gt_classes = torch.zeros(len(points), dtype=torch.int64)
        instances.gt_points = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
        instances.gt_point_labeled = torch.as_tensor(labeled, dtype=torch.bool)
        instances.gt_point_inside = torch.as_tensor(inside, dtype=torch.bool)
        if masks is not None:
            instances.gt_masks = BitMasks(
                torch.from_numpy(np.ascontiguousarray(masks)).reshape(-1, height, width)
            )
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        elif self.point_box_size > 0:
            half = self.point_box_size / 2.0
            boxes = Boxes(
                torch.cat([instances.gt_points - half, instances.gt_points + half], dim=1)
            )
            boxes.clip((height, width))
            instances.gt_boxes = boxes
        dataset_dict["instances"] = instances
        return dataset_dict

    def _to_tensor(self, image):
        return _image_tensor(image, self.image_format)


class _ImageCache:
    """Training images decoded (and stain-normalised) once, kept in memory up to ``max_bytes``
    (1 GiB: MoNuSeg's 12 training images take 36 MB); beyond it images are made again at each
    use. Keyed by :func:`~nucleiweak_d2.data.records.cache_key`; one per mapper (per process).
    Callers must not modify the arrays it returns (the augmentations copy)."""

    def __init__(self, max_bytes=1 << 30):
        self.max_bytes, self.used, self._images = int(max_bytes), 0, {}

    def peek(self, record):
        """The kept image of ``record``, or None."""
        return self._images.get(cache_key(record))

    def get(self, record, make):
        """The kept image of ``record``, else ``make()`` (kept when it fits)."""
        key = cache_key(record)
        if key not in self._images:
            image = make()
            if self.used + image.nbytes > self.max_bytes:
                return image
            self._images[key] = image
            self.used += image.nbytes
        return self._images[key]


def _apply(step, image):
    """``step(image)``, or ``image`` when the step is off (None)."""
    return image if step is None else step(image)


def _image_tensor(image, image_format):
    """CHW uint8 tensor of an ``(H, W, 3)`` RGB ``image`` in ``image_format`` channel order."""
    if image_format == "BGR":
        image = image[:, :, ::-1]
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class CachedTargetsMapper(abc.ABC):
    """Base of the mappers whose dense training targets are made once per full image.

    A call reads the image (RGB uint8, checked against the record's ``height``/``width``)
    and, in training, takes the targets of the record from :meth:`cached_targets`: they are
    computed by :meth:`_targets` on the *whole* image (never on a crop, so e.g. Voronoi cells
    and k-means see the whole tissue) the first time the image is seen, then kept in memory
    and, when ``cache_dir`` is set, in ``cache_dir/<image_id>.npz`` (read back instead of
    recomputed, also by a later mapper). The image is then augmented, and :meth:`_put` moves
    the full-size targets with the same transforms and puts them into the dataset dict.

    The output holds ``image`` (CHW uint8 tensor in ``image_format``) and, in training, what
    :meth:`_put` adds, without the record's ``annotations``. The record itself is never
    changed (the output is a shallow copy of it). At test time (``is_train=False``) only the
    image is produced, moved by the test augmentations (none from the config), and the
    annotations are kept for the evaluator.

    In training, the whole image is decoded and stain-normalised (``stain_normalizer``) once
    and kept in memory (:class:`_ImageCache`); the targets are made from it (Qu et al.'s k-means
    colour features expect normalised colours); it is then augmented and the crop
    stain-jittered (``stain_jitter``). A crop at points (``RandomCropAtPoints``)
    sees the points of :meth:`_aug_points`. Warps fill moved maps with :attr:`SEG_FILL`
    outside the image; a subclass whose maps cannot take one fill sets :attr:`SUPPORTS_WARPS`
    False and warps are refused.

    Subclasses implement :meth:`_targets` and :meth:`_put`, and extend ``__init__`` and
    ``from_config`` with their own arguments (``@configurable`` on their ``__init__`` too).
    """

    # Value of moved target maps outside the image under warps (2 = ignore of the label maps).
    SEG_FILL = 2
    # Whether the subclass's maps may be warped (affine, any-angle rotation, elastic).
    SUPPORTS_WARPS = True

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        augmentations,
        image_format="RGB",
        cache_dir="",
        stain_normalizer=None,
        stain_jitter=None,
    ):
        """
        Parameters
        ----------
        is_train : bool
            Training (image and targets) or inference (image only) mode.
        augmentations : list
            Detectron2 ``Augmentation`` or ``Transform`` objects.
        image_format : {"RGB", "BGR"}
            Channel order of the output image.
        cache_dir : str
            Folder caching the targets as ``<image_id>.npz``; "" = memory only.
        stain_normalizer, stain_jitter : callable, optional
            Training steps on the whole RGB image (see the class docstring).
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.cache_dir = str(cache_dir)
        self.stain_normalizer, self.stain_jitter = stain_normalizer, stain_jitter
        self._wants_points = _wants_points(augmentations)
        self._cache = {}
        self._images = _ImageCache()

    @classmethod
    def from_config(cls, cfg, is_train=True):
        """``is_train``, the augmentations and stain steps of ``cfg`` and its ``INPUT.FORMAT``."""
        data = cfg.NUCLEIWEAK.DATA
        if is_train and not cls.SUPPORTS_WARPS:
            warps = data.AFFINE > 0 or data.ROTATE_ANY or data.ELASTIC.PROB > 0
            if warps:
                raise ValueError(
                    f"{cls.__name__} cannot warp its targets: set NUCLEIWEAK.DATA.AFFINE 0, "
                    "ROTATE_ANY False and ELASTIC.PROB 0"
                )
        normalizer, jitter = build_stain_steps(cfg, is_train)
        ret = {
            "is_train": is_train,
            "augmentations": build_nuclei_augmentation(cfg, is_train, seg_fill=cls.SEG_FILL),
            "image_format": cfg.INPUT.FORMAT,
        }
        # only when on, so that subclasses written before the stain steps keep working
        if normalizer is not None:
            ret["stain_normalizer"] = normalizer
        if jitter is not None:
            ret["stain_jitter"] = jitter
        return ret

    def _aug_points(self, record):
        """``(N, 2)`` continuous (x, y) points a crop at points may centre on: the record's
        annotated points (pixel centre + 0.5)."""
        return record_points(record) + 0.5

    @abc.abstractmethod
    def _targets(self, record, image):
        """Compute the full-size targets of one image.

        Parameters
        ----------
        record : dict
            Detectron2 dataset dict of the image.
        image : numpy.ndarray
            ``(H, W, 3)`` RGB uint8 image of ``record`` (not augmented).

        Returns
        -------
        dict of str to numpy.ndarray
            Named arrays (stored as such in the ``.npz`` cache).
        """

    @abc.abstractmethod
    def _put(self, d, maps, transforms, shape):
        """Move the targets by the augmentation and put them into the dataset dict.

        Parameters
        ----------
        d : dict
            The (copied) dataset dict being built; modified in place.
        maps : dict of str to numpy.ndarray
            The full-size targets of :meth:`_targets`, shared with the cache: do not modify
            them in place.
        transforms : detectron2.data.transforms.TransformList
            The transforms that moved the image.
        shape : tuple of int
            ``(H, W)`` of the augmented image (the full image's is ``d["height"]``,
            ``d["width"]``).
        """

    def cached_targets(self, record, image):
        """Targets of ``record``, from the cache or computed.

        Parameters
        ----------
        record : dict
            Detectron2 dataset dict (its ``image_id`` is the cache key).
        image : numpy.ndarray
            ``(H, W, 3)`` RGB uint8 full image of ``record``.

        Returns
        -------
        dict of str to numpy.ndarray
            The full-size targets of :meth:`_targets` (the cached object itself).
        """
        key = cache_key(record)
        if key in self._cache:
            return self._cache[key]
        path = Path(self.cache_dir) / f"{key}.npz" if self.cache_dir else None
        if path is not None and path.is_file():
            with np.load(path) as z:
                maps = {k: z[k] for k in z.files}
        else:
            maps = self._targets(record, image)
            if path is not None:
                savez_compressed(path, **maps)
        self._cache[key] = maps
        return maps

    def __call__(self, dataset_dict):
        # A shallow copy: the record's nested values (annotations) are only read, and a deep
        # copy of a MoNuSeg record (~700 annotations) took ~30 % of a training sample's time.
        d = dict(dataset_dict)
        image = self._images.peek(d) if self.is_train else None
        if image is None:
            image = np.array(read_image(d["file_name"]))  # RGB uint8, writable
        if image.shape[:2] != (d["height"], d["width"]):
            raise ValueError(
                f"{d['file_name']}: image is {image.shape[:2]}, record says "
                f"{(d['height'], d['width'])}"
            )
        points = None
        if self.is_train:
            image = self._images.get(d, lambda: _apply(self.stain_normalizer, image))
            maps = self.cached_targets(d, image)
            if self._wants_points:
                points = self._aug_points(d)
        aug = NucleiAugInput(image, points=points)
        transforms = self.augmentations(aug)
        image = aug.image
        if self.is_train:
            self._put(d, maps, transforms, image.shape[:2])
            image = _apply(self.stain_jitter, image)  # on the crop: cheaper
            # the targets hold what training needs; the full image's annotations would only
            # be pickled from the loader's worker to the trainer with every sample
            d.pop("annotations", None)
        d["image"] = _image_tensor(image, self.image_format)
        return d
