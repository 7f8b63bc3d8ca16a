"""Hand-made label maps with metric values computed by hand (nucleiweak_d2.evaluation.metrics)."""

import math

import numpy as np
import pytest

from nucleiweak_d2.evaluation import metrics as M


def _all(gt, pred):
    return M.segmentation_metrics(np.asarray(gt), np.asarray(pred), hausdorff=True)


def _bands(widths_ids, height=4, total=8):
    """Vertical bands: [(width, id), ...] from column 0, background after."""
    out = np.zeros((height, total), dtype=np.int32)
    c = 0
    for width, ident in widths_ids:
        out[:, c : c + width] = ident
        c += width
    return out


def test_perfect_match_with_permuted_noncontiguous_ids():
    gt = _bands([(2, 3), (2, 17), (2, 60000)])
    pred = _bands([(2, 8), (2, 2), (2, 9)])  # same objects, other ids
    res = _all(gt, pred)
    for key in (
        "aji",
        "aji_plus",
        "dice_obj",
        "pixel_acc",
        "pixel_f1",
        "pixel_iou",
        "pq",
        "dq",
        "sq",
        "map_kaggle",
        "ncs",
    ):
        assert res[key] == 1.0, key
    assert res["hausdorff_obj"] == 0.0
    assert (res["n_gt"], res["n_pred"]) == (3, 3)


def test_merge_of_two_nuclei_aji_differs_from_aji_plus():
    # GT: two 4x2 nuclei side by side (8 px each); prediction: one 4x4 object over both.
    gt = _bands([(2, 1), (2, 2)])
    pred = _bands([(4, 7)])
    res = _all(gt, pred)
    # AJI: both nuclei take the same prediction: (8 + 8) / (16 + 16).
    assert res["aji"] == pytest.approx(0.5)
    # AJI+: the prediction pairs with one nucleus only: 8 / (16 + 8).
    assert res["aji_plus"] == pytest.approx(1 / 3)
    # Dice of each pair 2*8/(8+16) = 2/3 on both sides.
    assert res["dice_obj"] == pytest.approx(2 / 3)
    # IoU exactly 0.5 is not a match (IoU > 0.5 required): no TP.
    assert (res["pq"], res["dq"], res["sq"], res["map_kaggle"]) == (0.0, 0.0, 0.0, 0.0)
    assert res["ncs"] == pytest.approx(0.5)
    assert (res["pixel_acc"], res["pixel_f1"], res["pixel_iou"]) == (1.0, 1.0, 1.0)
    # Hausdorff of each pair: column 3 is 2 px from column 1 (and column 2 from column 0).
    assert res["hausdorff_obj"] == pytest.approx(2.0)


def test_split_of_one_nucleus():
    gt = _bands([(4, 5)])
    pred = _bands([(2, 3), (2, 9)])
    res = _all(gt, pred)
    # GT takes pred 3 (IoU tie 0.5, smallest id); pred 9 unused joins the union: 8 / (16 + 8).
    assert res["aji"] == pytest.approx(1 / 3)
    assert res["aji_plus"] == pytest.approx(1 / 3)
    assert res["dice_obj"] == pytest.approx(2 / 3)
    assert res["ncs"] == pytest.approx(0.5)
    assert res["pq"] == 0.0
    assert res["dq"] == 0.0
    assert res["hausdorff_obj"] == pytest.approx(2.0)


def test_shifted_mask():
    gt = np.zeros((4, 6), np.int32)
    gt[:, 0:4] = 4
    pred = np.zeros((4, 6), np.int32)
    pred[:, 1:5] = 11
    res = _all(gt, pred)
    # inter 12, union 20.
    assert res["aji"] == pytest.approx(0.6)
    assert res["aji_plus"] == pytest.approx(0.6)
    assert res["dice_obj"] == pytest.approx(0.75)
    assert res["sq"] == pytest.approx(0.6)
    assert res["dq"] == 1.0
    assert res["pq"] == pytest.approx(0.6)
    # IoU 0.6 is above 0.5 and 0.55 only (not above 0.6): 2 of 10 thresholds.
    assert res["map_kaggle"] == pytest.approx(0.2)
    assert res["ncs"] == pytest.approx(0.6)
    # 24 pixels: TP 12, FP 4, FN 4, TN 4.
    assert res["pixel_acc"] == pytest.approx(16 / 24)
    assert res["pixel_f1"] == pytest.approx(0.75)
    assert res["pixel_iou"] == pytest.approx(0.6)
    assert res["hausdorff_obj"] == pytest.approx(1.0)


def test_empty_prediction():
    gt = _bands([(2, 1), (2, 2)])
    res = _all(gt, np.zeros_like(gt))
    for key in (
        "aji",
        "aji_plus",
        "dice_obj",
        "pixel_f1",
        "pixel_iou",
        "pq",
        "dq",
        "sq",
        "map_kaggle",
        "ncs",
    ):
        assert res[key] == 0.0, key
    assert res["pixel_acc"] == pytest.approx(0.5)
    assert math.isinf(res["hausdorff_obj"])


def test_empty_ground_truth():
    pred = _bands([(2, 1)])
    res = _all(np.zeros_like(pred), pred)
    for key in (
        "aji",
        "aji_plus",
        "dice_obj",
        "pixel_f1",
        "pixel_iou",
        "pq",
        "dq",
        "map_kaggle",
        "ncs",
    ):
        assert res[key] == 0.0, key
    assert res["pixel_acc"] == pytest.approx(0.75)
    assert math.isinf(res["hausdorff_obj"])


def test_both_empty_is_perfect():
    z = np.zeros((3, 5), np.uint16)
    res = _all(z, z)
    for key in (
        "aji",
        "aji_plus",
        "dice_obj",
        "pixel_acc",
        "pixel_f1",
        "pixel_iou",
        "pq",
        "map_kaggle",
        "ncs",
    ):
        assert res[key] == 1.0, key
    assert res["hausdorff_obj"] == 0.0


def test_false_positive_uses_nearest_object_in_hausdorff():
    gt = np.zeros((2, 8), np.int32)
    gt[:, 0:2] = 1
    pred = np.zeros((2, 8), np.int32)
    pred[:, 0:2] = 5
    pred[:, 6:8] = 6  # overlaps nothing: compared with the nearest GT object
    # GT side: 0. Pred side: 0.5 * 0 + 0.5 * 6 (column 0 to column 6).
    assert M.object_hausdorff(gt, pred) == pytest.approx(1.5)
    # AJI: 4 / (4 + 4); Dice: GT side 1, pred side 0.5 * 1 + 0.5 * 0.
    assert M.aji(gt, pred) == pytest.approx(0.5)
    assert M.object_dice(gt, pred) == pytest.approx(0.75)
    assert M.panoptic_quality(gt, pred) == pytest.approx({"pq": 2 / 3, "dq": 2 / 3, "sq": 1.0})
    assert M.ncs(gt, pred) == 1.0  # NCS does not punish false positives


def test_aji_prediction_serves_several_nuclei_but_counts_once():
    # Pred 1 is the best match of GT 1 and GT 2; pred 2 is nobody's best and joins the union.
    gt = np.array([[1, 1, 2, 2, 0, 0]])
    pred = np.array([[1, 1, 1, 2, 2, 2]])
    # GT1-P1 IoU 2/3; GT2-P1 IoU 1/4, GT2-P2 IoU 1/4 -> tie, smallest id P1.
    # C = 2 + 1, U = 3 + 4 + |P2| 3 = 10.
    assert M.aji(gt, pred) == pytest.approx(3 / 10)
    # AJI+: GT1-P1 (2/3) and GT2-P2 (1/4): C = 2 + 1, U = 3 + 4.
    assert M.aji_plus(gt, pred) == pytest.approx(3 / 7)


def test_kaggle_thresholds_and_strict_inequality():
    assert M.KAGGLE_THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    gt = np.zeros((1, 20), np.int32)
    gt[0, :11] = 1
    pred = np.zeros((1, 20), np.int32)
    pred[0, :20] = 2
    # IoU 11/20 = 0.55: above 0.5 only -> 1/10.
    assert M.kaggle_map(gt, pred) == pytest.approx(0.1)


def test_relabelling_invariance():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 6, size=(30, 30)).repeat(2, 0)
    pred = np.roll(gt, 1, axis=1) * (rng.random(gt.shape) > 0.1)
    base = _all(gt, pred)
    lut_g = np.array([0, 40000, 7, 123, 9, 65535])
    lut_p = np.array([0, 3, 99999, 1, 2, 5])
    moved = _all(lut_g[gt], lut_p[pred])
    assert moved == pytest.approx(base)
    binary = M.pixel_metrics((gt > 0).astype(np.uint8), (pred > 0).astype(np.uint8))
    assert M.pixel_metrics(gt, pred) == pytest.approx(binary)


def test_symmetric_metrics_are_symmetric():
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 5, size=(20, 20))
    pred = np.roll(gt, 2, axis=0)
    for fn in (M.aji_plus, M.object_dice, M.object_hausdorff, M.kaggle_map):
        assert fn(gt, pred) == pytest.approx(fn(pred, gt)), fn.__name__


@pytest.mark.parametrize(
    "gt,pred,match",
    [
        (np.zeros((4, 4), float), np.zeros((4, 4), int), "integer"),
        (np.zeros((4, 4), int), np.zeros((4, 5), int), "differ in size"),
        (np.zeros((4, 4, 2), int), np.zeros((4, 4, 2), int), "2-D"),
        (np.zeros((0, 4), int), np.zeros((0, 4), int), "empty"),
        (-np.ones((4, 4), int), np.zeros((4, 4), int), ">= 0"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), int), "integer"),
    ],
)
def test_bad_label_maps_raise(gt, pred, match):
    with pytest.raises(ValueError, match=match):
        M.segmentation_metrics(gt, pred)


def test_object_precision_recall_at_iou50_summed_over_images():
    from nucleiweak_d2.evaluation.aggregate import aggregate
    from nucleiweak_d2.evaluation.report import summary_from_aggregate

    gt = np.zeros((40, 40), np.int32)
    gt[0:10, 0:10] = 3
    gt[20:30, 20:30] = 8
    pred = np.zeros_like(gt)
    pred[0:10, 0:10] = 1  # exact match of 3
    pred[20:30, 0:10] = 2  # false positive; 8 is missed
    pred[20:30, 20:24] = 5  # IoU 0.4 with 8: not a match
    first = M.segmentation_metrics(gt, pred)
    assert (first["obj_tp"], first["obj_fp"], first["obj_fn"]) == (1, 2, 1)
    second = M.segmentation_metrics(gt, gt)
    assert (second["obj_tp"], second["obj_fp"], second["obj_fn"]) == (2, 0, 0)
    agg = aggregate([first, second])
    assert (agg["obj_tp"], agg["obj_fp"], agg["obj_fn"]) == (3, 2, 1)
    assert agg["obj_precision"] == pytest.approx(3 / 5)
    assert agg["obj_recall"] == pytest.approx(3 / 4)
    summary = summary_from_aggregate(agg)
    assert summary["obj_P"] == pytest.approx(0.6) and summary["obj_R"] == pytest.approx(0.75)
    assert "obj_tp_mean" not in agg
