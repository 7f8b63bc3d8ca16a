"""Centerness (Feng), DoNuSeg initial label, PROnet heatmap and offsets."""

import numpy as np
import pytest

from nucleiweak_d2.pseudo_labels import (
    BACKGROUND,
    IGNORE,
    NUCLEUS,
    center_heatmap,
    centerness_targets,
    donuseg_initial_label,
    offset_targets,
)


def _instances():
    inst = np.zeros((16, 16), np.int32)
    inst[4:12, 2:12] = 1  # labelled: box x [2, 12), y [4, 12)
    inst[13:16, 13:16] = 2  # unlabelled
    return inst


def test_centerness_exact():
    targets, boxes = centerness_targets(_instances(), [1], stride=4, return_boxes=True)
    expected = np.full((4, 4), -1, np.int8)
    expected[1:3, 0:3] = 0  # cells at least half in the mask (column 0: x 2..3 of 0..3)
    # centre (7, 8), half sizes (1.5, 1.2): column location x = 6 fits, no row location does,
    # so the row nearest to y = 8 (floor(8 / 4) = 2) is used.
    expected[2, 1] = 1
    np.testing.assert_array_equal(targets, expected)
    np.testing.assert_array_equal(boxes[2, 1], [2, 4, 12, 12])
    assert not boxes[targets != 1].any()


def test_centerness_masks_input_and_stride_one():
    inst = _instances()
    masks = np.stack([inst == 1, inst == 2])
    a = centerness_targets(inst, [1], stride=1)
    b = centerness_targets(masks, [0], stride=1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 16)
    # stride 1: centre box |x - 7| <= 1.5, |y - 8| <= 1.2 on pixel centres x + 0.5
    ys, xs = np.nonzero(a == 1)
    assert set(xs) == {5, 6, 7, 8} and set(ys) == {7, 8}  # 5.5 and 8.5 lie on the box edge
    assert np.all(a[(inst == 1) & (a != 1)] == 0) and np.all(a[inst != 1] == -1)


def test_centerness_empty_and_errors():
    t = centerness_targets(_instances(), [], stride=4)
    assert t.shape == (4, 4) and np.all(t == -1)
    assert centerness_targets(np.zeros((10, 7), int), [], stride=4).shape == (3, 2)
    with pytest.raises(ValueError, match="labeled_ids"):
        centerness_targets(_instances(), [3], stride=4)
    with pytest.raises(ValueError, match="stride"):
        centerness_targets(_instances(), [1], stride=0)


def test_donuseg_initial_label():
    lab = donuseg_initial_label(np.array([[10, 10]]), (40, 40))
    assert (lab == NUCLEUS).sum() == 49  # lattice points with x^2 + y^2 <= 16
    yy, xx = np.mgrid[0:40, 0:40]
    d2 = (xx - 10) ** 2 + (yy - 10) ** 2
    np.testing.assert_array_equal(lab == BACKGROUND, d2 > 400)
    np.testing.assert_array_equal(lab == IGNORE, (d2 > 16) & (d2 <= 400))
    with pytest.raises(ValueError, match="points"):
        donuseg_initial_label(np.zeros((0, 2)), (5, 5))


def test_center_heatmap():
    heat = center_heatmap(np.array([[5, 5], [0, 19]]), (20, 30), radius=8)
    sigma = 17 / 6
    assert heat[5, 5] == 1 and heat[19, 0] == 1
    assert heat[5, 8] == pytest.approx(np.exp(-9 / (2 * sigma**2)), rel=1e-6)
    assert heat[5, 14] == 0  # distance 9 > radius
    assert heat.max() == 1 and heat.min() == 0
    assert not center_heatmap(np.zeros((0, 2)), (4, 4)).any()


def test_offset_targets():
    mask = np.zeros((10, 20), bool)
    mask[2:5, 1:4] = True
    mask[6:9, 14:18] = True
    pts = np.array([[2, 3], [15, 7]])
    off, valid = offset_targets(mask, pts)
    np.testing.assert_array_equal(valid, mask)
    assert tuple(off[:, 2, 1]) == (1.0, 1.0)  # pixel (x=1, y=2) -> point (2, 3)
    assert tuple(off[:, 8, 17]) == (-2.0, -1.0)
    assert not off[:, ~mask].any()
    off_c, _ = offset_targets(mask, pts, center="centroid")
    assert tuple(off_c[:, 6, 14]) == pytest.approx((1.5, 1.0))  # centroid (15.5, 7)
    off_e, valid_e = offset_targets(mask, np.zeros((0, 2)))
    assert not off_e.any() and not valid_e.any()
    with pytest.raises(ValueError, match="center"):
        offset_targets(mask, pts, center="middle")
