"""Contingency-table metrics against slow per-object implementations of the definitions.

The references below loop over objects with full-image boolean masks, the way the published
code does (Kumar's AJI, HoVer-Net's AJI+ and PQ, the GlaS object Dice and Hausdorff, the
Kaggle DSB score, Feng's NCS, Qu's greedy point matching), on random maps with overlaps,
merges, splits, misses and false positives.
"""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from nucleiweak_d2.evaluation import metrics as M


def _objects(label):
    return [(i, label == i) for i in np.unique(label) if i != 0]


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def ref_aji(gt, pred):
    preds = _objects(pred)
    inter = union = 0
    used = set()
    for _, g in _objects(gt):
        ious = [_iou(g, p) for _, p in preds]
        if not ious or max(ious) == 0:
            union += g.sum()
            continue
        k = int(np.argmax(ious))
        inter += (g & preds[k][1]).sum()
        union += (g | preds[k][1]).sum()
        used.add(k)
    union += sum(p.sum() for k, (_, p) in enumerate(preds) if k not in used)
    return inter / union


def ref_aji_plus(gt, pred):
    gts, preds = _objects(gt), _objects(pred)
    iou = np.array([[_iou(g, p) for _, p in preds] for _, g in gts]).reshape(len(gts), len(preds))
    rows, cols = linear_sum_assignment(-iou)
    keep = iou[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    inter = sum((gts[r][1] & preds[c][1]).sum() for r, c in zip(rows, cols))
    union = sum((gts[r][1] | preds[c][1]).sum() for r, c in zip(rows, cols))
    union += sum(g.sum() for k, (_, g) in enumerate(gts) if k not in set(rows))
    union += sum(p.sum() for k, (_, p) in enumerate(preds) if k not in set(cols))
    return inter / union


def _best_overlap(mask, other):
    """Id of the other map's object of largest overlap with mask (smallest id on ties)."""
    ids, counts = np.unique(other[mask & (other > 0)], return_counts=True)
    return ids[np.argmax(counts)] if ids.size else None


def ref_object_dice(gt, pred):
    total = 0.0
    for a, b in ((gt, pred), (pred, gt)):
        area = (a > 0).sum()
        for _, obj in _objects(a):
            match = _best_overlap(obj, b)
            if match is not None:
                other = b == match
                dice = 2 * (obj & other).sum() / (obj.sum() + other.sum())
                total += 0.5 * obj.sum() / area * dice
    return total


def _hausdorff(a, b):
    d = cdist(np.argwhere(a), np.argwhere(b))
    return max(d.min(axis=1).max(), d.min(axis=0).max())


def ref_object_hausdorff(gt, pred):
    total = 0.0
    for a, b in ((gt, pred), (pred, gt)):
        area = (a > 0).sum()
        for _, obj in _objects(a):
            match = _best_overlap(obj, b)
            if match is not None:
                h = _hausdorff(obj, b == match)
            else:
                h = min(_hausdorff(obj, other) for _, other in _objects(b))
            total += 0.5 * obj.sum() / area * h
    return total


def ref_pq_map_ncs(gt, pred):
    gts, preds = _objects(gt), _objects(pred)
    iou = np.array([[_iou(g, p) for _, p in preds] for _, g in gts]).reshape(len(gts), len(preds))
    tp = (iou > 0.5).sum()
    dq = tp / (tp + 0.5 * (len(preds) - tp) + 0.5 * (len(gts) - tp))
    sq = iou[iou > 0.5].sum() / tp if tp else 0.0
    scores = [
        (iou > t).sum() / (len(gts) + len(preds) - (iou > t).sum())
        for t in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    ]
    areas = np.array([g.sum() for _, g in gts])
    ncs = (areas * iou.max(axis=1)).sum() / areas.sum()
    return {"pq": dq * sq, "dq": dq, "sq": sq, "map": np.mean(scores), "ncs": ncs}


def ref_greedy(gt_pts, pred_pts, radius):
    remaining = list(range(len(pred_pts)))
    dists = []
    for g in gt_pts:
        if not remaining:
            break
        d = [np.hypot(*(np.asarray(pred_pts[j]) - g)) for j in remaining]
        k = int(np.argmin(d))
        if d[k] < radius:
            dists.append(d[k])
            remaining.pop(k)
    return len(dists), dists


def _random_pair(seed, size=40):
    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), np.int32)
    for k in range(rng.integers(4, 9)):
        r0, c0 = rng.integers(0, size - 4, 2)
        h, w = rng.integers(3, 10, 2)
        gt[r0 : r0 + h, c0 : c0 + w] = rng.integers(1, 10**6)  # large, non-contiguous ids
    pred = np.roll(gt, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    for _ in range(rng.integers(1, 4)):  # merges, cuts and false positives
        r0, c0 = rng.integers(0, size - 4, 2)
        h, w = rng.integers(2, 9, 2)
        pred[r0 : r0 + h, c0 : c0 + w] = rng.choice([0, 5, int(pred.max()) + 1])
    return gt, pred


@pytest.mark.parametrize("seed", range(12))
def test_segmentation_metrics_match_references(seed):
    gt, pred = _random_pair(seed)
    res = M.segmentation_metrics(gt, pred, hausdorff=True)
    assert res["aji"] == pytest.approx(ref_aji(gt, pred))
    assert res["aji_plus"] == pytest.approx(ref_aji_plus(gt, pred))
    assert res["dice_obj"] == pytest.approx(ref_object_dice(gt, pred))
    assert res["hausdorff_obj"] == pytest.approx(ref_object_hausdorff(gt, pred))
    ref = ref_pq_map_ncs(gt, pred)
    assert (res["pq"], res["dq"], res["sq"]) == pytest.approx((ref["pq"], ref["dq"], ref["sq"]))
    assert res["map_kaggle"] == pytest.approx(ref["map"])
    assert res["ncs"] == pytest.approx(ref["ncs"])
    tp = ((gt > 0) & (pred > 0)).sum()
    assert res["pixel_f1"] == pytest.approx(2 * tp / ((gt > 0).sum() + (pred > 0).sum()))


def test_hausdorff_nearest_search_on_far_apart_objects():
    # Many non-overlapping objects far apart: the bounded search must find the exact minimum.
    rng = np.random.default_rng(0)
    gt = np.zeros((60, 60), np.int32)
    pred = np.zeros((60, 60), np.int32)
    for k in range(1, 8):
        r, c = rng.integers(0, 55, 2)
        gt[r : r + rng.integers(1, 6), c : c + rng.integers(1, 6)] = k
        r, c = rng.integers(0, 55, 2)
        pred[r : r + rng.integers(1, 6), c : c + rng.integers(1, 6)] = 10 + k
    pred[gt > 0] = 0  # no overlap at all
    assert M.object_hausdorff(gt, pred) == pytest.approx(ref_object_hausdorff(gt, pred))


def test_hausdorff_interior_point_farthest_from_ring():
    # The GT pixel farthest from a ring around it is interior: the distance needs all pixels.
    pred = np.zeros((21, 21), np.int32)
    pred[0, :] = pred[-1, :] = pred[:, 0] = pred[:, -1] = 3
    gt = np.zeros((21, 21), np.int32)
    gt[5:16, 5:16] = 1
    assert M.object_hausdorff(gt, pred) == pytest.approx(ref_object_hausdorff(gt, pred))


@pytest.mark.parametrize("seed", range(6))
def test_greedy_detection_matches_reference(seed):
    rng = np.random.default_rng(seed)
    gt_pts = rng.uniform(0, 100, (30, 2))
    pred_pts = np.concatenate(
        [gt_pts[rng.random(30) < 0.8] + rng.normal(0, 4, (1, 2)), rng.uniform(0, 100, (5, 2))]
    )
    pred_pts = pred_pts[rng.permutation(len(pred_pts))]
    res = M.detection_counts(gt_pts, pred_pts, radius=6)
    tp, dists = ref_greedy(gt_pts, pred_pts, 6)
    assert res["tp"] == tp
    assert np.allclose(res["distances"], dists)
    hung = M.detection_counts(gt_pts, pred_pts, radius=6, method="hungarian")
    assert hung["tp"] >= tp
    assert hung["tp"] + hung["fp"] == len(pred_pts)


def test_real_crop_matches_references(shared_monuseg):
    from nucleiweak_d2.data.io import read_label

    label = read_label(sorted((shared_monuseg / "labels").glob("*.png"))[0])[300:460, 300:460]
    rng = np.random.default_rng(1)
    lut = np.concatenate([[0], rng.permutation(int(label.max())) + 1])
    pred = np.roll(lut[label], (2, -3), axis=(0, 1))
    pred[:40, :40] = 0  # some misses
    res = M.segmentation_metrics(label, pred, hausdorff=True)
    assert res["n_gt"] > 10
    assert res["aji"] == pytest.approx(ref_aji(label, pred))
    assert res["aji_plus"] == pytest.approx(ref_aji_plus(label, pred))
    assert res["dice_obj"] == pytest.approx(ref_object_dice(label, pred))
    assert res["hausdorff_obj"] == pytest.approx(ref_object_hausdorff(label, pred))
    ref = ref_pq_map_ncs(label, pred)
    assert (res["pq"], res["map_kaggle"], res["ncs"]) == pytest.approx(
        (ref["pq"], ref["map"], ref["ncs"])
    )
