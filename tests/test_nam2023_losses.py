"""PROnet losses against hand-computed values."""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from nucleiweak_d2.methods.nam2023.losses import center_focal_loss, offset_l1_loss  # noqa: E402


def test_focal_loss_hand_computed():
    # p = sigmoid(logits) = [[0.5, 0.75], [0.25, 0.5]]; target [[1, 0.5], [0, 0]]
    logits = torch.tensor([[[[0.0, math.log(3.0)], [-math.log(3.0), 0.0]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    # positive (1 - p)^2 log p; negatives (1 - C)^4 p^2 log(1 - p); alpha 2, beta 4; N_P = 1
    expected = (
        0.25 * math.log(2.0)  # positive, p = 0.5
        + 0.5**4 * 0.75**2 * math.log(4.0)  # C = 0.5, p = 0.75
        + 0.25**2 * math.log(4.0 / 3.0)  # C = 0, p = 0.25
        + 0.25 * math.log(2.0)
    )  # C = 0, p = 0.5
    assert center_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # a pixel outside `valid` (padding) counts neither way; two positives halve the sum
    valid = torch.tensor([[[[True, True], [True, False]]]])
    no_last = expected - 0.25 * math.log(2.0)
    assert center_focal_loss(logits, target, valid).item() == pytest.approx(no_last, rel=1e-6)
    two = torch.tensor([[[[1.0, 0.5], [0.0, 1.0]]]])
    both = (
        0.25 * math.log(2.0) * 2 + 0.5**4 * 0.75**2 * math.log(4.0) + 0.25**2 * math.log(4.0 / 3.0)
    ) / 2
    assert center_focal_loss(logits, two).item() == pytest.approx(both, rel=1e-6)
    # alpha / beta are used as given
    a1 = center_focal_loss(logits, target, alpha=1.0, beta=2.0).item()
    assert a1 == pytest.approx(
        0.5 * math.log(2.0)
        + 0.25 * 0.75 * math.log(4.0)
        + 0.25 * math.log(4.0 / 3.0)
        + 0.5 * math.log(2.0),
        rel=1e-6,
    )


def test_focal_loss_finite_for_saturated_logits_and_no_point():
    logits = torch.tensor([[[[80.0, -80.0]]]], requires_grad=True)
    loss = center_focal_loss(logits, torch.tensor([[[[0.0, 0.0]]]]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(
        80.0, rel=1e-3
    )  # p^2 log(1-p) ~ -80
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_offset_l1_loss_mean_over_weighted_pixels():
    pred = torch.zeros(1, 2, 1, 3)
    target = torch.tensor([[[[1.0, -2.0, 5.0]], [[0.5, 0.0, 5.0]]]])
    weight = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    assert offset_l1_loss(pred, target, weight).item() == pytest.approx((1.5 + 2.0) / 2)
    zero = offset_l1_loss(pred.requires_grad_(), target, torch.zeros(1, 1, 1, 3))
    assert zero.item() == 0.0 and zero.requires_grad
