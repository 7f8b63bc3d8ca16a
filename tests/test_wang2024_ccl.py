"""DoNuSeg CAM-guided contrastive loss: InfoNCE (Eq. 7) against hand-computed values, and the
per-image anchors, keys and alpha weight of Eq. 6."""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from nucleiweak_d2.methods.wang2024.ccl_loss import cam_contrastive_loss, info_nce  # noqa: E402


def test_info_nce_hand_computed():
    q = torch.tensor([1.0, 0.0])
    pos = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # cosines 1 and 0
    neg = torch.tensor([[-1.0, 0.0], [1.0, 1.0]])  # cosines -1 and 1/sqrt(2)
    e = math.exp
    c = 1 / math.sqrt(2)
    for tau in (1.0, 0.5):
        neg_sum = e(-1 / tau) + e(c / tau)
        expect = -((1 / tau - math.log(e(1 / tau) + neg_sum)) + (0 - math.log(e(0) + neg_sum))) / 2
        assert info_nce(q, pos, neg, tau).item() == pytest.approx(expect, rel=1e-6)
    # no negatives: every term is phi/tau - log(e^{phi/tau}) = 0; no positives: 0
    assert info_nce(q, pos, neg[:0]).item() == pytest.approx(0.0, abs=1e-7)
    assert info_nce(q, pos[:0], neg).item() == 0.0


def test_cam_contrastive_loss_anchors_from_m_keys_from_p():
    # one image, 1 x 4 pixels, 2-D features
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 1.0]]).t().reshape(1, 2, 1, 4)
    m = torch.tensor([[[1, 2, 0, 2]]], dtype=torch.uint8)  # anchors: a+ = z0, a- = z2
    p = torch.tensor([[[1, 1, 0, 2]]], dtype=torch.uint8)  # S+ = {z0, z1}, S- = {z2}
    alpha = torch.tensor([0.75])
    feats = z[0].reshape(2, 4).t()
    expect = 0.75 * (
        info_nce(feats[0], feats[[0, 1]], feats[[2]])
        + info_nce(feats[2], feats[[2]], feats[[0, 1]])
    )
    torch.testing.assert_close(cam_contrastive_loss(z, m, p, alpha), expect)

    # a+ is the *mean* of M's nucleus pixels; an image without M nucleus drops that term
    m2 = torch.tensor([[[1, 1, 0, 2]]], dtype=torch.uint8)
    a_plus = feats[[0, 1]].mean(dim=0)
    expect2 = 0.75 * (
        info_nce(a_plus, feats[[0, 1]], feats[[2]]) + info_nce(feats[2], feats[[2]], feats[[0, 1]])
    )
    torch.testing.assert_close(cam_contrastive_loss(z, m2, p, alpha), expect2)
    m3 = torch.tensor([[[0, 2, 0, 2]]], dtype=torch.uint8)
    a_minus = feats[[0, 2]].mean(dim=0)
    torch.testing.assert_close(
        cam_contrastive_loss(z, m3, p, alpha), 0.75 * info_nce(a_minus, feats[[2]], feats[[0, 1]])
    )

    # batch: mean over images; gradient reaches the features
    zz = torch.cat([z, z]).requires_grad_()
    loss = cam_contrastive_loss(
        zz, torch.cat([m, m]), torch.cat([p, p]), torch.tensor([0.75, 0.25])
    )
    torch.testing.assert_close(loss, expect * (0.75 + 0.25) / 2 / 0.75)
    loss.backward()
    assert zz.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="key_fraction"):
        cam_contrastive_loss(z, m, p, alpha, key_fraction=0.0)
