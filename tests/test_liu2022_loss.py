"""The discriminative loss of Liu et al. against hand-computed values, and its gradient."""

import math

import pytest
import torch

from nucleiweak_d2.methods.liu2022.losses import discriminative_loss

# A 1 x 8 "image" of 2-D embeddings. Clusters: id 2 = {(0,0), (2,0)}, id 3 = {(4,0)},
# id 4 = {(1,2), (1,3), (1,4)}; the last pixel (id 0) is ignored whatever its embedding.
POINTS = [(0, 0), (2, 0), (4, 0), (1, 2), (1, 3), (1, 4), (50, -50), (0, 0)]
IDS = [2, 2, 3, 4, 4, 4, 0, 0]


def toy():
    emb = torch.tensor(POINTS, dtype=torch.float64).T.reshape(2, 1, 8)
    return emb, torch.tensor(IDS).reshape(1, 8)


def test_three_instances_each_term_by_hand():
    """Means (1,0), (4,0), (1,3); distances of the pixels to their means 1,1 | 0 | 1,0,1."""
    emb, lab = toy()
    out = discriminative_loss(emb, lab, delta_v=0.5, delta_d=2.0, gamma=0.001)
    # variance: hinge (d - 0.5)^2 -> cluster means 0.25, 0, (0.25 + 0 + 0.25) / 3; over C = 3
    assert out["var"].item() == pytest.approx((0.25 + 0.0 + 1 / 6) / 3)
    # distance, margin 2 delta_d = 4: |mu2 - mu3| = 3 -> 1, |mu2 - mu4| = 3 -> 1,
    # |mu3 - mu4| = sqrt(18) > 4 -> 0; ordered pairs: 2 * (1 + 1) / (3 * 2)
    assert out["dist"].item() == pytest.approx(2 * (1 + 1) / 6)
    assert out["reg"].item() == pytest.approx(0.001 * (1 + 4 + math.sqrt(10)) / 3)
    # the margin of the authors (delta_d = 1.5, i.e. 3): every pair is at least 3 apart
    assert discriminative_loss(emb, lab, delta_d=1.5)["dist"].item() == 0.0


def test_background_cluster_is_weighted_by_alpha():
    """Cluster 4 as the background (id 4 here), alpha 0.5: Eq. (1) of the paper."""
    emb, lab = toy()
    out = discriminative_loss(emb, lab, background=4, delta_v=0.5, delta_d=2.0, alpha=0.5)
    assert out["var"].item() == pytest.approx((0.25 + 0.0 + 0.5 / 6) / 3)
    # L_inter = 2 * h(mu2, mu3) + 2 alpha * (h(mu2, bg) + h(mu3, bg)) = 2 + 1 * (1 + 0)
    assert out["dist"].item() == pytest.approx((2 * 1 + 2 * 0.5 * 1) / 6)


def test_small_clusters_and_empty_images():
    emb, lab = toy()
    out = discriminative_loss(emb, lab, delta_d=2.0, min_pixels=2)  # cluster 3 (1 pixel) dropped
    assert out["var"].item() == pytest.approx((0.25 + 1 / 6) / 2)
    assert out["dist"].item() == pytest.approx(2 * 1 / 2)  # |mu2 - mu4| = 3 -> (4 - 3)^2
    e = torch.randn(3, 4, 4, requires_grad=True)
    for labels in (torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), 2)):
        terms = discriminative_loss(e, labels)
        total = sum(terms.values())
        total.backward()
        assert terms["dist"].item() == 0.0 and torch.isfinite(e.grad).all()


def test_gradient_matches_finite_differences():
    torch.manual_seed(0)
    emb = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    lab = torch.randint(0, 5, (5, 6))
    lab[0, :3] = 1  # make sure the background cluster exists

    for term in ("var", "dist", "reg"):

        def f(e, term=term):
            return discriminative_loss(
                e, lab, background=1, delta_v=0.2, delta_d=1.0, gamma=0.1, alpha=0.7
            )[term]

        assert f(emb).item() > 0, term  # every term is active, so the check means something
        assert torch.autograd.gradcheck(f, (emb,), eps=1e-6, atol=1e-6), term
