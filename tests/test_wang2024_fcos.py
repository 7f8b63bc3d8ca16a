"""DoNuSeg detection branch: FCOS anchor labels with ignored regions (no negative there), the
ignore-aware losses, DoNuSeg's ignore rule from the initial label M, and the pseudo-box rules."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import Backbone  # noqa: E402
from detectron2.modeling.meta_arch.fcos import FCOS  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import nucleiweak_d2.methods.wang2024  # noqa: E402,F401  (registers the method before setup_cfg)
from nucleiweak_d2.methods.wang2024.fcos import IgnoreAwareFCOS  # noqa: E402
from nucleiweak_d2.methods.wang2024.pseudo_boxes import point_boxes  # noqa: E402
from nucleiweak_d2.methods.wang2024.targets import initial_labels  # noqa: E402

NEG = 1  # num_classes: the negative label


class _Levels(Backbone):
    """Two levels, strides 4 and 8 (only the shapes matter here)."""

    def output_shape(self):
        return {"p2": ShapeSpec(channels=4, stride=4), "p3": ShapeSpec(channels=4, stride=8)}

    def forward(self, x):  # pragma: no cover - not called
        raise NotImplementedError


def _fcos(cls=IgnoreAwareFCOS):
    return cls(
        backbone=_Levels(),
        head=torch.nn.Identity(),
        head_in_features=["p2", "p3"],
        num_classes=1,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
    )


def _anchors(fcos, size=32):
    return fcos.anchor_generator(
        [torch.zeros(1, 4, size // 4, size // 4), torch.zeros(1, 4, size // 8, size // 8)]
    )


def _instances(boxes, size=32):
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(inst.gt_boxes), dtype=torch.int64)
    return inst


def test_ignored_regions_get_no_negative_and_positives_stay():
    fcos = _fcos()
    anchors = _anchors(fcos)
    inst = _instances([[4, 4, 12, 12]])
    plain, _ = fcos.label_anchors(anchors, [inst])
    assert (plain[0] == 0).any() and (plain[0] == NEG).any() and not (plain[0] == -1).any()
    plain_d2, _ = FCOS.label_anchors(
        fcos, anchors, [inst]
    )  # identical to Detectron2's without maps
    assert torch.equal(plain[0], plain_d2[0])

    ignore = torch.zeros(32, 32, dtype=torch.bool)
    ignore[16:, 16:] = True
    centres = Boxes.cat(anchors).get_centers()
    marked = (centres[:, 0] >= 16) & (centres[:, 1] >= 16)
    labels, _ = fcos.label_anchors(anchors, [inst], [ignore])
    assert marked.any()
    assert (labels[0][marked] == -1).all()  # no negative in the marked region
    assert torch.equal(labels[0][~marked], plain[0][~marked])

    everything, _ = fcos.label_anchors(anchors, [inst], [torch.ones(32, 32, dtype=torch.bool)])
    assert torch.equal(everything[0] == 0, plain[0] == 0)  # positives are never ignored
    assert not (everything[0] == NEG).any()
    empty, _ = fcos.label_anchors(anchors, [_instances([])], [ignore])  # no box at all
    assert (empty[0][marked] == -1).all() and (empty[0][~marked] == NEG).all()


def test_ignored_anchors_add_nothing_to_the_losses():
    fcos = _fcos()
    anchors = _anchors(fcos)
    n = sum(len(a) for a in anchors)
    inst = _instances([[4, 4, 12, 12]])
    ignore = torch.zeros(32, 32, dtype=torch.bool)
    ignore[16:, 16:] = True
    labels, boxes = fcos.label_anchors(anchors, [inst], [ignore])
    split = [len(a) for a in anchors]
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, n, 1, generator=g)
    deltas, ctr = torch.rand(1, n, 4, generator=g), torch.randn(1, n, 1, generator=g)

    def loss(lg, lab):
        f = _fcos()  # fresh EMA normaliser
        with EventStorage():
            out = f.losses(
                anchors,
                list(lg.split(split, dim=1)),
                [lab.clone()],
                list(deltas.split(split, dim=1)),
                boxes,
                list(ctr.split(split, dim=1)),
            )
        return {k: v.item() for k, v in out.items()}

    base = loss(logits, labels[0])
    ignored = labels[0] == -1
    changed = logits.clone()
    changed[0, ignored] = 20.0  # confident "nucleus" where ignored: no penalty
    assert loss(changed, labels[0]) == pytest.approx(base)
    negative = labels[0] == NEG
    changed = logits.clone()
    changed[0, negative] = 20.0
    assert loss(changed, labels[0])["loss_fcos_cls"] > base["loss_fcos_cls"] + 1.0
    # without ignored anchors the losses are Detectron2's
    plain, _ = fcos.label_anchors(anchors, [inst])
    f = _fcos(FCOS)
    with EventStorage():
        d2 = f.losses(
            anchors,
            list(logits.split(split, dim=1)),
            [plain[0].clone()],
            list(deltas.split(split, dim=1)),
            boxes,
            list(ctr.split(split, dim=1)),
        )
    assert loss(logits, plain[0]) == pytest.approx({k: v.item() for k, v in d2.items()})


def test_donuseg_ignores_unmatched_anchors_within_d_of_a_point():
    from detectron2.modeling import build_model

    from nucleiweak_d2.config import setup_cfg

    model = build_model(setup_cfg("configs/quick/wang2024_instant_test.yaml"))
    size = 64
    points = torch.tensor([[20.5, 20.5]])
    m = initial_labels([points], [(size, size)], (size, size), r=4, d=20)
    p = torch.zeros_like(m)
    p[0, 50:, 50:] = 1  # the selected CAM's foreground
    valid = torch.ones(1, size, size, dtype=torch.bool)
    feats = {
        f: torch.zeros(1, 4, size // s, size // s)
        for f, s in zip(["p2", "p3", "p4", "p5", "p6"], [4, 8, 16, 32, 64])
    }
    anchors = model.anchor_generator([feats[f] for f in model.head_in_features])
    inst = _instances(point_boxes(points, (size, size), "fixed", size=16.0).tensor.tolist(), size)
    centres = Boxes.cat(anchors).get_centers()
    dist = (centres - torch.tensor([20.0, 20.0])).norm(dim=1)  # to the point's pixel (20, 20)

    for sources, ignored_where in (
        (["initial_label"], dist <= 20),
        (
            ["initial_label", "pseudo_label"],
            (dist <= 20) | ((centres[:, 0] >= 50) & (centres[:, 1] >= 50)),
        ),
        ([], torch.zeros_like(dist, dtype=torch.bool)),
    ):
        model.ignore_sources = tuple(sources)
        maps = model.ignore_maps(m, p, valid)
        labels = model.label_anchors(anchors, [inst], maps)[0][0]
        assert (labels == 0).any()  # the point's positives
        assert not (labels[ignored_where] == NEG).any(), sources  # no negative there
        assert (labels[~ignored_where] != -1).all()
        assert (labels[ignored_where & (labels != 0)] == -1).all()


def test_pseudo_box_rules():
    pts = torch.tensor([[10.0, 10.0], [20.0, 10.0], [50.0, 50.0]])
    nn = point_boxes(pts, (64, 64), "nearest_neighbor", nn_factor=1.0, min_size=4.0, max_size=30.0)
    # d_nn = 10, 10 and 50 (clipped to 30, then to the image)
    torch.testing.assert_close(
        nn.tensor, torch.tensor([[5.0, 5, 15, 15], [15, 5, 25, 15], [35, 35, 64, 64]])
    )
    small = point_boxes(
        pts, (64, 64), "nearest_neighbor", nn_factor=0.2, min_size=4.0, max_size=30.0
    )
    torch.testing.assert_close(small.tensor[0], torch.tensor([8.0, 8, 12, 12]))  # 2 -> min 4
    lone = point_boxes(pts[:1], (64, 64), "nearest_neighbor", max_size=30.0)
    torch.testing.assert_close(lone.tensor, torch.tensor([[0.0, 0, 25, 25]]))  # max size, clipped
    fixed = point_boxes(pts, (100, 100), "fixed", size=50.0)
    torch.testing.assert_close(fixed.tensor[2], torch.tensor([25.0, 25, 75, 75]))
    given = Boxes(torch.tensor([[1.0, 2, 3, 4]]))
    assert torch.equal(point_boxes(pts[:1], (64, 64), "given", given=given).tensor, given.tensor)
    with pytest.raises(ValueError, match="given"):
        point_boxes(pts, (64, 64), "given")
    with pytest.raises(ValueError, match="rule"):
        point_boxes(pts, (64, 64), "voronoi")
    assert len(point_boxes(pts[:0], (64, 64))) == 0
