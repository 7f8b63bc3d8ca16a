"""Batch-norm folding for inference: each Detectron2 ``Conv2d`` followed by its eval-mode
``BatchNorm2d`` (``conv.norm``) becomes one convolution with a bias.

``y = gamma (W x + b - mean) / sqrt(var + eps) + beta`` is ``W' x + b'`` with
``W' = W gamma / sqrt(var + eps)`` and ``b' = beta + (b - mean) gamma / sqrt(var + eps)``: the
same output (up to rounding) without the normalisation pass. Used by the UNet meta-architectures'
fast CPU inference; training never sees the folded copy.
"""

import copy

import torch
from detectron2.layers import Conv2d
from torch import nn

__all__ = ["fold_batchnorm", "parameter_versions"]


@torch.no_grad()
def fold_batchnorm(module):
    """A deep copy of ``module`` (in eval mode) with every ``Conv2d.norm`` BatchNorm folded.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    torch.nn.Module
        The copy; ``module`` is unchanged. Norms other than ``nn.BatchNorm2d`` (e.g. GroupNorm,
        FrozenBatchNorm2d) are kept as they are.
    """
    folded = copy.deepcopy(module).eval()
    for conv in folded.modules():
        norm = getattr(conv, "norm", None)
        if not isinstance(conv, Conv2d) or not isinstance(norm, nn.BatchNorm2d):
            continue
        if not norm.track_running_stats or norm.running_mean is None:
            continue  # batch statistics even in eval mode: nothing fixed to fold
        scale = torch.rsqrt(norm.running_var.float() + norm.eps)
        if norm.affine:
            scale = scale * norm.weight.float()
        shift = -norm.running_mean.float() * scale
        if norm.affine:
            shift = shift + norm.bias.float()
        weight = conv.weight.float() * scale.reshape(-1, 1, 1, 1)
        bias = shift if conv.bias is None else shift + conv.bias.float() * scale
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        conv.norm = None
    return folded


def parameter_versions(module):
    """A key that changes when any parameter or buffer of ``module`` is replaced or modified in
    place (optimizer steps, ``load_state_dict``): storage pointers and version counters."""
    return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))
