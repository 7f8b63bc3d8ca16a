"""Extended Gaussian targets and background propagation (Qu et al. TMI 2020)."""

import numpy as np
import pytest

from nucleiweak_d2.pseudo_labels import (
    background_propagation,
    extended_gaussian_target,
    propagated_background,
)


def test_extended_gaussian_exact_values():
    target, weight = extended_gaussian_target(np.array([[5, 5]]), (40, 40))
    assert target.dtype == np.float32 and weight.dtype == np.float32
    assert target[5, 5] == 1.0 and weight[5, 5] == 10.0
    assert target[5, 8] == pytest.approx(np.exp(-9 / (2 * 2.75**2)), rel=1e-6)
    # distance 7: exp(-49 / 15.125) = 0.039 < 0.05 -> background of the ring
    assert target[5, 12] == 0.0 and weight[5, 12] == 1.0
    assert weight[5, 27] == 1.0 and weight[5, 28] == 0.0  # r2 = 22 inclusive
    assert np.all(target[weight == 0] == 0) and np.all(weight[target > 0] == 10)


def test_paper_variant_without_threshold():
    target, weight = extended_gaussian_target(np.array([[20, 20]]), (41, 41), min_value=0)
    assert target[20, 31] == pytest.approx(np.exp(-8), rel=1e-5) and weight[20, 31] == 10
    assert target[20, 32] == 0 and weight[20, 32] == 1


def test_nearest_point_decides_and_border_points():
    pts = np.array([[0, 0], [6, 0]])
    target, _ = extended_gaussian_target(pts, (10, 10), r1=3, r2=6, sigma=1.0, min_value=0)
    assert target[0, 0] == 1 and target[0, 6] == 1
    assert target[0, 3] == pytest.approx(np.exp(-4.5), rel=1e-6)  # 3 px from both


def test_empty_points_ignore_everything():
    target, weight = extended_gaussian_target(np.zeros((0, 2)), (8, 9))
    assert target.shape == (8, 9) and not target.any() and not weight.any()


def test_bad_radii_and_points():
    with pytest.raises(ValueError, match="r1"):
        extended_gaussian_target(np.array([[1, 1]]), (8, 8), r1=5, r2=2)
    with pytest.raises(ValueError, match="points"):
        extended_gaussian_target(np.array([[8, 1]]), (8, 8))


def test_propagated_background_rules():
    prob = np.full((60, 60), 0.5)
    prob[:10, :] = 0.05  # clearly background
    prob[20:40, 0:20] = 0.9  # 400 px > pi * 11^2 = 380.1: background
    prob[20:30, 40:50] = 0.9  # 100 px: may be a nucleus, stays
    bg = propagated_background(prob)
    assert bg[:10].all() and bg[20:40, 0:20].all()
    assert not bg[20:30, 40:50].any() and not bg[45:, :].any()
    assert propagated_background(prob, min_area=50)[20:30, 40:50].all()


def test_background_propagation_keeps_extended_mask_near_points():
    prob = np.zeros((60, 60))
    prob[:, 30:] = 0.5
    pts = np.array([[10, 10]])
    t0, w0 = extended_gaussian_target(pts, prob.shape)
    target, weight = background_propagation(prob, pts)
    np.testing.assert_array_equal(target, t0)
    near = w0 > 0
    np.testing.assert_array_equal(weight[near], w0[near])
    assert np.all(weight[~near & (prob < 0.1)] == 1)
    assert np.all(weight[~near & (prob == 0.5)] == 0)


def test_prob_validation():
    with pytest.raises(ValueError, match="prob"):
        propagated_background(np.full((4, 4), 1.5))
    with pytest.raises(ValueError, match="prob"):
        background_propagation(np.zeros(5), np.array([[0, 0]]))
