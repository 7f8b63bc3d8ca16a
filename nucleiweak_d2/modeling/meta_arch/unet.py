"""Parts shared by the UNet meta-architectures: preprocessing, (tiled) stride-1 logits, output
resizing, and Detectron2 ``Instances`` from an instance map."""

import numpy as np
import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, Instances
from scipy import ndimage as ndi

from ..backbone.tiling import sliding_window_apply

__all__ = ["UNetModelMixin", "instances_from_map"]


def instances_from_map(instance_map, prob):
    """Detectron2 ``Instances`` (dense ``pred_masks``) from an ``(H, W)`` int instance map.

    ``scores`` is the mean foreground probability of each object.
    """
    h, w = instance_map.shape
    n = int(instance_map.max())
    ids = np.arange(1, n + 1)
    masks = (
        torch.from_numpy(instance_map[None] == ids[:, None, None])
        if n
        else torch.zeros((0, h, w), dtype=torch.bool)
    )
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
        return torch.cat(
            [
                sliding_window_apply(
                    run,
                    images.tensor[i : i + 1],
                    self.tile,
                    self.tile_overlap,
                    self.backbone.size_divisibility,
                )
                for i in range(len(images.tensor))
            ]
        )

    def resize_output(self, result, image_size, input_per_image):
        """Crop padding and resize to the record's ``height``/``width``."""
        height = input_per_image.get("height", image_size[0])
        width = input_per_image.get("width", image_size[1])
        return sem_seg_postprocess(result, image_size, height, width)
