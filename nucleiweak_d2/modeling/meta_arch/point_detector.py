"""``NucleiWeakUNetPointDetector``: a ResUNet with a 1-channel sigmoid map trained by a weighted
MSE against a dense target (Qu et al.'s detection network), as a Detectron2 meta-architecture.

Configured by ``cfg.NUCLEIWEAK.UNET`` (``POINT_THRESHOLD``, ``POINT_MIN_AREA``,
``POINT_MAX_AREA``, tiling); the targets come from a method's mapper.
"""

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.structures import ImageList
from skimage import measure

from ...data.registry import register_alias
from ..losses.mse import weighted_mse_loss
from .postprocess import points_from_probability
from .unet import UNetModelMixin

__all__ = ["NucleiWeakUNetPointDetector"]


@META_ARCH_REGISTRY.register()
class NucleiWeakUNetPointDetector(UNetModelMixin, SemanticSegmentor):
    """Nucleus detector: encoder + UNet head with ``MODEL.SEM_SEG_HEAD.NUM_CLASSES = 1``.

    Training inputs carry ``"det_target"`` and ``"det_weight"`` ``(1, H, W)`` float maps
    (e.g. Qu et al.'s ``NucleiWeakQu2020DetMapper``); padding gets weight 0. The loss ``loss_det`` is
    :func:`weighted_mse_loss` of ``sigmoid(logits)``.

    Inference outputs per image: ``"prob"`` (H, W) sigmoid map; ``"pred_points"`` (K, 2)
    float (x, y) centroids of the components of ``prob > threshold`` whose area is within
    ``[min_area, max_area]``; ``"instance_map"`` the labelled thresholded map (so that
    NucleiEvaluator, which needs a segmentation output, also accepts the detector).
    """

    @configurable
    def __init__(self, *, threshold=0.35, min_area=12, max_area=200, **kwargs):
        """
        Parameters
        ----------
        threshold : float
            Probability threshold of the detection map.
        min_area, max_area : int
            Component area limits in pixels (``max_area <= 0``: none).
        **kwargs
            ``backbone``, ``sem_seg_head`` (1 output channel), ``pixel_mean``, ``pixel_std``.
        """
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.min_area, self.max_area = int(min_area), int(max_area)

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != 1:
            raise ValueError(
                "NucleiWeakUNetPointDetector needs MODEL.SEM_SEG_HEAD.NUM_CLASSES = 1, got "
                f"{cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}"
            )
        ret = super().from_config(cfg)
        unet = cfg.NUCLEIWEAK.UNET
        ret.update(
            threshold=unet.POINT_THRESHOLD,
            min_area=unet.POINT_MIN_AREA,
            max_area=unet.POINT_MAX_AREA,
        )
        return ret

    def forward(self, batched_inputs):
        """``{"loss_det": ...}`` in training; a list of output dicts in inference."""
        images, _ = self.preprocess(batched_inputs)
        if self.training:
            if "det_target" not in batched_inputs[0]:
                raise ValueError("training inputs need 'det_target' and 'det_weight'")
            div = self.backbone.size_divisibility
            target = ImageList.from_tensors(
                [x["det_target"].to(self.device).float() for x in batched_inputs], div
            ).tensor
            weight = ImageList.from_tensors(
                [x["det_weight"].to(self.device).float() for x in batched_inputs], div
            ).tensor
            prob = torch.sigmoid(self.logits(images).float())
            return {"loss_det": weighted_mse_loss(prob, target, weight)}

        with torch.no_grad():
            logits = self.logits(images)
        outputs = []
        for i, x in enumerate(batched_inputs):
            prob = torch.sigmoid(self.resize_output(logits[i], images.image_sizes[i], x))[0]
            prob_np = prob.cpu().numpy()
            points = points_from_probability(prob_np, self.threshold, self.min_area, self.max_area)
            blobs = measure.label(prob_np > self.threshold, connectivity=2)
            outputs.append(
                {
                    "prob": prob,
                    "pred_points": torch.as_tensor(points).float(),
                    "instance_map": torch.from_numpy(blobs.astype("int32")),
                }
            )
        return outputs


# Name used by configs written before the methods/ layout.
register_alias(META_ARCH_REGISTRY, "NucleiPointDetector", NucleiWeakUNetPointDetector)
