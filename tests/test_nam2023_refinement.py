"""PROnet E-step: with exact offsets a shifted point returns to the true centre."""

import numpy as np
import pytest

from nucleiweak_d2.data.points import shift_points
from nucleiweak_d2.data.synthetic import synthesize_image
from nucleiweak_d2.methods.nam2023.labels import point_cells
from nucleiweak_d2.methods.nam2023.points import point_error, true_centres
from nucleiweak_d2.methods.nam2023.refinement import refine_points, weighted_geometric_median
from nucleiweak_d2.pseudo_labels._common import nearest_point


def _exact_offsets(label, centres):
    """Offsets of every pixel of object k + 1 to ``centres[k]``."""
    off = np.zeros((2,) + label.shape)
    ys, xs = np.nonzero(label)
    k = label[ys, xs] - 1
    off[0, ys, xs] = centres[k, 0] - xs
    off[1, ys, xs] = centres[k, 1] - ys
    return off


def test_shifted_point_moves_to_the_true_centre_and_delta_limits_the_move():
    shape = (50, 80)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centres = np.array([[20, 25], [55, 22]])
    label = np.zeros(shape, dtype=np.int64)
    for k, (cx, cy) in enumerate(centres):
        label[(xx - cx) ** 2 + (yy - cy) ** 2 <= 36] = k + 1
    clicks = centres + np.array([[5, 3], [9, -4]])  # 5.8 px (< delta 8) and 9.8 px (> delta)
    cells = nearest_point(clicks, shape)[1]
    new, moved, voted = refine_points(
        clicks, cells, label > 0, _exact_offsets(label, centres), delta=8.0
    )
    np.testing.assert_allclose(voted, centres, atol=1e-3)
    assert np.linalg.norm(new[0] - centres[0]) <= 1.0 and moved[0]
    assert (new[1] == clicks[1]).all() and not moved[1]  # the move would exceed delta
    new2, moved2, _ = refine_points(
        clicks, cells, label > 0, _exact_offsets(label, centres), delta=12.0
    )
    assert moved2.all() and (new2 == centres).all()
    # a cell without foreground keeps its point
    same, none, _ = refine_points(clicks, cells, np.zeros(shape, bool), np.zeros((2,) + shape))
    assert (same == clicks).all() and not none.any()


def test_geometric_median_ignores_a_minority_of_wrong_votes():
    rng = np.random.default_rng(0)
    good = np.tile([[10.0, 12.0]], (70, 1)) + rng.normal(0, 0.2, (70, 2))
    bad = rng.uniform(20, 40, (30, 2))  # e.g. pixels of a neighbouring nucleus in the cell
    med = weighted_geometric_median(
        np.concatenate([good, bad]), np.ones(100), np.zeros(100, int), 1
    )
    assert np.linalg.norm(med[0] - [10, 12]) < 0.5
    mean = np.concatenate([good, bad]).mean(axis=0)
    assert np.linalg.norm(mean - [10, 12]) > 5  # the mean would be dragged away


def test_e_step_on_a_synthetic_tile_with_geodesic_cells():
    image, label = synthesize_image((128, 128), seed=3)
    ids = np.arange(1, label.max() + 1)
    ids = ids[np.bincount(label.ravel(), minlength=len(ids) + 1)[1:] > 0]
    yy, xx = np.mgrid[:128, :128]
    centres = np.array([[xx[label == i].mean(), yy[label == i].mean()] for i in ids])
    dense = np.zeros_like(label)
    for k, i in enumerate(ids):
        dense[label == i] = k + 1
    true = np.round(centres).astype(np.int64)
    clicks, _ = shift_points(true, label.shape, (2, 4), seed=0)
    cells = point_cells(image, clicks, geodesic=True)
    new, moved, _ = refine_points(
        clicks, cells, dense > 0, _exact_offsets(dense, centres), delta=8.0
    )
    before = np.linalg.norm(clicks - centres, axis=1)
    after = np.linalg.norm(new - centres, axis=1)
    assert after.mean() < 0.5 * before.mean()
    assert np.mean(after <= 1.0) >= 0.8  # touching nuclei cut by a cell may keep their click


def test_true_centres_and_point_error():
    record = {
        "image_id": 7,
        "annotations": [
            {"point": [10, 10], "point_labeled": 1, "point_shift": [3, 4]},
            {
                "point": [30, 5],
                "point_labeled": 0,
                "point_shift": [0, 0],
            },  # not given to the method
            {"point": [20, 20], "point_labeled": 1, "point_shift": [0, 0]},
        ],
    }
    np.testing.assert_allclose(true_centres(record), [[7, 6], [20, 20]])
    err = point_error({"7": [[10, 10], [20, 20]]}, [record])
    assert err == {"mean": pytest.approx(2.5), "n": 2}
    assert point_error({"7": [[7, 6], [20, 20]]}, [record])["mean"] == 0.0
    clicked = {"image_id": 1, "annotations": [{"point": [1, 1]}]}
    assert true_centres(clicked) is None and point_error({"1": [[1, 1]]}, [clicked]) is None
