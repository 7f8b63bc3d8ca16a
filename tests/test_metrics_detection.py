"""Detection matching and aggregation over images, on hand-made points and records."""

import numpy as np
import pytest

from nucleiweak_d2.evaluation.metrics import (
    aggregate,
    detection_counts,
    detection_metrics,
    image_metrics,
)


def test_radius_is_strict_and_counts():
    gt = [(0, 0), (10, 0)]
    pred = [(3, 4), (10, 1), (50, 50)]
    res = detection_counts(gt, pred, radius=5)
    # (0,0)-(3,4) is exactly 5: not < 5. (10,0)-(10,1) = 1 matches.
    assert (res["tp"], res["fp"], res["fn"]) == (1, 2, 1)
    assert res["distances"].tolist() == [1.0]
    assert res["pairs"].tolist() == [[1, 1]]
    assert detection_counts(gt, pred, radius=5.001)["tp"] == 2


def test_greedy_follows_gt_order_and_hungarian_maximises_matches():
    gt = [(0, 0), (4, 0)]
    pred = [(2.5, 0), (-3, 0)]
    greedy = detection_metrics(gt, pred, radius=4)
    # GT 0 takes its nearest (2.5 px); GT 1 is then 7 px from the other: FN.
    assert (greedy["tp"], greedy["fp"], greedy["fn"]) == (1, 1, 1)
    assert greedy["distances"].tolist() == [2.5]
    hung = detection_metrics(gt, pred, radius=4, method="hungarian")
    assert (hung["tp"], hung["fp"], hung["fn"]) == (2, 0, 0)
    assert hung["pairs"].tolist() == [[0, 1], [1, 0]]
    assert hung["distances"].tolist() == [3.0, 1.5]
    assert hung["dist_mean"] == pytest.approx(2.25)
    assert hung["dist_std"] == pytest.approx(0.75)
    assert (hung["precision"], hung["recall"], hung["f1"]) == (1.0, 1.0, 1.0)
    # Reversing the GT order changes the greedy result (GT (4,0) now goes first).
    assert detection_counts(gt[::-1], pred, radius=4)["tp"] == 2


def test_greedy_takes_nearest_unmatched_not_first_listed():
    gt = [(0, 0)]
    pred = [(3, 0), (1, 0), (2, 0)]
    res = detection_counts(gt, pred, radius=5)
    assert res["pairs"].tolist() == [[0, 1]]


def test_hungarian_prefers_smaller_total_distance_at_equal_count():
    gt = [(0, 0), (10, 0)]
    pred = [(1, 0), (9, 0)]
    res = detection_counts(gt, pred, radius=20, method="hungarian")
    assert res["pairs"].tolist() == [[0, 0], [1, 1]]
    assert res["distances"].tolist() == [1.0, 1.0]


def test_empty_point_sets():
    res = detection_metrics(np.zeros((0, 2)), [(1, 1)], radius=3)
    assert (res["tp"], res["fp"], res["fn"]) == (0, 1, 0)
    assert (res["precision"], res["recall"], res["f1"]) == (0.0, 0.0, 0.0)
    res = detection_metrics([], [], radius=3)
    assert (res["precision"], res["recall"], res["f1"]) == (1.0, 1.0, 1.0)
    assert (res["dist_mean"], res["dist_std"]) == (0.0, 0.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gt_points": [(1, 2, 3)], "pred_points": [], "radius": 3}, "gt_points"),
        ({"gt_points": [(1, 2)], "pred_points": [(np.nan, 1)], "radius": 3}, "finite"),
        ({"gt_points": [(1, 2)], "pred_points": [], "radius": 0}, "radius"),
        ({"gt_points": [(1, 2)], "pred_points": [], "radius": 3, "method": "nearest"}, "method"),
    ],
)
def test_bad_detection_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        detection_counts(**kwargs)


def test_aggregate_means_and_micro_detection():
    recs = [
        {
            "name": "a",
            "aji": 0.5,
            "det_tp": 1,
            "det_fp": 2,
            "det_fn": 1,
            "det_precision": 1 / 3,
            "det_distances": np.array([1.0]),
        },
        {
            "name": "b",
            "aji": 1.0,
            "det_tp": 3,
            "det_fp": 0,
            "det_fn": 1,
            "det_precision": 1.0,
            "det_distances": np.array([2.0, 3.0, 6.0]),
        },
    ]
    agg = aggregate(recs)
    assert agg["num_images"] == 2
    assert agg["aji_mean"] == pytest.approx(0.75)
    assert agg["aji_std"] == pytest.approx(0.25)
    assert (agg["det_tp"], agg["det_fp"], agg["det_fn"]) == (4, 2, 2)
    assert agg["det_precision"] == pytest.approx(4 / 6)
    assert agg["det_recall"] == pytest.approx(4 / 6)
    assert agg["det_f1"] == pytest.approx(8 / 12)
    assert agg["det_precision_mean"] == pytest.approx((1 / 3 + 1) / 2)
    assert agg["det_dist_mean"] == pytest.approx(3.0)
    assert agg["det_dist_std"] == pytest.approx(np.std([1.0, 2.0, 3.0, 6.0]))
    assert "name_mean" not in agg and "det_tp_mean" not in agg
    with pytest.raises(ValueError, match="no per-image"):
        aggregate([])


def test_image_metrics_record_round_trips_through_aggregate():
    gt = np.zeros((20, 20), np.int32)
    gt[2:6, 2:6] = 1
    gt[10:15, 10:15] = 2
    pred = np.roll(gt, 1, axis=1)
    rec = image_metrics(gt, pred, [(3, 3), (12, 12)], [(4, 3), (19, 19)], radius=3)
    assert (rec["det_tp"], rec["det_fp"], rec["det_fn"]) == (1, 1, 1)
    agg = aggregate([rec, rec])
    assert agg["aji_mean"] == pytest.approx(rec["aji"])
    assert agg["aji_std"] == 0.0
    assert agg["det_tp"] == 2 and agg["det_precision"] == pytest.approx(0.5)
