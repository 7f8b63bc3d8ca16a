"""``NucleiWeakNam2023Net``: PROnet as a Detectron2 meta-architecture.

Encoder + ``NucleiWeakNam2023Head`` (binary 2-class logits, 2-channel offsets, 1-channel centre
logit). Training inputs (from ``NucleiWeakNam2023Mapper``): ``"sem_seg"`` ``(2, H, W)``
(Voronoi, cluster), ``"center_target"`` ``(1, H, W)`` and, once the offset loss is on,
``"offset_target"`` ``(2, H, W)`` with ``"offset_weight"`` ``(1, H, W)`` (ignored by a head
without offsets, the "offset x" ablation). Losses
(``L = lambda_B L_B + lambda_O L_O + lambda_C L_C``): ``loss_sem_seg_t0`` / ``_t1`` (Voronoi,
cluster cross-entropy, weights ``NUCLEIWEAK.UNET.TARGET_WEIGHTS``), ``loss_center``
(CornerNet focal loss), ``loss_offset`` (L1). Padding pixels count in none of them.

Inference outputs per image: ``"sem_seg"`` (2, H, W) probabilities, ``"prob"`` (H, W)
foreground probability, ``"offsets"`` (2, H, W), ``"center_heatmap"`` (H, W), ``"pred_points"``
(K, 2) heatmap peaks (x, y), ``"instance_map"`` (H, W) int32 (Eq. 1, see
:mod:`.postprocess`) and, with ``output_instances``, ``"instances"``.
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.structures import ImageList

from ...modeling.meta_arch.unet import UNetModelMixin, instances_from_map
from .head import split_outputs
from .losses import center_focal_loss, offset_l1_loss
from .postprocess import heatmap_peaks, instances_from_centres

__all__ = ["NucleiWeakNam2023Net"]


@META_ARCH_REGISTRY.register()
class NucleiWeakNam2023Net(UNetModelMixin, SemanticSegmentor):
    """PROnet: binary, offset and centre modules on a ResNet-UNet; see the module docstring."""

    # a flip negates an offset channel: no NUCLEIWEAK.UNET.TEST_FLIPS
    FLIP_TTA_SUPPORTED = False

    @configurable
    def __init__(
        self,
        *,
        center_weight=1.0,
        offset_weight=1.0,
        focal_alpha=2.0,
        focal_beta=4.0,
        center_threshold=0.2,
        min_area=20,
        output_instances=True,
        **kwargs,
    ):
        """
        Parameters
        ----------
        center_weight, offset_weight : float
            lambda_C and lambda_O (lambda_B is ``MODEL.SEM_SEG_HEAD.LOSS_WEIGHT``).
        focal_alpha, focal_beta : float
            Exponents of the centre focal loss.
        center_threshold : float
            Heatmap peaks above it are centres.
        min_area : int
            Instances smaller than this (pixels) are removed.
        output_instances : bool
            Also return ``"instances"`` (one dense mask per object).
        **kwargs
            ``backbone``, ``sem_seg_head`` (a ``NucleiWeakNam2023Head``), ``pixel_mean``,
            ``pixel_std`` of :class:`SemanticSegmentor`.
        """
        super().__init__(**kwargs)
        if not hasattr(self.sem_seg_head, "with_offset"):
            raise ValueError(
                "NucleiWeakNam2023Net needs MODEL.SEM_SEG_HEAD.NAME = "
                f"'NucleiWeakNam2023Head', got {type(self.sem_seg_head).__name__}"
            )
        self.center_weight, self.offset_weight = float(center_weight), float(offset_weight)
        self.focal_alpha, self.focal_beta = float(focal_alpha), float(focal_beta)
        self.center_threshold = float(center_threshold)
        self.min_area = int(min_area)
        self.output_instances = bool(output_instances)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        n, unet = cfg.NUCLEIWEAK.NAM2023, cfg.NUCLEIWEAK.UNET
        ret.update(
            center_weight=n.LOSS.CENTER_WEIGHT,
            offset_weight=n.LOSS.OFFSET_WEIGHT,
            focal_alpha=n.LOSS.FOCAL_ALPHA,
            focal_beta=n.LOSS.FOCAL_BETA,
            center_threshold=n.CENTER.THRESHOLD,
            min_area=unet.MIN_AREA,
            output_instances=unet.OUTPUT_INSTANCES,
        )
        return ret

    def _batch(self, batched_inputs, key, pad_value=0.0):
        return ImageList.from_tensors(
            [x[key].to(self.device) for x in batched_inputs],
            self.backbone.size_divisibility,
            pad_value,
        ).tensor

    def forward(self, batched_inputs):
        """Losses in training, a list of output dicts in inference (see the module docstring)."""
        images, _ = self.preprocess(batched_inputs)
        if not self.training:
            with torch.no_grad():
                out = self.logits(images)
            return [
                self.inference_single(out[i], images.image_sizes[i], x)
                for i, x in enumerate(batched_inputs)
            ]
        for key in ("sem_seg", "center_target"):
            if key not in batched_inputs[0]:
                raise ValueError(f"training inputs need {key!r} (NucleiWeakNam2023Mapper)")
        binary, offset, center = split_outputs(self.logits(images))
        losses = self.sem_seg_head.losses(
            binary, self._batch(batched_inputs, "sem_seg", self.sem_seg_head.ignore_value)
        )
        heat = self._batch(batched_inputs, "center_target", -1.0)  # padding: -1 = not counted
        losses["loss_center"] = self.center_weight * center_focal_loss(
            center, heat.clamp(min=0), heat >= 0, self.focal_alpha, self.focal_beta
        )
        if self.sem_seg_head.with_offset and "offset_target" in batched_inputs[0]:
            losses["loss_offset"] = self.offset_weight * offset_l1_loss(
                offset,
                self._batch(batched_inputs, "offset_target"),
                self._batch(batched_inputs, "offset_weight"),
            )
        return losses

    def inference_single(self, out, image_size, input_per_image):
        """Outputs of one image from its padded 5-channel map ``(5, Hpad, Wpad)``."""
        out = self.resize_output(out, image_size, input_per_image)
        scale = out.new_tensor([out.shape[-1] / image_size[1], out.shape[-2] / image_size[0]])
        scores = F.softmax(out[:2], dim=0)
        offsets = out[2:4] * scale[:, None, None]  # pixels of the output size
        heat = torch.sigmoid(out[4])
        prob = scores[1]
        fg = (scores.argmax(dim=0) == 1).cpu().numpy()
        centres = heatmap_peaks(heat.cpu().numpy(), self.center_threshold)
        inst = instances_from_centres(fg, offsets.cpu().numpy(), centres, self.min_area)
        result = {
            "sem_seg": scores,
            "prob": prob,
            "offsets": offsets,
            "center_heatmap": heat,
            "pred_points": torch.as_tensor(centres, dtype=torch.float32),
            "instance_map": torch.from_numpy(inst),
        }
        if self.output_instances:
            result["instances"] = instances_from_map(inst, prob.cpu().numpy())
        return result
