"""Dense-CRF regularised loss of Qu et al. (TMI 2020), after Tang et al. (ECCV 2018).

``L_pair = sum_ij S_i (1 - S_j) W_ij`` with the Gaussian bilateral kernel ``W`` on the features
``(x / sigma_xy, y / sigma_xy, rgb / sigma_rgb)``, the image de-normalised to [0, 1] and ``S`` the
foreground softmax probability. It is the Potts energy of the dense CRF relaxed to probabilities
(paper Eqs. 9-10); the paper fine-tunes with ``L_ce + beta * L_pair``.

Normalisation follows the authors' op (``code_seg/crf_loss``), not the bare paper formula: with a
valid-pixel mask ``m`` (the authors drop pure-black pixels, i.e. padding from augmentation),

    L = weight * mean_b [ sum_i (1 - S_i) m_i (W (m S))_i / sum_i m_i ]      (per image b)

``W`` is applied with :class:`~.bilateral_grid.BilateralGrid` instead of the authors'
permutohedral lattice (see that module for why); ``j = i`` is included (``W_ii = 1``), as in the
lattice.
"""

from typing import Optional

import torch

from .bilateral_grid import DEFAULT_COLOR_STEP, DEFAULT_SPATIAL_STEP, BilateralGrid

__all__ = ["QU2020_CRF_PARAMS", "dense_crf_loss", "nonblack_mask", "dense_crf_postprocess"]

# Loss weight and kernel widths of Qu et al. (TMI 2020 code, options.py).
QU2020_CRF_PARAMS = {
    "MO": {"weight": 0.005, "sigma_xy": 9.0, "sigma_rgb": 0.1},
    "LC": {"weight": 0.001, "sigma_xy": 9.0, "sigma_rgb": 0.2},
}


def nonblack_mask(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Valid-pixel mask of the authors: False where every channel is (almost) 0.

    Parameters
    ----------
    image : torch.Tensor
        ``(N, 3, H, W)`` image in [0, 1].
    eps : float
        Channels ``<= eps`` count as black.

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` bool.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (N, 3, H, W), got {tuple(image.shape)}")
    return (image > eps).any(dim=1)


class _DenseCRFLoss(torch.autograd.Function):
    """Per-image CRF loss with a hand-written gradient.

    Splat, blur and slice of :class:`BilateralGrid` are linear with ``slice = splat^T`` and a
    symmetric blur ``B``, so with ``t = splat(m S)`` and ``u = splat(m (1 - S))`` the loss is the
    grid inner product ``<u, B t>`` (no slicing needed), and

        dL/dS_i = m_i (W (m (1 - S)) - W (m S))_i = m_i slice(B (u - t))_i,

    i.e. ``W (m (1 - 2S))`` as in the authors' op. The forward blurs ``t`` and, when a gradient is
    needed, ``u`` in the same pass; the backward only slices. The grid (the image-dependent part)
    is built once.
    """

    @staticmethod
    def forward(ctx, fg, image, mask, sigma_xy, sigma_rgb, spatial_step, color_step):
        grid = BilateralGrid(
            image, sigma_xy, sigma_rgb, mask, spatial_step=spatial_step, color_step=color_step
        )
        s = grid.gather(fg.detach().float())[0]  # invalid pixels are not in the grid
        need_grad = ctx.needs_input_grad[0]
        splatted = grid.splat(torch.stack([s, 1 - s]))  # t = splat(m S), u = splat(m (1 - S))
        blurred = grid.blur(splatted if need_grad else splatted[:1])
        # Per-image inner products <u, B t>; grid nodes are grouped by image.
        per_node = (splatted[1] * blurred[0]).reshape(grid.num_nodes, -1).sum(1)
        counts = torch.tensor(grid.node_counts, device=per_node.device)
        image_id = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        losses = torch.zeros(fg.shape[0], device=fg.device).index_add_(0, image_id, per_node)
        if need_grad:
            ctx.grid = grid
            ctx.diff = blurred[1] - blurred[0]  # B (u - t)
            ctx.dtype = fg.dtype
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        grid = ctx.grid
        grad = grid.scatter(grid.slice(ctx.diff[None]))[:, 0]
        grad = grad * grad_losses.view(-1, 1, 1).to(grad.dtype)
        ctx.grid = ctx.diff = None
        return grad.to(ctx.dtype), None, None, None, None, None, None


def _foreground(prob: torch.Tensor, symmetric_grad: bool) -> torch.Tensor:
    if prob.dim() == 3:
        return prob
    if prob.dim() == 4 and prob.shape[1] == 1:
        return prob[:, 0]
    if prob.dim() == 4 and prob.shape[1] == 2:
        if symmetric_grad:
            # Value p1, gradient +g to channel 1 and -g to channel 0, as the authors' op returns.
            return prob[:, 1] - prob[:, 0] + prob[:, 0].detach()
        return prob[:, 1]
    raise ValueError(
        f"prob must be (N, H, W), (N, 1, H, W) or a 2-class softmax (N, 2, H, W), "
        f"got {tuple(prob.shape)}"
    )


def dense_crf_loss(
    prob: torch.Tensor,
    image: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    sigma_xy: float = 9.0,
    sigma_rgb: float = 0.1,
    weight: float = 1.0,
    symmetric_grad: bool = False,
    spatial_step: float = DEFAULT_SPATIAL_STEP,
    color_step: float = DEFAULT_COLOR_STEP,
) -> torch.Tensor:
    """Dense-CRF (Potts, relaxed) loss ``weight * mean_b sum_ij S_i (1 - S_j) W_ij / |mask_b|``.

    Parameters
    ----------
    prob : torch.Tensor
        Foreground probability ``(N, H, W)`` or ``(N, 1, H, W)``, or a 2-class softmax
        ``(N, 2, H, W)`` whose channel 1 is the nucleus class.
    image : torch.Tensor
        ``(N, 3, H, W)`` image de-normalised to [0, 1] (``sigma_rgb`` is in these units).
        No gradient flows to it.
    mask : torch.Tensor, optional
        ``(N, H, W)`` valid pixels (e.g. :func:`nonblack_mask`, as the authors use). Default: all.
    sigma_xy, sigma_rgb : float
        Kernel widths; defaults are the MoNuSeg values of Qu et al. (see ``QU2020_CRF_PARAMS``,
        whose loss weight on MoNuSeg is 0.005).
    weight : float
        Multiplier of the loss.
    symmetric_grad : bool
        Only for a 2-channel ``prob``: pass ``+dL/dS`` to channel 1 and ``-dL/dS`` to channel 0,
        as the authors' op does. Through a softmax this doubles the gradient of the logits
        compared with the exact gradient (the default), i.e. it acts like ``2 * weight`` on the
        gradient while the loss value is unchanged.
    spatial_step, color_step : float
        Grid spacing of :class:`BilateralGrid` in units of the sigmas (accuracy/speed trade-off).

    Returns
    -------
    torch.Tensor
        Scalar float32 loss, differentiable w.r.t. ``prob``. Images without valid pixels count
        as 0 in the batch mean.

    Notes
    -----
    Deviations from the paper and the authors' code:

    - ``W`` is evaluated on a bilateral grid (about 1-3 % relative error against the exact sum
      at the default steps) instead of a permutohedral lattice, whose error against the exact
      Gaussian we measured at 9-20 %; so loss values differ from the authors' by that much and
      by the lattice's overall scale.
    - The exact gradient is used by default for a 2-channel softmax (see ``symmetric_grad``).
    - Device-agnostic torch (CPU or CUDA, no copy to the CPU) instead of a CPU-only C++ op.
    """
    fg = _foreground(prob, symmetric_grad)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (N, 3, H, W), got {tuple(image.shape)}")
    if tuple(fg.shape) != (image.shape[0],) + tuple(image.shape[2:]):
        raise ValueError(
            f"prob and image sizes differ: {tuple(prob.shape)} vs {tuple(image.shape)}"
        )
    if mask is not None:
        if tuple(mask.shape) != tuple(fg.shape):
            raise ValueError(f"mask must have shape {tuple(fg.shape)}, got {tuple(mask.shape)}")
        mask = mask.bool()
    losses = _DenseCRFLoss.apply(fg, image, mask, sigma_xy, sigma_rgb, spatial_step, color_step)
    n, h, w = fg.shape
    if mask is None:
        denom = torch.full_like(losses, float(h * w))
    else:
        denom = mask.reshape(n, -1).sum(1).to(losses.dtype).clamp(min=1)
    return weight * (losses / denom).mean()


def dense_crf_postprocess(
    prob: "numpy.ndarray",  # noqa: F821
    image: "numpy.ndarray",  # noqa: F821
    *,
    sigma_xy: float = 9.0,
    sigma_rgb: float = 0.1,
    compat: float = 10.0,
    smooth_sxy: float = 3.0,
    smooth_compat: float = 3.0,
    iterations: int = 5,
) -> "numpy.ndarray":  # noqa: F821
    """Classic dense-CRF post-processing with ``pydensecrf`` (for comparison only).

    Qu et al. argue for the CRF *loss* instead of this post-processing; this helper exists to
    compare the two. ``pydensecrf`` is imported lazily.

    Parameters
    ----------
    prob : numpy.ndarray
        ``(H, W)`` foreground probability or ``(C, H, W)`` class probabilities.
    image : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.
    sigma_xy, sigma_rgb : float
        Appearance kernel widths; ``sigma_rgb`` in [0, 1] units like the loss (converted to the
        0-255 scale pydensecrf expects).
    compat, smooth_sxy, smooth_compat : float
        Potts weights of the appearance kernel, width and weight of the smoothness kernel.
    iterations : int
        Mean-field iterations.

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` float32 marginals (``C = 2`` for a foreground map).
    """
    import numpy as np

    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "dense_crf_postprocess needs pydensecrf (pip install pydensecrf)"
        ) from exc
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim == 2:
        prob = np.stack([1 - prob, prob])
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if prob.ndim != 3 or prob.shape[1:] != image.shape[:2]:
        raise ValueError(f"prob {prob.shape} does not match image {image.shape}")
    num_cls, h, w = prob.shape
    crf = dcrf.DenseCRF2D(w, h, num_cls)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.clip(prob, 1e-6, 1))))
    crf.addPairwiseGaussian(sxy=smooth_sxy, compat=smooth_compat)
    crf.addPairwiseBilateral(sxy=sigma_xy, srgb=sigma_rgb * 255, rgbim=image, compat=compat)
    return np.asarray(crf.inference(iterations), dtype=np.float32).reshape(num_cls, h, w)
