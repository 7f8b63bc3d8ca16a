"""Decomposed self-attention (Feng et al. 2019, eq. in section II; efficient attention form).

For a feature map ``x`` with ``C`` channels and ``N = H * W`` locations (``x`` in R^{C x N})::

    x_att = x + W_f (W_v x) S(W_c x, N)^T S(W_b x, C)

``S(., C)`` is a softmax over channels (each location's ``C_b`` basis weights sum to 1),
``S(., N)`` a softmax over locations (each coefficient map sums to 1 over the image). The
product ``S(W_c x, N) (W_v x)^T`` is a ``C_b x C_v`` global context; each location then
mixes the ``C_b`` context vectors with its own basis weights. The equivalent ``N x N``
attention matrix ``A = S(W_c x, N)^T S(W_b x, C)`` has columns that sum to 1, but it is never
formed, so memory is ``O(N (C_b + C_v))`` instead of ``O(N^2)``.

Naming discrepancy (documented on purpose): the paper writes ``S(W_b x, C)`` for the *basis*
(softmax over channels) and ``S(W_c x, N)`` for the *coefficients* (softmax over locations);
the Feng lab code (``maskrcnn_benchmark/layers/decomposed_attention.py``, see
docs/REFERENCE_CODE.md section 2) names them the other way round (bases softmax over space,
coefficients softmax over channels) but computes the same product: the spatially normalised
map is contracted with the values, the channel-normalised map distributes the context. We use
the paper's names. The only free choice is the initialisation of ``W_f``: it starts at zero,
so the block is the identity at the start of training (as in non-local networks) and does not
disturb the FPN features early on.
"""

import torch
from torch import nn

__all__ = ["DecomposedSelfAttention", "decomposed_attention"]


def decomposed_attention(basis, coefficients, values):
    """Attention read-out from the three 1x1 projections (no residual, no ``W_f``).

    Parameters
    ----------
    basis : torch.Tensor
        ``(B, C_b, N)`` logits ``W_b x``; softmax over channels (dim 1).
    coefficients : torch.Tensor
        ``(B, C_b, N)`` logits ``W_c x``; softmax over locations (dim 2).
    values : torch.Tensor
        ``(B, C_v, N)`` values ``W_v x``.

    Returns
    -------
    torch.Tensor
        ``(B, C_v, N)``: ``(W_v x) S(W_c x, N)^T S(W_b x, C)``.
    """
    basis = basis.softmax(dim=1)
    coefficients = coefficients.softmax(dim=2)
    context = torch.bmm(values, coefficients.transpose(1, 2))  # (B, C_v, C_b)
    return torch.bmm(context, basis)  # (B, C_v, N)


class DecomposedSelfAttention(nn.Module):
    """Residual decomposed self-attention block made of 1x1 convolutions.

    Parameters
    ----------
    in_channels : int
        ``C``, channels of the input (and output) feature map.
    basis_channels : int
        ``C_b`` (paper: 64).
    value_channels : int
        ``C_v`` (paper: 64).
    """

    def __init__(self, in_channels, basis_channels=64, value_channels=64):
        super().__init__()
        self.basis = nn.Conv2d(in_channels, basis_channels, 1)  # W_b
        self.coefficients = nn.Conv2d(in_channels, basis_channels, 1)  # W_c
        self.values = nn.Conv2d(in_channels, value_channels, 1)  # W_v
        self.reprojection = nn.Conv2d(value_channels, in_channels, 1)  # W_f
        for conv in (self.basis, self.coefficients, self.values):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.reprojection.weight)
        nn.init.zeros_(self.reprojection.bias)

    def forward(self, x):
        """Return ``x + W_f (attention read-out)``, same shape as ``x`` ``(B, C, H, W)``."""
        b, _, h, w = x.shape
        out = decomposed_attention(
            self.basis(x).flatten(2), self.coefficients(x).flatten(2), self.values(x).flatten(2)
        )
        return x + self.reprojection(out.view(b, -1, h, w))
