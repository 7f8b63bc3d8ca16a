"""``NucleiWeakUNetSegmentor``: SemanticSegmentor with a multi-target ignore-aware loss, an
optional dense-CRF loss, and instance outputs (Qu et al.'s post-processing).

Shared by the UNet methods; configured by ``cfg.NUCLEIWEAK.UNET`` (post-processing, tiling) and
``cfg.NUCLEIWEAK.LOSSES.CRF`` (bandwidths). The CRF loss is off unless a pipeline stage passes
``crf_weight`` to the constructor (Qu et al.'s fine-tuning stage does).
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.structures import ImageList

from ...data.registry import register_alias
from .postprocess import instances_from_foreground
from .unet import UNetModelMixin, instances_from_map

__all__ = ["NucleiWeakUNetSegmentor"]


@META_ARCH_REGISTRY.register()
class NucleiWeakUNetSegmentor(UNetModelMixin, SemanticSegmentor):
    """Semantic segmentor with Qu et al.'s instance post-processing.

    Training: ``"sem_seg"`` targets ``(K, H, W)`` (Voronoi, cluster) go to the head's
    ignore-aware loss ``sum_k w_k CE_k`` (``alpha L_vor + (1 - alpha) L_cluster``); with
    ``crf_weight > 0`` the dense-CRF loss of the foreground probability on the image in [0, 1]
    is added (``loss_crf``), padding pixels (pure black) excluded.

    Inference outputs per image: ``"sem_seg"`` (C, H, W) class probabilities, ``"prob"``
    (H, W) foreground probability, ``"instance_map"`` (H, W) int32 (foreground probability
    above the threshold, connected components, objects < ``min_area`` removed, holes filled,
    optional watershed split) and, when ``output_instances``, ``"instances"`` with dense
    ``pred_masks`` for COCOEvaluator.

    The foreground threshold is the persistent buffer ``fg_threshold`` (0.5 = Qu et al.'s
    argmax of the two classes) and the split of touching nuclei the buffer ``split_distance``
    (-1: the constructor's ``split_touching`` / ``split_min_distance``; 0: no split; d > 0: a
    watershed with seeds at least d pixels apart), unless ``fg_threshold`` is given (> 0) to
    the constructor, which then forces the constructor's post-processing. The buffers are part
    of the checkpoint, so post-processing calibrated on val
    (:func:`nucleiweak_d2.engine.calibration.calibrate_fg_threshold`) travels with the weights
    into evaluation, ``tools/predict.py`` and the Python API. A checkpoint written before the
    buffers existed loads with 0.5 and the constructor's split.
    """

    @configurable
    def __init__(
        self,
        *,
        crf_weight=0.0,
        crf_sigma_xy=9.0,
        crf_sigma_rgb=0.1,
        min_area=20,
        fill_holes=True,
        split_touching=False,
        split_min_distance=5,
        output_instances=True,
        fg_threshold=-1.0,
        **kwargs,
    ):
        """
        Parameters
        ----------
        crf_weight : float
            Weight of the dense-CRF loss (0 = off; ``from_config`` gives 0, a pipeline stage
            passes ``cfg.NUCLEIWEAK.LOSSES.CRF.WEIGHT``).
        crf_sigma_xy, crf_sigma_rgb : float
            Bilateral kernel bandwidths (pixels; colour in [0, 1]).
        min_area, fill_holes, split_touching, split_min_distance
            Post-processing, see :func:`instances_from_foreground`.
        output_instances : bool
            Also return ``"instances"`` (memory: one dense mask per object).
        fg_threshold : float
            Foreground probability threshold forced at inference (in (0, 1)); ``<= 0`` uses the
            checkpoint's calibrated buffer (0.5 when uncalibrated).
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
        if not fg_threshold < 1.0:
            raise ValueError(f"fg_threshold must be < 1 (<= 0: calibrated), got {fg_threshold}")
        self.fg_threshold_override = float(fg_threshold)
        self.register_buffer("fg_threshold", torch.tensor(0.5), persistent=True)
        self.register_buffer("split_distance", torch.tensor(-1.0), persistent=True)

    @property
    def threshold(self):
        """The foreground threshold inference uses (forced, else the calibrated buffer)."""
        if self.fg_threshold_override > 0:
            return self.fg_threshold_override
        return float(self.fg_threshold)

    @property
    def split(self):
        """``(split_touching, split_min_distance)`` inference uses (forced or configured, else
        the calibrated buffer)."""
        distance = float(self.split_distance)
        if self.fg_threshold_override > 0 or distance < 0:
            return self.split_touching, self.split_min_distance
        return distance > 0, int(round(distance))

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        unet, crf = cfg.NUCLEIWEAK.UNET, cfg.NUCLEIWEAK.LOSSES.CRF
        ret.update(
            crf_weight=0.0,  # a pipeline stage turns the CRF loss on (constructor argument)
            crf_sigma_xy=crf.SIGMA_XY,
            crf_sigma_rgb=crf.SIGMA_RGB,
            min_area=unet.MIN_AREA,
            fill_holes=unet.FILL_HOLES,
            split_touching=unet.SPLIT_TOUCHING,
            split_min_distance=unet.SPLIT_MIN_DISTANCE,
            output_instances=unet.OUTPUT_INSTANCES,
            fg_threshold=unet.FG_THRESHOLD,
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
                self.backbone.size_divisibility,
                self.sem_seg_head.ignore_value,
            ).tensor
            logits = self.logits(images)
            # losses in float32 also under autocast (CPU bf16, CUDA fp16)
            with torch.autocast(logits.device.type, enabled=False):
                logits = logits.float()
                losses = self.sem_seg_head.losses(logits, targets)
                if self.crf_weight > 0:
                    losses["loss_crf"] = self.crf_weight * self.crf_loss(logits, raw01.tensor)
            return losses

        with torch.no_grad():
            logits = self.logits(images)
        return [
            self.inference_single(logits[i], images.image_sizes[i], x)
            for i, x in enumerate(batched_inputs)
        ]

    def crf_loss(self, logits, image01):
        """Dense-CRF loss of the softmax foreground probability (padding excluded)."""
        from ..losses.dense_crf import dense_crf_loss, nonblack_mask

        prob_fg = F.softmax(logits.float(), dim=1)[:, 1]
        return dense_crf_loss(
            prob_fg,
            image01,
            mask=nonblack_mask(image01),
            sigma_xy=self.crf_sigma_xy,
            sigma_rgb=self.crf_sigma_rgb,
        )

    def inference_single(self, logits, image_size, input_per_image):
        """Outputs of one image from its padded logits ``(C, Hpad, Wpad)``."""
        scores = F.softmax(self.resize_output(logits, image_size, input_per_image), dim=0)
        prob = scores[1] if scores.shape[0] > 1 else scores[0]
        fg = (prob > self.threshold).cpu().numpy()
        inst_map = instances_from_foreground(fg, self.min_area, self.fill_holes, *self.split)
        out = {"sem_seg": scores, "prob": prob, "instance_map": torch.from_numpy(inst_map)}
        if self.output_instances:
            out["instances"] = instances_from_map(inst_map, prob.cpu().numpy())
        return out


# Name used by configs written before the methods/ layout.
register_alias(META_ARCH_REGISTRY, "NucleiSemanticSegmentor", NucleiWeakUNetSegmentor)
