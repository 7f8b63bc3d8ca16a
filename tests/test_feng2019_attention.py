"""Decomposed self-attention (Feng et al. 2019) against its direct matrix formula."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling.backbone import Backbone  # noqa: E402

from nucleiweak_d2.methods.feng2019.attention import DecomposedSelfAttention  # noqa: E402
from nucleiweak_d2.methods.feng2019.backbone import AttentionFPN  # noqa: E402


def _randomise(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _direct(module, x):
    """x + W_f (W_v x) S(W_c x, N)^T S(W_b x, C) with explicit matrices, one image at a time."""

    def mat(conv):
        return conv.weight[:, :, 0, 0].double(), conv.bias.double()[:, None]

    wb, bb = mat(module.basis)
    wc, bc = mat(module.coefficients)
    wv, bv = mat(module.values)
    wf, bf = mat(module.reprojection)
    out = []
    for xi in x.double():
        c, h, w = xi.shape
        X = xi.reshape(c, h * w)  # C x N
        basis = torch.softmax(wb @ X + bb, dim=0)  # over channels
        coeff = torch.softmax(wc @ X + bc, dim=1)  # over locations
        values = wv @ X + bv  # C_v x N
        attention = coeff.t() @ basis  # N x N, A[m, n] = weight of location m for output n
        out.append((X + wf @ (values @ attention) + bf).reshape(c, h, w))
    return torch.stack(out)


def test_decomposed_attention_equals_direct_formula():
    module = DecomposedSelfAttention(6, basis_channels=4, value_channels=5)
    _randomise(module, 0)
    x = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(1))
    got = module(x).double()
    torch.testing.assert_close(got, _direct(module, x), rtol=1e-4, atol=1e-4)


def test_attention_matrix_columns_are_distributions():
    """Each output location mixes the values with weights summing to one."""
    module = DecomposedSelfAttention(3, basis_channels=4, value_channels=2)
    _randomise(module, 2)
    x = torch.randn(1, 3, 4, 4)
    X = x[0].reshape(3, 16)
    basis = torch.softmax(module.basis.weight[:, :, 0, 0] @ X + module.basis.bias[:, None], dim=0)
    coeff = torch.softmax(
        module.coefficients.weight[:, :, 0, 0] @ X + module.coefficients.bias[:, None], dim=1
    )
    torch.testing.assert_close((coeff.t() @ basis).sum(0), torch.ones(16))
    # a constant value map is reproduced exactly: with values == 1 the read-out is 1 everywhere
    from nucleiweak_d2.methods.feng2019.attention import decomposed_attention

    ones = torch.ones(1, 2, 16)
    out = decomposed_attention(module.basis(x).flatten(2), module.coefficients(x).flatten(2), ones)
    torch.testing.assert_close(out, ones)


def test_attention_block_is_identity_at_init():
    module = DecomposedSelfAttention(8)
    x = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(module(x), x)


class _BottomUp(Backbone):
    """Two-level toy bottom-up network with the Backbone interface FPN needs."""

    def __init__(self):
        super().__init__()
        self.c2 = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.c3 = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)

    def forward(self, x):
        r2 = self.c2(x)
        return {"res2": r2, "res3": self.c3(r2)}

    def output_shape(self):
        return {"res2": ShapeSpec(channels=4, stride=4), "res3": ShapeSpec(channels=4, stride=8)}


def test_attention_fpn_applies_blocks_and_recomputes_top_level():
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    torch.manual_seed(0)
    fpn = AttentionFPN(
        bottom_up=_BottomUp(),
        in_features=["res2", "res3"],
        out_channels=8,
        top_block=LastLevelMaxPool(),
        attention_levels=["p2", "p3"],
    )
    fpn.top_block.in_feature = "p3"
    _randomise(fpn.attention, 3)
    x = torch.randn(1, 3, 32, 32)
    out = fpn(x)
    plain = super(AttentionFPN, fpn).forward(x)
    assert set(out) == {"p2", "p3", "p4"}
    assert out["p2"].shape == plain["p2"].shape == (1, 8, 8, 8)
    torch.testing.assert_close(out["p2"], fpn.attention["p2"](plain["p2"]))
    torch.testing.assert_close(out["p4"], torch.nn.functional.max_pool2d(out["p3"], 1, 2))
    assert not torch.allclose(out["p4"], plain["p4"])
    with pytest.raises(ValueError):
        AttentionFPN(
            bottom_up=_BottomUp(),
            in_features=["res2", "res3"],
            out_channels=8,
            attention_levels=["p9"],
        )
