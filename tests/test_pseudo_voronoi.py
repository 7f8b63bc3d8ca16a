"""Voronoi labels and shared input checks of nucleiweak_d2.pseudo_labels."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from nucleiweak_d2.pseudo_labels import (
    BACKGROUND,
    IGNORE,
    NUCLEUS,
    voronoi_cells,
    voronoi_edges,
    voronoi_label,
)


def test_two_points_exact_label():
    # points (x, y) = (1, 2) and (6, 2) in a 5 x 8 image: columns <= 3 belong to the first.
    pts = np.array([[1, 2], [6, 2]])
    lab = voronoi_label(pts, (5, 8))
    expected = np.full((5, 8), IGNORE, np.uint8)
    expected[:, 3:5] = BACKGROUND  # one edge column on each side of the bisector x = 3.5
    yy, xx = np.mgrid[0:5, 0:8]
    for x, y in pts:
        expected[(xx - x) ** 2 + (yy - y) ** 2 <= 4] = NUCLEUS
    np.testing.assert_array_equal(lab, expected)
    assert lab[2, 3] == NUCLEUS and lab[0, 3] == BACKGROUND and lab[0, 0] == IGNORE


def test_cells_match_brute_force_nearest_point():
    rng = np.random.default_rng(0)
    pts = np.unique(rng.integers(0, 60, size=(40, 2)), axis=0)
    cells = voronoi_cells(pts, (60, 60))
    yy, xx = np.mgrid[0:60, 0:60]
    d, _ = cKDTree(pts).query(np.stack([xx.ravel(), yy.ravel()], 1))
    got = np.hypot(xx.ravel() - pts[cells.ravel(), 0], yy.ravel() - pts[cells.ravel(), 1])
    np.testing.assert_allclose(got, d)  # every pixel is assigned a nearest point


def test_two_touching_discs_are_separated():
    # discs of radius 6 and 7 centred at x = 10 and x = 23 touch between columns 16 and 17;
    # the bisector x = 16.5 puts the edge on exactly those two columns.
    pts = np.array([[10, 15], [23, 15]])
    lab = voronoi_label(pts, (30, 32))
    assert np.all(lab[:, 16:18] == BACKGROUND)
    assert np.all(lab[:, [15, 18]] != BACKGROUND)
    assert lab[15, 10] == NUCLEUS and lab[15, 23] == NUCLEUS
    assert set(np.unique(lab)) == {BACKGROUND, NUCLEUS, IGNORE}


def test_single_point_has_no_edge():
    lab = voronoi_label(np.array([[3, 4]]), (10, 10))
    assert not np.any(lab == BACKGROUND)
    assert (lab == NUCLEUS).sum() == 13  # disk of radius 2
    assert lab[4, 3] == NUCLEUS


def test_points_on_border_and_corners():
    pts = np.array([[0, 0], [9, 0], [0, 9], [9, 9]])
    lab = voronoi_label(pts, (10, 10))
    for x, y in pts:
        assert lab[y, x] == NUCLEUS
    assert np.all(lab[:, 4:6][lab[:, 4:6] != NUCLEUS] == BACKGROUND)


def test_edges_do_not_mark_image_border():
    cells = np.zeros((6, 6), int)
    cells[:, 3:] = 1
    edges = voronoi_edges(cells)
    assert edges[:, 2:4].all() and not edges[:, [0, 1, 4, 5]].any()


def test_duplicate_points_and_determinism():
    pts = np.array([[5, 5], [5, 5], [15, 5]])
    a = voronoi_label(pts, (12, 20))
    np.testing.assert_array_equal(a, voronoi_label(pts, (12, 20)))
    assert a.dtype == np.uint8 and set(np.unique(a)) <= {0, 1, 2}


@pytest.mark.parametrize(
    "points, shape, match",
    [
        (np.zeros((0, 2)), (10, 10), "points"),
        (np.array([[10, 0]]), (10, 10), "points"),
        (np.array([[0, -1]]), (10, 10), "points"),
        (np.array([[1.5, 2]]), (10, 10), "points"),
        (np.array([1, 2]), (10, 10), "points"),
        (np.array([[1, 2]]), (0, 10), "shape"),
    ],
)
def test_bad_input_raises(points, shape, match):
    with pytest.raises(ValueError, match=match):
        voronoi_label(points, shape)


def test_accepts_image_shape_and_float_integral_points():
    lab = voronoi_label(np.array([[1.0, 2.0], [6.0, 2.0]]), (5, 8, 3))
    np.testing.assert_array_equal(lab, voronoi_label(np.array([[1, 2], [6, 2]]), (5, 8)))
