"""Tests of nucleiweak_d2.data.points (numpy only)."""

import numpy as np
import pytest

from nucleiweak_d2.data.points import (
    SHIFT_PRESETS,
    instance_boxes,
    parse_shift,
    points_from_labels,
    sample_partial,
    shift_points,
)


def _label():
    label = np.zeros((10, 12), dtype=np.int32)
    label[1:4, 2:7] = 3  # rows 1..3, cols 2..6 -> bbox centre (x=4, y=2)
    label[6:10, 0:2] = 8  # rows 6..9, cols 0..1 -> (x=0, y=7)
    label[5, 10] = 20  # single pixel -> (10, 5)
    return label


def test_points_bbox_center_exact():
    ids, pts = points_from_labels(_label())
    np.testing.assert_array_equal(ids, [3, 8, 20])
    np.testing.assert_array_equal(pts, [[4, 2], [0, 7], [10, 5]])


def test_points_centroid_exact_and_half_up():
    label = np.zeros((5, 5), dtype=np.uint16)
    label[0, 0:2] = 1  # mean col 0.5 -> rounds up to 1
    label[2:5, 2] = 2
    label[4, 3:5] = 2  # L shape: mean row (2+3+4+4+4)/5=3.4, col (2+2+2+3+4)/5=2.6
    ids, pts = points_from_labels(label, mode="centroid")
    np.testing.assert_array_equal(pts, [[1, 0], [3, 3]])


def test_points_large_and_sparse_ids_and_empty():
    label = np.zeros((4, 4), dtype=np.int64)
    label[0, 0] = 2**30
    label[3, 3] = 5
    ids, pts = points_from_labels(label)
    np.testing.assert_array_equal(ids, [5, 2**30])
    np.testing.assert_array_equal(pts, [[3, 3], [0, 0]])
    ids, pts = points_from_labels(np.zeros((3, 3), dtype=np.int32))
    assert ids.shape == (0,) and pts.shape == (0, 2)


def test_instance_boxes_areas():
    ids, slices, areas = instance_boxes(_label())
    np.testing.assert_array_equal(areas, [15, 8, 1])
    assert slices[0] == (slice(1, 4), slice(2, 7))


def test_points_bad_input():
    with pytest.raises(ValueError, match="mode"):
        points_from_labels(_label(), mode="middle")
    with pytest.raises(ValueError, match="integers"):
        points_from_labels(np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        points_from_labels(np.zeros((3, 3, 3), dtype=np.int32))


@pytest.mark.parametrize("n", [0, 1, 7, 19, 40, 565])
def test_sample_partial_exact_counts(n):
    for ratio in (0.05, 0.1, 0.25, 0.5, 1.0):
        mask = sample_partial(n, ratio, seed=3)
        expected = 0 if n == 0 else max(1, int(np.floor(ratio * n + 0.5)))
        assert mask.dtype == bool and mask.shape == (n,)
        assert mask.sum() == expected


def test_sample_partial_half_up_rounding_and_minimum():
    assert sample_partial(10, 0.25, 0).sum() == 3  # 2.5 -> 3 (not banker's 2)
    assert sample_partial(30, 0.05, 0).sum() == 2  # 1.5 -> 2
    assert sample_partial(19, 0.05, 0).sum() == 1  # 0.95 -> 1
    assert sample_partial(5, 0.05, 0).sum() == 1  # 0.25 -> at least 1


def test_sample_partial_nested_and_deterministic():
    ratios = (0.05, 0.1, 0.25, 0.5, 1.0)
    for seed in (0, 1, (4, 99)):
        masks = [sample_partial(200, r, seed) for r in ratios]
        for small, big in zip(masks, masks[1:]):
            assert np.all(big[small]), "smaller ratio set must lie inside the larger one"
        np.testing.assert_array_equal(masks[1], sample_partial(200, 0.1, seed))
    assert not np.array_equal(sample_partial(200, 0.1, 0), sample_partial(200, 0.1, 1))


def test_sample_partial_bad_ratio():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            sample_partial(10, bad, 0)
    with pytest.raises(ValueError, match="n must"):
        sample_partial(-1, 0.5, 0)


def test_parse_shift():
    assert parse_shift("4-6") == (4.0, 6.0)
    assert parse_shift("0") == (0.0, 0.0)
    assert parse_shift("1.5-2.5") == (1.5, 2.5)
    assert parse_shift((2, 3)) == (2.0, 3.0)
    assert parse_shift(3) == (3.0, 3.0)
    assert set(SHIFT_PRESETS) == {"0", "2-4", "4-6", "6-8"}
    for bad in ("abc", (3, 2), (-1, 2)):
        with pytest.raises(ValueError, match="shift"):
            parse_shift(bad)


@pytest.mark.parametrize("preset", ["2-4", "4-6", "6-8"])
def test_shift_length_bounds_and_inside_image(preset):
    rng = np.random.default_rng(0)
    shape = (40, 50)
    pts = np.stack([rng.integers(0, 50, 500), rng.integers(0, 40, 500)], 1)
    pts[:4] = [[0, 0], [49, 39], [0, 39], [49, 0]]  # corners
    new, shifts = shift_points(pts, shape, preset, seed=7)
    lo, hi = SHIFT_PRESETS[preset]
    length = np.hypot(shifts[:, 0], shifts[:, 1])
    assert length.min() >= lo and length.max() <= hi
    np.testing.assert_array_equal(new, pts + shifts)
    assert new[:, 0].min() >= 0 and new[:, 0].max() < 50
    assert new[:, 1].min() >= 0 and new[:, 1].max() < 40
    # directions are spread: every quadrant is used
    quadrants = {(int(dx > 0), int(dy > 0)) for dx, dy in shifts[4:]}
    assert len(quadrants) == 4
    new2, shifts2 = shift_points(pts, shape, preset, seed=7)
    np.testing.assert_array_equal(shifts, shifts2)
    assert not np.array_equal(shifts, shift_points(pts, shape, preset, seed=8)[1])


def test_shift_zero_and_errors():
    pts = np.array([[1, 2], [3, 4]])
    new, shifts = shift_points(pts, (10, 10), (0, 0), 0)
    np.testing.assert_array_equal(new, pts)
    assert (shifts == 0).all()
    with pytest.raises(ValueError, match="inside"):
        shift_points([[10, 0]], (10, 10), "2-4", 0)
    with pytest.raises(ValueError, match="integer offset"):
        shift_points(pts, (10, 10), (2.5, 2.6), 0)
    with pytest.raises(ValueError, match="too small"):
        shift_points([[0, 0]], (2, 2), "6-8", 0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        shift_points(np.zeros((3, 3)), (10, 10), "2-4", 0)
