"""``NucleiWeakClassicalSegmentor``: the classical baseline as a Detectron2 meta-architecture.

It has no parameters and cannot be trained; at inference it runs
:func:`~nucleiweak_d2.methods.classical.segment.classical_instances` on each image, so the
baseline goes through the same test loader, evaluator, predictor and tools as the learned
methods.
"""

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from skimage.segmentation import relabel_sequential
from torch import nn
from torch.nn import functional as F

from ...modeling.meta_arch import instances_from_map
from .segment import classical_instances

__all__ = ["NucleiWeakClassicalSegmentor"]


@META_ARCH_REGISTRY.register()
class NucleiWeakClassicalSegmentor(nn.Module):
    """Classical nuclei segmentation (stain channel, threshold, watershed) as a model.

    Inference outputs per image: ``"instance_map"`` (H, W) int32 tensor at the record's
    ``height`` x ``width`` and, when ``output_instances``, ``"instances"`` with dense
    ``pred_masks`` (score 1 each) for COCOEvaluator. Its state dict is empty: any checkpoint
    of a learned model is refused when loaded into it, and its own checkpoint holds nothing.
    """

    @configurable
    def __init__(self, *, segment_args, input_format="RGB", output_instances=False):
        """
        Parameters
        ----------
        segment_args : dict
            Keyword arguments of :func:`classical_instances` (``channel``, ``sigma``,
            ``threshold``, ``fill_holes``, ``min_area``, ``split``, ``min_distance``).
        input_format : {"RGB", "BGR"}
            Channel order of the input ``"image"`` tensors (``cfg.INPUT.FORMAT``).
        output_instances : bool
            Also return ``"instances"``.
        """
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        self.segment_args = dict(segment_args)
        self.input_format = input_format
        self.output_instances = bool(output_instances)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.NUCLEIWEAK.CLASSICAL
        return {
            "segment_args": {
                "channel": c.CHANNEL,
                "sigma": c.SIGMA,
                "threshold": c.THRESHOLD,
                "fill_holes": c.FILL_HOLES,
                "min_area": c.MIN_AREA,
                "split": c.SPLIT,
                "min_distance": c.MIN_DISTANCE,
            },
            "input_format": cfg.INPUT.FORMAT,
            "output_instances": c.OUTPUT_INSTANCES,
        }

    def forward(self, batched_inputs):
        """A list of output dicts (see the class docstring); training raises ValueError."""
        if self.training:
            raise ValueError(
                "NucleiWeakClassicalSegmentor has nothing to train; run it through "
                "NucleiWeakClassicalPipeline (its eval stage) or in eval mode"
            )
        return [self.inference_single(x) for x in batched_inputs]

    def inference_single(self, input_per_image):
        """Outputs of one input dict (``"image"``: (3, H, W) uint8 tensor)."""
        image = input_per_image["image"].detach().cpu().numpy().transpose(1, 2, 0)
        if self.input_format == "BGR":
            image = image[:, :, ::-1]
        inst = classical_instances(np.ascontiguousarray(image), **self.segment_args)
        height = int(input_per_image.get("height", inst.shape[0]))
        width = int(input_per_image.get("width", inst.shape[1]))
        inst = torch.from_numpy(inst)
        if inst.shape != (height, width):  # a test-time resize: back to the record's size
            inst = F.interpolate(inst[None, None].float(), size=(height, width), mode="nearest")
            inst = torch.from_numpy(relabel_sequential(inst[0, 0].to(torch.int32).numpy())[0])
        out = {"instance_map": inst}
        if self.output_instances:
            inst_np = inst.numpy()
            out["instances"] = instances_from_map(inst_np, np.ones(inst_np.shape, np.float32))
        return out
