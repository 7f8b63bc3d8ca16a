"""Qu et al. building blocks: post-processing, detection loss and targets, both meta-archs."""

import json

import numpy as np
import pytest
from conftest import TINY_UNET_OPTS

pytest.importorskip("detectron2")

import torch  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.methods.qu2020 import (  # noqa: E402
    NucleiWeakQu2020DetMapper,
    NucleiWeakQu2020SegMapper,
    merge_points,
)
from nucleiweak_d2.methods.qu2020.artifacts import write_mask_png  # noqa: E402
from nucleiweak_d2.modeling.losses import dense_crf as crf  # noqa: E402
from nucleiweak_d2.modeling.losses import weighted_mse_loss  # noqa: E402
from nucleiweak_d2.modeling.meta_arch import (  # noqa: E402
    NucleiWeakPointDetectorEnsemble,
    NucleiWeakUNetSegmentor,
    instances_from_foreground,
    points_from_probability,
)

TINY = TINY_UNET_OPTS + [
    "NUCLEIWEAK.UNET.TARGET_WEIGHTS",
    "[0.5,0.5]",
]


def _record(tmp_path, points, labeled, size=(60, 80)):
    from nucleiweak_d2.data.io import write_image

    h, w = size
    img = np.full((h, w, 3), 200, np.uint8)
    for x, y in points:
        img[max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4] = (90, 40, 140)
    path = tmp_path / "img.png"
    write_image(path, img)
    anns = [
        {"point": [int(x), int(y)], "point_labeled": bool(lab)}
        for (x, y), lab in zip(points, labeled)
    ]
    return {"file_name": str(path), "height": h, "width": w, "image_id": 7, "annotations": anns}


# ----------------------------------------------------------------- post-processing
def test_instances_from_foreground_removes_small_and_fills_holes():
    fg = np.zeros((40, 40), bool)
    fg[5:15, 5:15] = True
    fg[9:11, 9:11] = False  # a hole
    fg[30:33, 30:33] = True  # 9 px: removed
    lab = instances_from_foreground(fg, min_area=20)
    assert lab.max() == 1 and (lab > 0).sum() == 100 and lab[10, 10] == 1


def test_split_touching_separates_two_disks():
    yy, xx = np.mgrid[:40, :60]
    fg = ((xx - 20) ** 2 + (yy - 20) ** 2 < 81) | ((xx - 36) ** 2 + (yy - 20) ** 2 < 81)
    assert instances_from_foreground(fg).max() == 1
    assert instances_from_foreground(fg, split_touching=True, split_min_distance=5).max() == 2


def test_points_from_probability_centroids_and_area_limits():
    prob = np.zeros((50, 50))
    prob[10:15, 20:25] = 0.9  # 25 px, centre (x=22, y=12)
    prob[40:42, 40:42] = 0.9  # 4 px: too small
    prob[25:40, 0:15] = 0.9  # 225 px: too large
    pts = points_from_probability(prob, threshold=0.35, min_area=12, max_area=200)
    np.testing.assert_allclose(pts, [[22.0, 12.0]])
    assert len(points_from_probability(prob, 0.35, 12, 0)) == 2


def test_point_outputs_label_once_and_agree_with_points_from_probability():
    """The detector's outputs: the points of :func:`points_from_probability` and the
    8-connected components of the thresholded map (every component, small ones too)."""
    from nucleiweak_d2.modeling.meta_arch.point_detector import point_outputs

    prob = np.zeros((50, 50), dtype=np.float32)
    prob[10:15, 20:25] = 0.9
    prob[15, 25] = 0.9  # touches the first blob diagonally: one 8-connected component
    prob[40:42, 40:42] = 0.9  # too small for a point, still a blob
    prob[25:40, 0:15] = 0.9
    out = point_outputs(torch.from_numpy(prob), 0.35, 12, 200)
    expected = points_from_probability(prob, 0.35, 12, 200)
    np.testing.assert_allclose(out["pred_points"].numpy(), expected, rtol=1e-6)
    assert len(expected) == 1
    assert out["instance_map"].max().item() == 3 and out["instance_map"][15, 25] != 0
    assert out["instance_map"][15, 25] == out["instance_map"][12, 22]
    empty = point_outputs(torch.zeros(8, 8), 0.35, 12, 0)
    assert empty["pred_points"].shape == (0, 2) and empty["instance_map"].max().item() == 0


def test_merge_points_keeps_annotated_and_far_detections():
    ann = np.array([[10, 10], [50, 50]])
    det = np.array([[12, 12], [21, 10], [22, 10], [80.4, 5.6]])
    merged = merge_points(ann, det, radius=11)
    assert merged[:2].tolist() == ann.tolist()
    assert merged[2:].tolist() == [[22, 10], [80, 6]]  # (21, 10) is at distance 11: dropped


# ----------------------------------------------------------------- detection loss / targets
def test_weighted_mse_ignores_zero_weight_pixels():
    prob = torch.rand(1, 1, 4, 4, requires_grad=True)
    target = torch.rand(1, 1, 4, 4)
    weight = torch.zeros(1, 1, 4, 4)
    weight[..., :2, :] = 10.0
    weight[..., 2, :] = 1.0
    loss = weighted_mse_loss(prob, target, weight)
    want = (weight * (prob - target) ** 2).sum() / 12
    assert torch.allclose(loss, want)
    loss.backward()
    assert (prob.grad[..., 3, :] == 0).all() and (prob.grad[..., :3, :] != 0).any()


def test_det_mapper_targets_use_only_labeled_points_and_background(tmp_path):
    rec = _record(tmp_path, [(20, 20), (60, 40)], [True, False])
    mapper = NucleiWeakQu2020DetMapper(True, augmentations=[], r1=11, r2=22, sigma=2.75)
    d = mapper(rec)
    t, w = d["det_target"][0].numpy(), d["det_weight"][0].numpy()
    assert t.shape == (60, 80) and t[20, 20] == pytest.approx(1.0)
    assert w[20, 20] == 10 and w[20, 20 + 15] == 1 and w[20, 20 + 30] == 0
    assert t[40, 60] == 0 and w[40, 60] == 0  # the unlabelled nucleus stays ignored
    bg = np.zeros((60, 80), bool)
    bg[:, 70:] = True
    bg[18:23, 18:23] = True  # inside r2: must not change the Gaussian
    write_mask_png(tmp_path / "bg" / "7.png", bg)
    mapper = NucleiWeakQu2020DetMapper(True, augmentations=[], background_dir=str(tmp_path / "bg"))
    d = mapper(rec)
    t2, w2 = d["det_target"][0].numpy(), d["det_weight"][0].numpy()
    assert (w2[:, 70:] == 1).all() and (t2[:, 70:] == 0).all()
    np.testing.assert_array_equal(t2, t)
    assert w2[20, 20] == 10


def test_det_mapper_augments_image_and_targets_together(tmp_path):
    from detectron2.data import transforms as T

    from nucleiweak_d2.data.transforms import RandomRot90

    rec = _record(tmp_path, [(20, 15)], [True])
    augs = [
        T.RandomFlip(1.0, horizontal=True, vertical=False),
        RandomRot90(),
        T.RandomCrop("absolute", (48, 48)),
    ]
    mapper = NucleiWeakQu2020DetMapper(True, augmentations=augs)
    checked = 0
    for seed in range(5):
        np.random.seed(seed)
        d = mapper(rec)
        t = d["det_target"][0].numpy()
        if t.max() < 1:
            continue  # the point was cropped away
        y, x = np.unravel_index(t.argmax(), t.shape)
        assert tuple(d["image"][:, y, x].tolist()) == (90, 40, 140)
        checked += 1
    assert checked >= 2  # not every crop lost the point: the check above did run


def test_seg_mapper_points_file_and_cache(tmp_path):
    rec = _record(tmp_path, [(20, 20), (60, 40)], [True, False])
    pf = tmp_path / "points.json"
    pf.write_text(json.dumps({"7": [[20, 20], [60, 40]]}))
    mapper = NucleiWeakQu2020SegMapper(
        True, augmentations=[], cache_dir=str(tmp_path / "cache"), points_file=str(pf)
    )
    d = mapper(rec)
    sem = d["sem_seg"]
    assert sem.shape == (2, 60, 80) and sem.dtype == torch.int64
    assert sem[0, 40, 60] == 1 and sem[0, 20, 20] == 1  # both points are nuclei in Voronoi
    assert set(np.unique(sem.numpy())) <= {0, 1, 2}
    assert (tmp_path / "cache" / "7.npz").is_file()
    only_labeled = NucleiWeakQu2020SegMapper(True, augmentations=[])(rec)["sem_seg"]
    assert only_labeled[0, 40, 60] != 1
    test_out = NucleiWeakQu2020SegMapper(False, augmentations=[])(rec)
    assert "sem_seg" not in test_out and test_out["image"].shape == (3, 60, 80)


def test_seg_mapper_moves_the_full_image_labels_with_the_image(tmp_path):
    from detectron2.data import transforms as T

    from nucleiweak_d2.data.mapper import CachedTargetsMapper
    from nucleiweak_d2.data.transforms import Rot90Transform

    rec = _record(tmp_path, [(20, 20), (60, 40)], [True, True])
    moves = [T.HFlipTransform(80), Rot90Transform(60, 80, 1), T.CropTransform(5, 8, 40, 50)]
    mapper = NucleiWeakQu2020SegMapper(True, augmentations=moves)
    assert isinstance(mapper, CachedTargetsMapper)
    sem = mapper(rec)["sem_seg"].numpy()
    full = mapper.cached_targets(rec, None)  # computed on the whole image by the call above
    want = T.TransformList(moves)
    for i, name in enumerate(("voronoi", "cluster")):
        np.testing.assert_array_equal(sem[i], want.apply_segmentation(full[name]))
    assert sem.shape == (2, 50, 40) and full["voronoi"].shape == (60, 80)


# ----------------------------------------------------------------- meta-architectures
def test_point_detector_loss_gradients_and_inference():
    from detectron2.modeling import build_model

    cfg = setup_cfg(
        "configs/Base-Nuclei-UNet.yaml",
        TINY
        + [
            "MODEL.META_ARCHITECTURE",
            "NucleiWeakUNetPointDetector",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "1",
        ],
    )
    model = build_model(cfg)
    img = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    target = torch.zeros(1, 64, 64)
    weight = torch.zeros(1, 64, 64)
    weight[..., :32] = 1.0
    losses = model([{"image": img, "det_target": target, "det_weight": weight}])
    assert set(losses) == {"loss_det"} and torch.isfinite(losses["loss_det"])
    losses["loss_det"].backward()
    assert model.backbone.stem.conv1.weight.grad.abs().sum() > 0
    model.eval()
    out = model([{"image": img, "height": 64, "width": 64}])[0]
    assert out["prob"].shape == (64, 64) and out["pred_points"].shape[1] == 2
    assert out["instance_map"].shape == (64, 64)


class _FixedDetector(torch.nn.Module):
    """A detector whose probability map is given (the ensemble reads only these attributes)."""

    def __init__(self, prob, threshold):
        super().__init__()
        self.prob, self.threshold, self.min_area, self.max_area = prob, threshold, 4, 0
        self.register_buffer("anchor", torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    def probabilities(self, batched_inputs):
        return [self.prob.clone() for _ in batched_inputs]


def test_detector_ensemble_detects_on_the_mean_probability_map():
    left, right = torch.zeros(20, 30), torch.zeros(20, 30)
    left[8:12, 3:7] = 0.8  # a 4x4 blob centred at (4.5, 9.5) seen by the first detector only
    right[8:12, 20:24] = 0.6  # another at (21.5, 9.5), second detector only
    inputs = [{"image": torch.zeros(3, 20, 30, dtype=torch.uint8)}]
    ens = NucleiWeakPointDetectorEnsemble(
        [_FixedDetector(left, 0.35), _FixedDetector(right, 0.9)]
    ).eval()
    assert (ens.threshold, ens.min_area, ens.max_area) == (0.35, 4, 0)  # the first member's
    out = ens(inputs)[0]
    assert torch.equal(out["prob"], (left + right) / 2)
    # mean 0.4 and 0.3: only the first blob passes 0.35 (a max would keep both)
    assert out["pred_points"].tolist() == [[4.5, 9.5]]
    assert out["instance_map"].max() == 1
    ens.threshold = 0.25
    assert ens(inputs)[0]["pred_points"].tolist() == [[4.5, 9.5], [21.5, 9.5]]
    with pytest.raises(RuntimeError, match="only infers"):
        ens.train()(inputs)
    with pytest.raises(ValueError, match="at least one member"):
        NucleiWeakPointDetectorEnsemble([])


def test_segmentor_crf_loss_and_instances():
    from detectron2.modeling import build_model

    cfg = setup_cfg("configs/Base-Nuclei-UNet.yaml", TINY)
    assert build_model(cfg).crf_weight == 0.0  # off unless a pipeline stage turns it on
    model = NucleiWeakUNetSegmentor(cfg, crf_weight=cfg.NUCLEIWEAK.LOSSES.CRF.WEIGHT)
    assert model.crf_weight == pytest.approx(0.005)
    img = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    sem = torch.randint(0, 3, (2, 64, 64))
    losses = model([{"image": img, "sem_seg": sem}, {"image": img, "sem_seg": sem}])
    assert set(losses) == {"loss_sem_seg_t0", "loss_sem_seg_t1", "loss_crf"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss_crf"].backward()
    assert model.sem_seg_head.predictor.weight.grad.abs().sum() > 0
    model.eval()
    out = model([{"image": img, "height": 32, "width": 32}])[0]
    assert out["sem_seg"].shape == (2, 32, 32) and out["instance_map"].shape == (32, 32)
    inst = out["instances"]
    assert len(inst) == int(out["instance_map"].max())
    assert tuple(inst.pred_masks.shape) == (len(inst), 32, 32)
    # a head that says "nucleus" everywhere: one instance covering the image
    with torch.no_grad():
        model.sem_seg_head.predictor.weight.zero_()
        model.sem_seg_head.predictor.bias.copy_(torch.tensor([0.0, 3.0]))
    out = model([{"image": img, "height": 32, "width": 32}])[0]
    assert out["instance_map"].unique().tolist() == [1]
    inst = out["instances"]
    assert len(inst) == 1 and inst.pred_masks.all()
    assert inst.scores[0].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item(), rel=1e-5)


def test_segmentor_feeds_crf_image01_and_masks_padding(monkeypatch):
    seen = {}

    def fake(prob, image, mask=None, **kw):
        seen.update(prob=prob, image=image, mask=mask, **kw)
        return prob.mean()

    monkeypatch.setattr(crf, "dense_crf_loss", fake)
    cfg = setup_cfg("configs/Base-Nuclei-UNet.yaml", TINY)
    model = NucleiWeakUNetSegmentor(cfg, crf_weight=0.005)
    a = torch.full((3, 64, 64), 255, dtype=torch.uint8)
    b = torch.full((3, 40, 50), 51, dtype=torch.uint8)
    sem = [torch.zeros(2, 64, 64, dtype=torch.long), torch.zeros(2, 40, 50, dtype=torch.long)]
    model([{"image": a, "sem_seg": sem[0]}, {"image": b, "sem_seg": sem[1]}])
    assert seen["image"].shape == (2, 3, 64, 64) and seen["prob"].shape == (2, 64, 64)
    assert seen["image"].max() == pytest.approx(1.0) and seen["image"][
        1, :, 0, 0
    ].tolist() == pytest.approx([0.2, 0.2, 0.2])
    assert (
        seen["mask"][0].all() and seen["mask"][1, :40, :50].all() and not seen["mask"][1, 40:].any()
    )
    assert seen["sigma_xy"] == 9.0 and seen["sigma_rgb"] == pytest.approx(0.1)


def test_seg_mapper_takes_the_label_settings_of_the_config(tmp_path):
    rec = _record(tmp_path, [(20, 20), (60, 40)], [True, True])
    cfg = setup_cfg(
        None,
        [
            "NUCLEIWEAK.QU2020.LABEL.KIND", "adaptive",
            "NUCLEIWEAK.QU2020.LABEL.ERODE_RADIUS", 3,
            "NUCLEIWEAK.QU2020.LABEL.D_MAX", 15.0,
        ],
    )  # fmt: skip
    mapper = NucleiWeakQu2020SegMapper(cfg, True)
    assert (mapper.label_kind, mapper.erode_radius, mapper.d_max) == ("adaptive", 3, 15.0)
    small = NucleiWeakQu2020SegMapper(True, augmentations=[], erode_radius=9)
    big = NucleiWeakQu2020SegMapper(True, augmentations=[], erode_radius=3)
    n_small = (small(rec)["sem_seg"][1] == 1).sum()
    n_big = (big(rec)["sem_seg"][1] == 1).sum()
    assert n_big > n_small  # less erosion, larger nuclei
    with pytest.raises(ValueError, match="LABEL.KIND must be one of kmeans, adaptive"):
        NucleiWeakQu2020SegMapper(True, augmentations=[], label_kind="otsu")
    with pytest.raises(ValueError, match="ERODE_RADIUS >= 0"):
        NucleiWeakQu2020SegMapper(True, augmentations=[], erode_radius=-1)
