"""Centerness targets, loss sampling and pseudo-boxes of the Feng et al. 2019 head."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks  # noqa: E402

from nucleiweak_d2.methods.feng2019 import centerness as ctr  # noqa: E402
from nucleiweak_d2.methods.feng2019.centerness import (  # noqa: E402
    CenternessBoxHead,
    centerness_targets,
    union_of_masks,
)
from nucleiweak_d2.pseudo_labels import centerness_targets as numpy_centerness_targets  # noqa: E402


def _instances(size, boxes, masks=None):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(inst.gt_boxes), dtype=torch.int64)
    if masks is not None:
        inst.gt_masks = BitMasks(masks)
    return inst


def _hand_made():
    """64x64 image, stride 4 (16x16 grid); four instances with square-ish masks."""
    boxes = [
        (8, 8, 40, 40),  # A: 32x32
        (48, 48, 52, 52),  # B: 4x4 (one cell)
        (20, 20, 28, 28),  # C: inside A, smaller -> wins the shared positive cell
        (56, 0, 64, 6),  # D: 8x6 at the top-right border, partial cells
    ]
    masks = torch.zeros(4, 64, 64, dtype=torch.bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, y1:y2, x1:x2] = True
    return _instances((64, 64), boxes, masks)


def test_centerness_targets_hand_made():
    inst = _hand_made()
    labels, tboxes = centerness_targets(
        inst.gt_boxes.tensor, union_of_masks(inst), (16, 16), 4, 0.3
    )
    expected = torch.full((16, 16), -1, dtype=torch.int64)
    expected[2:10, 2:10] = 0  # projected mask of A (pixels 8..39)
    expected[5:7, 5:7] = 1  # A: centre 6 +- 0.3*8/2 -> cells with centre in [4.8, 7.2]
    expected[12, 12] = 1  # B: only the cell holding its centre
    expected[0, 14] = 0  # D: mask rows 0..5 -> cell rows 0 (4/4) and 1 (2/4 >= 0.5)
    expected[1, 14:16] = 0
    expected[0, 15] = 1  # D: centre (15, 0.75) in cell coordinates
    assert torch.equal(labels, expected)
    a, c = torch.tensor([8.0, 8, 40, 40]), torch.tensor([20.0, 20, 28, 28])
    for i, j in [(5, 5), (5, 6), (6, 5)]:
        assert torch.equal(tboxes[i, j], a)
    assert torch.equal(tboxes[6, 6], c)  # smallest instance wins
    assert torch.equal(tboxes[12, 12], torch.tensor([48.0, 48, 52, 52]))
    assert torch.equal(tboxes[labels != 1], torch.zeros(int((labels != 1).sum()), 4))


def _both(masks, labeled, stride, frac=0.3):
    """Targets of the torch definition and of the numpy mirror for ``(N, H, W)`` bool masks."""
    h, w = masks.shape[1:]
    m = torch.as_tensor(masks[list(labeled)]).reshape(-1, h, w)
    boxes = BitMasks(m).get_bounding_boxes().tensor if len(m) else torch.zeros((0, 4))
    feature_size = (math.ceil(h / stride), math.ceil(w / stride))
    labels, tboxes = centerness_targets(boxes, m.any(dim=0), feature_size, stride, frac)
    np_labels, np_boxes = numpy_centerness_targets(masks, labeled, stride, frac, return_boxes=True)
    return (labels.numpy(), tboxes.numpy()), (np_labels, np_boxes)


def _assert_same(masks, labeled, stride, frac=0.3):
    (labels, boxes), (np_labels, np_boxes) = _both(masks, labeled, stride, frac)
    assert np_labels.dtype == np.int8 and np_boxes.dtype == np.float32
    np.testing.assert_array_equal(np_labels, labels)
    np.testing.assert_array_equal(np_boxes, boxes)
    return np_labels


def test_numpy_mirror_matches_on_hand_made_cases():
    masks = _hand_made().gt_masks.tensor.numpy()
    labels = _assert_same(masks, [0, 1, 2, 3], 4)
    assert (labels == 1).sum() == 4 + 1 + 1 and labels[
        6, 6
    ] == 1  # C's cell is one of A's 4 and labels[0, 15] == 1
    # the instance-map input gives the same targets
    inst = np.zeros((64, 64), np.int32)
    for k in range(4):
        inst[masks[k]] = k + 1
    np.testing.assert_array_equal(numpy_centerness_targets(inst, [1, 2, 3, 4], 4), labels)
    # a subset of labelled instances; another stride; image sides not multiples of the stride
    _assert_same(masks, [1, 3], 4)
    _assert_same(masks[:, :62, :59], [0, 2, 3], 4)
    _assert_same(masks, [0, 2], 3, 0.5)
    # negatives are cells at least half covered by the masks, not cells whose one sample pixel
    # is covered: 7 of 16 pixels of cell (1, 1) (sample pixel (6, 6) inside) -> ignored;
    # 8 of 16 pixels of cell (1, 2) (sample pixel (10, 6) outside) -> negative
    mask = np.zeros((1, 16, 16), bool)
    mask[0, 4:8, 5:8] = True  # cell (1, 1): columns 5..7 of 4..7, all rows
    mask[0, 4:8, 8:10] = True  # cell (1, 2): columns 8..9 of 8..11
    mask[0, 7, 4] = True
    mask[0, 4:7, 4] = False
    labels = _assert_same(mask, [0], 4)
    assert mask[0, 4:8, 4:8].sum() == 13 and labels[1, 1] == 1  # the centre cell
    assert mask[0, 4:8, 8:12].sum() == 8 and labels[1, 2] == 0
    mask = np.zeros((1, 16, 16), bool)
    mask[0, 6, 6] = mask[0, 5, 5] = True  # 2 of 16 pixels, one of them the sample pixel
    mask[0, 9:16, 9:16] = True  # a second blob whose centre box holds the positives
    labels = _assert_same(mask, [0], 4)
    assert labels[1, 1] == -1 and labels[2, 2] == 1 and labels[3, 3] == 0
    # nothing labelled: everything ignored
    assert (_assert_same(masks, [], 4) == -1).all()


def _random_masks(rng, h, w, n):
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), bool)
    for k in range(n):
        cx, cy = rng.uniform(-2, w + 2), rng.uniform(-2, h + 2)
        rx, ry = rng.uniform(0.6, 14), rng.uniform(0.6, 14)
        if rng.random() < 0.5:
            masks[k] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        else:
            masks[k] = (np.abs(xx + 0.5 - cx) <= rx) & (np.abs(yy + 0.5 - cy) <= ry)
        if not masks[k].any():
            masks[k, min(max(int(cy), 0), h - 1), min(max(int(cx), 0), w - 1)] = True
    return masks


def _box_areas(mask):
    ys, xs = np.nonzero(mask)
    return (xs.max() + 1 - xs.min()) * (ys.max() + 1 - ys.min())


def test_numpy_mirror_matches_on_random_cases():
    rng = np.random.default_rng(0)
    n_pos = n_neg = 0
    for _ in range(300):
        h, w = rng.integers(5, 70, size=2)
        stride = int(rng.choice([1, 2, 3, 4, 4, 4, 5, 6, 8]))
        frac = float(rng.choice([0.3, 0.3, 0.1, 0.5, 1.0]))
        masks = _random_masks(rng, h, w, int(rng.integers(0, 9)))
        labeled = [k for k in range(len(masks)) if rng.random() < 0.7]
        # the torch definition orders equal box areas arbitrarily (unstable argsort): only
        # instances of distinct box areas, so that the boxes are defined
        areas = [_box_areas(masks[k]) for k in labeled]
        labeled = [k for k, a in zip(labeled, areas) if areas.count(a) == 1]
        labels = _assert_same(masks, labeled, stride, frac)
        n_pos, n_neg = n_pos + (labels == 1).sum(), n_neg + (labels == 0).sum()
    assert n_pos > 300 and n_neg > 1000  # the cases do exercise both labels


def test_union_of_masks_polygons_and_boxes_only():
    poly = PolygonMasks([[[8, 8, 16, 8, 16, 16, 8, 16]]])
    inst = _instances((32, 32), [(8, 8, 16, 16)])
    inst.gt_masks = poly
    union = union_of_masks(inst)
    assert union.shape == (32, 32) and 50 <= int(union.sum()) <= 81 and union[12, 12]
    boxes_only = union_of_masks(_instances((32, 32), [(8, 8, 16, 16)]))
    assert int(boxes_only.sum()) == 64 and boxes_only[8:16, 8:16].all()


def _head(**kw):
    torch.manual_seed(0)
    return CenternessBoxHead(in_channels=8, stride=4, conv_dim=8, anchor_size=(16.0, 16.0), **kw)


def test_losses_sample_at_most_128_half_positive(monkeypatch):
    seen = []

    def spy(labels, num, frac, bg):
        pos, neg = ctr.subsample_labels.__wrapped__(labels, num, frac, bg)
        seen.append((labels[pos].tolist(), labels[neg].tolist()))
        return pos, neg

    spy.__wrapped__ = ctr.subsample_labels
    monkeypatch.setattr(ctr, "subsample_labels", spy)
    head = _head()
    # 2 images x 36 big nuclei: many more than 64 positive and 64 negative cells
    boxes = [(x, y, x + 30, y + 30) for x in range(0, 192, 32) for y in range(0, 192, 32)]
    masks = torch.zeros(len(boxes), 192, 192, dtype=torch.bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, y1:y2, x1:x2] = True
    gts = [_instances((192, 192), boxes, masks) for _ in range(2)]
    logits, deltas = head(torch.randn(2, 8, 48, 48))
    assert logits.shape == (2, 1, 48, 48) and deltas.shape == (2, 4, 48, 48)
    losses = head.losses(logits, deltas, gts)
    pos, neg = seen[0]
    assert len(pos) == 64 and len(neg) == 64 and set(pos) == {1} and set(neg) == {0}
    assert set(losses) == {"loss_centerness", "loss_center_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    # near-zero initial logits: BCE is about log 2 per sampled location
    assert abs(losses["loss_centerness"].item() - 0.6931) < 0.05
    sum(losses.values()).backward()
    assert head.box_deltas.weight.grad.abs().sum() > 0


def test_losses_without_annotations_are_zero_and_differentiable():
    head = _head()
    logits, deltas = head(torch.randn(1, 8, 8, 8))
    losses = head.losses(
        logits, deltas, [_instances((32, 32), [], torch.zeros(0, 32, 32, dtype=torch.bool))]
    )
    assert all(v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()


def test_pseudo_boxes_decode_the_peak_of_each_component():
    head = _head()
    inst = _hand_made()
    labels, tboxes = centerness_targets(
        inst.gt_boxes.tensor, union_of_masks(inst), (16, 16), 4, 0.3
    )
    anchors = head.anchors((16, 16), "cpu")
    logits = torch.full((1, 1, 16, 16), -10.0)
    # component 1: A's 2x2 positives with the peak at (5, 6); component 2: B's single cell
    logits[0, 0, 5:7, 5:7] = 4.0
    logits[0, 0, 5, 6] = 6.0
    logits[0, 0, 12, 12] = 5.0
    logits[0, 0, 0, 0] = 2.0  # sigmoid 0.88 < 0.95: not a seed
    deltas = (
        head.box2box_transform.get_deltas(anchors, tboxes.reshape(-1, 4)).t().reshape(1, 4, 16, 16)
    )
    (result,) = head.predict_boxes(logits, deltas, [(64, 64)])
    assert len(result) == 2
    torch.testing.assert_close(
        result.pred_boxes.tensor, torch.tensor([[8.0, 8, 40, 40], [48, 48, 52, 52]])
    )
    torch.testing.assert_close(result.scores, torch.sigmoid(torch.tensor([6.0, 5.0])))
    # cells outside the image size (padding) are not used
    (cropped,) = head.predict_boxes(logits, deltas, [(40, 40)])
    assert len(cropped) == 1 and cropped.image_size == (40, 40)
    # zero deltas: the anchor box (16x16) centred on the peak cell, clipped
    (anchor_boxes,) = head.predict_boxes(logits, torch.zeros_like(deltas), [(64, 64)])
    torch.testing.assert_close(anchor_boxes.pred_boxes.tensor[0], torch.tensor([18.0, 14, 34, 30]))
