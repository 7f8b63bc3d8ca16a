"""``NucleiSemanticSegmentor``: SemanticSegmentor with multi-target ignore-aware loss, an
optional dense-CRF loss, and instance outputs (Qu et al.'s post-processing)."""

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, Instances
from scipy import ndimage as ndi

from ..backbone.tiling import sliding_window_apply
from .postprocess import instances_from_foreground

__all__ = ["NucleiSemanticSegmentor", "UNetModelMixin", "instances_from_map"]


def instances_from_map(instance_map, prob):
    """Detectron2 ``Instances`` (dense ``pred_masks``) from an ``(H, W)`` int instance map.

    ``scores`` is the mean foreground probability of each object.
    """
    h, w = instance_map.shape
    n = int(instance_map.max())
    ids = np.arange(1, n + 1)
    masks = torch.from_numpy(instance_map[None] == ids[:, None, None]) if n else \
        torch.zeros((0, h, w), dtype=torch.bool)
    scores = ndi.mean(prob, instance_map, ids) if n else np.zeros(0)
    inst = Instances((h, w))
    inst.pred_masks = masks
    inst.pred_boxes = BitMasks(masks).get_bounding_boxes()
    inst.scores = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    inst.pred_classes = torch.zeros(n, dtype=torch.int64)
    return inst


class UNetModelMixin:
    """Preprocessing and (tiled) logits shared by the UNet meta-architectures."""

    def preprocess(self, batched_inputs):
        """Return ``(normalised ImageList, raw ImageList in [0, 1])``, both zero-padded."""
        raw = [x["image"].to(self.device).float() for x in batched_inputs]
        norm = [(x - self.pixel_mean) / self.pixel_std for x in raw]
        div = self.backbone.size_divisibility
        images = ImageList.from_tensors(norm, div)
        raw01 = ImageList.from_tensors([x / 255.0 for x in raw], div)
        return images, raw01

    def logits(self, images):
        """Stride-1 logits ``(N, C, Hpad, Wpad)``; tiled per image when ``tile > 0``."""
        def run(x):
            return self.sem_seg_head.layers(self.backbone(x))

        if self.tile <= 0:
            return run(images.tensor)
        return torch.cat([
            sliding_window_apply(run, images.tensor[i:i + 1], self.tile, self.tile_overlap,
                                 self.backbone.size_divisibility)
            for i in range(len(images.tensor))
        ])

    def resize_output(self, result, image_size, input_per_image):
        """Crop padding and resize to the record's ``height``/``width``."""
        height = input_per_image.get("height", image_size[0])
        width = input_per_image.get("width", image_size[1])
        return sem_seg_postprocess(result, image_size, height, width)


@META_ARCH_REGISTRY.register()
class NucleiSemanticSegmentor(UNetModelMixin, SemanticSegmentor):
    """Semantic segmentor of Qu et al. with instance post-processing.

    Training: ``"sem_seg"`` targets ``(K, H, W)`` (Voronoi, cluster) go to the head's
    ignore-aware loss ``sum_k w_k CE_k`` (``alpha L_vor + (1 - alpha) L_cluster``); with
    ``crf_weight > 0`` the dense-CRF loss of the foreground probability on the image in [0, 1]
    is added (``loss_crf``), padding pixels (pure black) excluded.

    Inference outputs per image: ``"sem_seg"`` (C, H, W) class probabilities, ``"prob"``
    (H, W) foreground probability, ``"instance_map"`` (H, W) int32 (argmax, connected
    components, objects < ``min_area`` removed, holes filled, optional watershed split) and,
    when ``output_instances``, ``"instances"`` with dense ``pred_masks`` for COCOEvaluator.
    """

    @configurable
    def __init__(self, *, crf_weight=0.0, crf_sigma_xy=9.0, crf_sigma_rgb=0.1, min_area=20,
                 fill_holes=True, split_touching=False, split_min_distance=5,
                 output_instances=True, tile=0, tile_overlap=80, **kwargs):
        """
        Parameters
        ----------
        crf_weight : float
            Weight of the dense-CRF loss (0 = off).
        crf_sigma_xy, crf_sigma_rgb : float
            Bilateral kernel bandwidths (pixels; colour in [0, 1]).
        min_area, fill_holes, split_touching, split_min_distance
            Post-processing, see :func:`instances_from_foreground`.
        output_instances : bool
            Also return ``"instances"`` (memory: one dense mask per object).
        tile, tile_overlap : int
            Sliding-window inference (``tile <= 0``: whole image).
        **kwargs
            ``backbone``, ``sem_seg_head``, ``pixel_mean``, ``pixel_std`` of
            :class:`SemanticSegmentor`.
        """
        super().__init__(**kwargs)
        self.crf_weight = float(crf_weight)
        self.crf_sigma_xy, self.crf_sigma_rgb = float(crf_sigma_xy), float(crf_sigma_rgb)
        self.min_area, self.fill_holes = int(min_area), bool(fill_holes)
        self.split_touching, self.split_min_distance = bool(split_touching), int(split_min_distance)
        self.output_instances = bool(output_instances)
        self.tile, self.tile_overlap = int(tile), int(tile_overlap)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        q = cfg.NUCLEIWEAK.QU2020
        ret.update(
            crf_weight=q.CRF.WEIGHT if q.CRF.ENABLED else 0.0,
            crf_sigma_xy=q.CRF.SIGMA_XY, crf_sigma_rgb=q.CRF.SIGMA_RGB,
            min_area=q.MIN_AREA, fill_holes=q.FILL_HOLES, split_touching=q.SPLIT_TOUCHING,
            split_min_distance=q.SPLIT_MIN_DISTANCE, output_instances=q.OUTPUT_INSTANCES,
            tile=cfg.NUCLEIWEAK.UNET.INFERENCE_TILE,
            tile_overlap=cfg.NUCLEIWEAK.UNET.INFERENCE_OVERLAP,
        )
        return ret

    def forward(self, batched_inputs):
        """Losses in training, a list of output dicts (see class docstring) in inference."""
        images, raw01 = self.preprocess(batched_inputs)
        if self.training:
            if "sem_seg" not in batched_inputs[0]:
                raise ValueError("training inputs need 'sem_seg' targets")
            targets = ImageList.from_tensors(
                [x["sem_seg"].to(self.device) for x in batched_inputs],
                self.backbone.size_divisibility, self.sem_seg_head.ignore_value).tensor
            logits = self.logits(images)
            losses = self.sem_seg_head.losses(logits, targets)
            if self.crf_weight > 0:
                losses["loss_crf"] = self.crf_weight * self.crf_loss(logits, raw01.tensor)
            return losses

        with torch.no_grad():
            logits = self.logits(images)
        return [self.inference_single(logits[i], images.image_sizes[i], x)
                for i, x in enumerate(batched_inputs)]

    def crf_loss(self, logits, image01):
        """Dense-CRF loss of the softmax foreground probability (padding excluded)."""
        from ..losses.dense_crf import dense_crf_loss, nonblack_mask

        prob_fg = F.softmax(logits.float(), dim=1)[:, 1]
        return dense_crf_loss(prob_fg, image01, mask=nonblack_mask(image01),
                              sigma_xy=self.crf_sigma_xy, sigma_rgb=self.crf_sigma_rgb)

    def inference_single(self, logits, image_size, input_per_image):
        """Outputs of one image from its padded logits ``(C, Hpad, Wpad)``."""
        scores = F.softmax(self.resize_output(logits, image_size, input_per_image), dim=0)
        prob = scores[1] if scores.shape[0] > 1 else scores[0]
        fg = (scores.argmax(dim=0) == 1).cpu().numpy() if scores.shape[0] > 1 else \
            (prob > 0.5).cpu().numpy()
        inst_map = instances_from_foreground(fg, self.min_area, self.fill_holes,
                                             self.split_touching, self.split_min_distance)
        out = {"sem_seg": scores, "prob": prob, "instance_map": torch.from_numpy(inst_map)}
        if self.output_instances:
            out["instances"] = instances_from_map(inst_map, prob.cpu().numpy())
        return out
