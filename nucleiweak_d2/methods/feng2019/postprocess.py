"""Post-processing of the detected nuclei by Feng et al. 2019: a 3x3 dilation of every mask.

Feng et al. (section III): "For postprocessing, we simply dilated the detected nuclei with a
rectangular structuring element of size 3 x 3, as suggested by [27]" (a Mask R-CNN
entry of the Kaggle 2018 Data Science Bowl). Our protocol (docs/PROTOCOL.md) allows no post-processing beyond the
method's own; this one is the method's own, so it is a model option
(``NUCLEIWEAK.FENG2019.DILATE_MASKS``, off by default) applied to the model's inference output,
for the Feng model and for its baselines (``NucleiWeakFeng2019BaselineRCNN``), so that a
comparison applies it to every model or to none.
"""

import torch

__all__ = ["dilate_masks", "dilate_results"]


def dilate_masks(masks, size=3):
    """Dilate each mask by a ``size x size`` square (separable; border pixels stay inside).

    Parameters
    ----------
    masks : torch.Tensor
        ``(N, H, W)`` bool masks (or float masks: grey dilation, i.e. a running maximum).
    size : int
        Odd side of the square structuring element (1: unchanged).

    Returns
    -------
    torch.Tensor
        Same shape and dtype; the input is not modified.
    """
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    out = masks.clone()
    for dim in (-2, -1):
        src = out.clone()
        n = src.shape[dim]
        for s in range(1, min(size // 2, n - 1) + 1):
            # out[i] = max(out[i], src[i - s]) and max(out[i], src[i + s])
            hi, lo = out.narrow(dim, s, n - s), out.narrow(dim, 0, n - s)
            hi.copy_(torch.maximum(hi, src.narrow(dim, 0, n - s)))
            lo.copy_(torch.maximum(lo, src.narrow(dim, s, n - s)))
    return out


def dilate_results(results, size=3):
    """Dilate ``pred_masks`` of Detectron2 inference results (list of ``{"instances": ...}``).

    The masks must be the pasted, image-sized ones (after ``detector_postprocess``). Boxes
    and scores are left unchanged. The list and its ``Instances`` are modified in place and
    returned.
    """
    for result in results:
        inst = result.get("instances")
        if inst is not None and inst.has("pred_masks") and len(inst) > 0:
            inst.pred_masks = dilate_masks(inst.pred_masks, size)
    return results
