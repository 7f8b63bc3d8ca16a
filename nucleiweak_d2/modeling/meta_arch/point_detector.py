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
from .postprocess import label_components, points_from_components
from .unet import UNetModelMixin

__all__ = ["NucleiWeakUNetPointDetector", "NucleiWeakPointDetectorEnsemble", "point_outputs"]


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

        return [
            point_outputs(p, self.threshold, self.min_area, self.max_area)
            for p in self.probabilities(batched_inputs, images)
        ]

    def probabilities(self, batched_inputs, images=None):
        """The ``(H, W)`` sigmoid map of each input at its output size (inference).

        Parameters
        ----------
        batched_inputs : list of dict
            Detectron2 inputs.
        images : ImageList, optional
            ``self.preprocess(batched_inputs)[0]`` when the caller already has it.

        Returns
        -------
        list of torch.Tensor
        """
        if images is None:
            images, _ = self.preprocess(batched_inputs)
        with torch.no_grad():
            logits = self.logits(images)
        return [
            torch.sigmoid(self.resize_output(logits[i], images.image_sizes[i], x))[0]
            for i, x in enumerate(batched_inputs)
        ]


def point_outputs(prob, threshold, min_area, max_area):
    """The detector's output dict of one ``(H, W)`` probability map (see
    :class:`NucleiWeakUNetPointDetector`)."""
    blobs = measure.label(prob.cpu().numpy() > threshold, connectivity=2)
    points = points_from_components(*label_components(blobs), min_area, max_area)
    return {
        "prob": prob,
        "pred_points": torch.as_tensor(points).float(),
        "instance_map": torch.from_numpy(blobs.astype("int32")),
    }


class NucleiWeakPointDetectorEnsemble(torch.nn.Module):
    """Several trained point detectors as one: the mean of their probability maps, detected with
    the post-processing of the ensemble (``threshold``, ``min_area``, ``max_area``; the first
    member's when built). Inference only; its outputs are those of
    :class:`NucleiWeakUNetPointDetector`.

    Parameters
    ----------
    members : sequence of NucleiWeakUNetPointDetector
        Trained detectors (at least one) of the same input format.
    """

    def __init__(self, members):
        super().__init__()
        if not members:
            raise ValueError("an ensemble of detectors needs at least one member")
        self.members = torch.nn.ModuleList(members)
        first = self.members[0]
        self.threshold, self.min_area, self.max_area = (
            first.threshold,
            first.min_area,
            first.max_area,
        )

    @property
    def device(self):
        return self.members[0].device

    def forward(self, batched_inputs):
        """A list of output dicts (inference only)."""
        if self.training:
            raise RuntimeError("an ensemble of detectors only infers; train its members")
        total = None
        for member in self.members:
            probs = [p.float() for p in member.probabilities(batched_inputs)]
            total = probs if total is None else [t + p for t, p in zip(total, probs)]
        n = len(self.members)
        return [point_outputs(t / n, self.threshold, self.min_area, self.max_area) for t in total]


# Name used by configs written before the methods/ layout.
register_alias(META_ARCH_REGISTRY, "NucleiPointDetector", NucleiWeakUNetPointDetector)
