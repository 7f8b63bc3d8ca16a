"""Geodesic (PROnet) Voronoi and cluster labels."""

import numpy as np
import pytest

from nucleiweak_d2.pseudo_labels import (
    BACKGROUND,
    NUCLEUS,
    geodesic_cluster_label,
    geodesic_labels,
    geodesic_nearest,
    geodesic_voronoi_label,
    voronoi_cells,
    voronoi_label,
)
from nucleiweak_d2.pseudo_labels._common import nearest_point


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constant_image_equals_euclidean(seed):
    rng = np.random.default_rng(seed)
    shape = (90, 110)
    pts = rng.integers(0, [shape[1], shape[0]], size=(60, 2))
    pts = np.vstack([pts, [[0, 0], [109, 89], [5, 5], [5, 5]]])  # corners and a duplicate
    img = np.full(shape + (3,), 77, np.uint8)
    dist, cells = geodesic_nearest(img, pts)
    e_dist, e_cells = nearest_point(pts, shape)
    np.testing.assert_array_equal(cells, e_cells)
    np.testing.assert_allclose(dist, e_dist, rtol=1e-6)
    np.testing.assert_array_equal(geodesic_voronoi_label(img, pts), voronoi_label(pts, shape))


def test_beta_zero_is_euclidean_on_any_image():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, (40, 50, 3)).astype(np.uint8)
    pts = rng.integers(0, 40, (15, 2))
    np.testing.assert_array_equal(
        geodesic_nearest(img, pts, beta=0)[1], voronoi_cells(pts, img.shape)
    )


def test_cells_follow_colour_boundary():
    # Left third dark, rest bright; point A in the dark part near the boundary, point B far
    # right. Bright pixels just right of the boundary are Euclidean-closer to A, but reaching
    # them from A crosses the colour edge, so geodesically they belong to B.
    img = np.full((21, 60, 3), 230, np.uint8)
    img[:, :20] = 40
    pts = np.array([[17, 10], [45, 10]])
    e_cells = voronoi_cells(pts, img.shape)
    assert e_cells[10, 25] == 0  # Euclidean: closer to A (8 px vs 20 px)
    dist, cells = geodesic_nearest(img, pts, beta=40, smooth_sigma=0)
    assert np.all(cells[:, 20:] == 1) and np.all(cells[:, :20] == 0)
    # exact geodesic distance of a dark pixel: Euclidean only (no colour change on the way)
    assert dist[10, 12] == pytest.approx(5.0)
    # a bright pixel reached from B without crossing: Euclidean only
    assert dist[10, 30] == pytest.approx(15.0)


def test_geodesic_distance_adds_colour_cost_across_edge():
    img = np.full((5, 30, 3), 0, np.uint8)
    img[:, 15:] = 255
    dist, _ = geodesic_nearest(img, np.array([[5, 2]]), beta=2.0, smooth_sigma=0)
    # one step across the edge costs sqrt(3) (RGB in [0, 1]) times beta
    assert dist[2, 20] == pytest.approx(15 + 2.0 * np.sqrt(3), rel=1e-5)
    assert dist[2, 10] == pytest.approx(5.0)


def test_geodesic_cluster_recovers_discs():
    yy, xx = np.mgrid[0:80, 0:80]
    centres = [(15, 15), (40, 20), (62, 18), (20, 55), (50, 60)]
    mask = np.zeros((80, 80), bool)
    for x, y in centres:
        mask |= (xx - x) ** 2 + (yy - y) ** 2 <= 49
    img = np.empty((80, 80, 3), np.uint8)
    img[:] = (235, 190, 220)
    img[mask] = (70, 40, 130)
    lab = geodesic_cluster_label(img, np.array(centres))
    assert np.all(mask[lab == NUCLEUS]) and not np.any(mask[lab == BACKGROUND])
    assert (lab == NUCLEUS).sum() > 0.5 * mask.sum()
    vor, clu = geodesic_labels(img, np.array(centres))
    np.testing.assert_array_equal(clu, lab)
    np.testing.assert_array_equal(vor, geodesic_voronoi_label(img, np.array(centres)))


def test_errors():
    img = np.full((10, 10, 3), 1, np.uint8)
    with pytest.raises(ValueError, match="points"):
        geodesic_voronoi_label(img, np.zeros((0, 2)))
    with pytest.raises(ValueError, match="beta"):
        geodesic_nearest(img, np.array([[1, 1]]), beta=-1)
    with pytest.raises(ValueError, match="points"):
        geodesic_cluster_label(img, np.array([[10, 1]]))


def test_labels_return_the_cells_of_their_transform():
    """PROnet's labels take their cells from the labels' transform (one transform, not two):
    the same cells as a transform of their own, and the same labels without them."""
    from nucleiweak_d2.methods.nam2023.labels import binary_labels, point_cells

    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, size=(40, 50, 3), dtype=np.uint8)
    pts = np.array([[5, 5], [30, 10], [20, 30], [44, 35], [20, 30]])  # with a duplicate
    vor, clu, cells = geodesic_labels(img, pts, return_cells=True)
    assert cells.dtype == np.int32
    np.testing.assert_array_equal(cells, geodesic_nearest(img, pts)[1])
    np.testing.assert_array_equal((vor, clu), geodesic_labels(img, pts))
    labels = binary_labels(img, pts, beta=40.0)
    np.testing.assert_array_equal(labels["cells"], point_cells(img, pts, beta=40.0))
    np.testing.assert_array_equal(labels["voronoi"], vor)
    euclid = binary_labels(img, pts, geodesic=False)
    np.testing.assert_array_equal(euclid["cells"], point_cells(img, pts, geodesic=False))
