"""Weighted MSE of a probability map against a dense target (plain torch, no cfg)."""

__all__ = ["weighted_mse_loss"]


def weighted_mse_loss(prob, target, weight):
    """Weighted MSE over the non-ignored pixels, Eq. (2) of Qu et al. (TMI 2020).

    ``L = sum_i w_i (p_i - M_i)^2 / |Omega|`` with ``Omega = {i : w_i > 0}``; the weights come
    from the extended Gaussian mask (10 where ``M > 0``, 1 on background, 0 ignored).

    Parameters
    ----------
    prob : torch.Tensor
        ``(N, 1, H, W)`` predicted probabilities (after the sigmoid).
    target : torch.Tensor
        Same shape, the (extended) Gaussian target in [0, 1].
    weight : torch.Tensor
        Same shape, per-pixel weights; 0 marks ignored pixels.

    Returns
    -------
    torch.Tensor
        Scalar; 0 (attached to the graph) when every pixel is ignored.
    """
    if prob.shape != target.shape or prob.shape != weight.shape:
        raise ValueError(
            f"prob {tuple(prob.shape)}, target {tuple(target.shape)} and weight "
            f"{tuple(weight.shape)} must have the same shape"
        )
    weight = weight.to(prob.dtype)
    n = (weight > 0).sum().clamp(min=1)
    return (weight * (prob - target.to(prob.dtype)) ** 2).sum() / n
