"""The foreground threshold chosen on val, stored in the segmentor's weights."""

import numpy as np
import pytest
import torch

from nucleiweak_d2.engine.calibration import calibrate_fg_threshold, select_threshold
from nucleiweak_d2.modeling.meta_arch.postprocess import instances_from_foreground


def _label(fg):
    return instances_from_foreground(fg, min_area=0, fill_holes=False)


def _disc_case():
    """Two nuclei of radius 6; the network gives them 0.35 in the core and 0.2 around."""
    yy, xx = np.mgrid[:40, :40]
    gt = np.zeros((40, 40), np.int32)
    prob = np.full((40, 40), 0.05, np.float32)
    for i, (cy, cx) in enumerate([(10, 10), (28, 28)], start=1):
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        gt[r2 <= 36] = i
        prob[r2 <= 36] = 0.35
    return prob, gt


def test_select_threshold_picks_the_best_aji_on_a_hand_made_case():
    prob, gt = _disc_case()
    best, scores = select_threshold([prob], [gt], _label, thresholds=(0.1, 0.3, 0.5))
    # 0.1 and 0.3 give the two discs exactly (AJI 1); 0.5 gives nothing (AJI 0)
    assert scores == {0.1: 1.0, 0.3: 1.0, 0.5: 0.0}
    assert best == 0.3  # tie broken towards 0.5


def test_select_threshold_refuses_bad_input():
    prob, gt = _disc_case()
    with pytest.raises(ValueError, match="one ground truth per"):
        select_threshold([prob], [], _label)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        select_threshold([prob], [gt], _label, thresholds=(0.0, 0.5))
    with pytest.raises(ValueError, match="differ in size"):
        select_threshold([prob], [gt[:10]], _label)


class _Stub(torch.nn.Module):
    min_area, fill_holes, split_touching, split_min_distance = 0, False, False, 5

    def __init__(self):
        super().__init__()
        self.register_buffer("fg_threshold", torch.tensor(0.5))
        self.register_buffer("split_distance", torch.tensor(-1.0))


def test_calibrate_sets_the_buffer(monkeypatch):
    import nucleiweak_d2.engine.calibration as cal

    prob, gt = _disc_case()
    monkeypatch.setattr(cal, "gt_label_map", lambda record: gt)
    model = _Stub()
    info = calibrate_fg_threshold(
        model, [{"image_id": 1}], lambda r: {"prob": torch.from_numpy(prob)}, (0.3, 0.5), (0, 6)
    )
    # separate discs: splitting changes nothing, so the tie goes to no split
    assert info["fg_threshold"] == 0.3 and info["split_distance"] == 0 and info["images"] == 1
    assert info["val_aji"] == {"0.3/0": 1.0, "0.5/0": 0.0, "0.3/6": 1.0, "0.5/6": 0.0}
    assert float(model.fg_threshold) == pytest.approx(0.3)
    assert float(model.split_distance) == 0.0


def test_calibrate_on_dataset_reads_the_records_and_the_config_splits(monkeypatch):
    from detectron2.data import DatasetCatalog

    import nucleiweak_d2.engine.calibration as cal
    from nucleiweak_d2.config import setup_cfg

    prob, gt = _disc_case()
    monkeypatch.setattr(cal, "gt_label_map", lambda record: gt)
    name = "calibration_on_dataset_case"
    DatasetCatalog.register(name, lambda: [{"image_id": 7}])
    try:
        cfg = setup_cfg(opts=["NUCLEIWEAK.UNET.CALIBRATION_SPLITS", "[0, 6]"])
        model = _Stub()
        info = cal.calibrate_on_dataset(model, cfg, name, {"7": torch.from_numpy(prob)})
    finally:
        DatasetCatalog.remove(name)
    assert info["images"] == 1 and info["fg_threshold"] == 0.3 and info["split_distance"] == 0
    assert {k.split("/")[1] for k in info["val_aji"]} == {"0", "6"}
    assert float(model.fg_threshold) == pytest.approx(0.3)


def test_calibrate_chooses_a_split_when_nuclei_touch(monkeypatch):
    import nucleiweak_d2.engine.calibration as cal

    yy, xx = np.mgrid[:40, :60]
    gt = np.zeros((40, 60), np.int32)
    for i, cx in enumerate((22, 37), start=1):  # two discs of radius 8 that touch
        gt[((yy - 20) ** 2 + (xx - cx) ** 2 <= 64) & (gt == 0)] = i
    prob = np.where(gt > 0, 0.9, 0.05).astype(np.float32)
    monkeypatch.setattr(cal, "gt_label_map", lambda record: gt)
    model = _Stub()
    info = calibrate_fg_threshold(
        model, [{"image_id": 1}], lambda r: {"prob": torch.from_numpy(prob)}, (0.5,), (0, 6)
    )
    assert info["val_aji"]["0.5/6"] > 0.9 > info["val_aji"]["0.5/0"]
    assert info["split_distance"] == 6 and float(model.split_distance) == 6.0
    with pytest.raises(ValueError, match="split distances"):
        calibrate_fg_threshold(model, [{"image_id": 1}], lambda r: {"prob": prob}, (0.5,), (-1,))


def test_segmentor_threshold_travels_with_the_weights(tmp_path):
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine.predictor import load_trained_weights
    from nucleiweak_d2.engine.trainer import Trainer

    cfg = setup_cfg(
        "configs/quick/qu2020_instant_test.yaml",
        ["MODEL.META_ARCHITECTURE", "NucleiWeakUNetSegmentor", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2],
    )
    model = Trainer.build_model(cfg)
    assert model.threshold == 0.5
    model.fg_threshold.fill_(0.3)
    path = tmp_path / "m.pth"
    torch.save({"model": model.state_dict()}, path)
    fresh = Trainer.build_model(cfg)
    load_trained_weights(fresh, str(path))
    assert fresh.threshold == pytest.approx(0.3)
    # a checkpoint written before the buffer existed still loads, with 0.5
    old = {k: v for k, v in model.state_dict().items() if k != "fg_threshold"}
    torch.save({"model": old}, path)
    fresh = Trainer.build_model(cfg)
    load_trained_weights(fresh, str(path))
    assert fresh.threshold == 0.5
    # the split distance travels too; -1 (never calibrated) keeps the configured split
    assert fresh.split == (model.split_touching, model.split_min_distance)
    model.split_distance.fill_(8.0)
    torch.save({"model": model.state_dict()}, path)
    load_trained_weights(fresh, str(path))
    assert fresh.split == (True, 8)
    # the config forces a threshold over the calibrated one
    cfg.defrost()
    cfg.NUCLEIWEAK.UNET.FG_THRESHOLD = 0.4
    forced = Trainer.build_model(cfg)
    forced.fg_threshold.fill_(0.3)
    assert forced.threshold == pytest.approx(0.4)


def test_segmentor_inference_uses_the_threshold():
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine.trainer import Trainer

    cfg = setup_cfg(
        "configs/quick/qu2020_instant_test.yaml",
        ["MODEL.META_ARCHITECTURE", "NucleiWeakUNetSegmentor", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2],
    )
    model = Trainer.build_model(cfg).eval()
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    out = model([{"image": image, "height": 64, "width": 64}])[0]
    prob = out["prob"]
    for t in (0.05, 0.5, 0.95):
        model.fg_threshold.fill_(t)
        out = model([{"image": image, "height": 64, "width": 64}])[0]
        fg = out["instance_map"].numpy() > 0
        expected = (
            instances_from_foreground((prob > t).numpy(), model.min_area, model.fill_holes) > 0
        )
        assert (fg == expected).all()


def _under_confident_segmentor(tmp_path, calibrate_eval):
    """A tiny segmentor whose probability is 0.3 inside nuclei (dark pixels) and 0.05 elsewhere,
    registered val data, and its config."""
    pytest.importorskip("detectron2")
    from conftest import TINY_UNET_OPTS, make_tiny_coco

    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine.trainer import Trainer

    prefix = f"calev{int(calibrate_eval)}"
    make_tiny_coco(tmp_path, prefix, n_images=4, size=(64, 64))
    cfg = setup_cfg(
        "configs/quick/qu2020_instant_test.yaml",
        TINY_UNET_OPTS
        + ["MODEL.META_ARCHITECTURE", "NucleiWeakUNetSegmentor"]
        + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", "NUCLEIWEAK.COCO_EVAL", "False"]
        + ["DATASETS.TEST", f"('{prefix}_val',)", "OUTPUT_DIR", str(tmp_path / "out")]
        + ["NUCLEIWEAK.UNET.CALIBRATE_EVAL", str(calibrate_eval)]
        + ["NUCLEIWEAK.UNET.CALIBRATION_SPLITS", "[0]"],
    )
    model = Trainer.build_model(cfg)

    def logits(images):  # fixed output: class-1 probability 0.3 on dark pixels, else 0.05
        dark = (images.tensor.mean(dim=1, keepdim=True) < 1.0).float()
        p = 0.05 + 0.25 * dark
        return torch.cat([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)

    model.logits = logits
    return cfg, model


@pytest.mark.parametrize("calibrate_eval", [False, True])
def test_periodic_evaluation_calibrates_an_under_confident_segmentor(tmp_path, calibrate_eval):
    from nucleiweak_d2.engine.trainer import Trainer, calibrating_trainer

    cfg, model = _under_confident_segmentor(tmp_path, calibrate_eval)
    model.train()
    # the plain Trainer (tools/train_net.py --eval-only, any split) never calibrates
    assert Trainer.test(cfg, model)["nuclei"]["AJI"] == 0.0
    assert float(model.fg_threshold) == 0.5
    # a pipeline's training stage (val as DATASETS.TEST) uses the calibrating subclass
    trainer = calibrating_trainer(Trainer) if calibrate_eval else Trainer
    results = trainer.test(cfg, model)
    aji = results["nuclei"]["AJI"]
    if calibrate_eval:  # a threshold below 0.3 finds the dark nuclei
        assert float(model.fg_threshold) < 0.3 and aji > 0.2
        assert int(model.split_distance) == 0
    else:  # 0.5 finds nothing
        assert float(model.fg_threshold) == 0.5 and aji == 0.0
    assert model.training  # the training mode is restored


def _blobs_case():
    """One 40x60 image, three nuclei at (x, y) (10, 10), (30, 10), (50, 30) seen by blobs of 25,
    4 and 9 px at probability 0.5, and a false 9 px blob at (30, 30) at 0.3."""
    prob = np.zeros((40, 60), np.float32)
    prob[8:13, 8:13] = 0.5
    prob[9:11, 29:31] = 0.5
    prob[29:32, 49:52] = 0.5
    prob[29:32, 29:32] = 0.3
    return prob, np.array([[10.0, 10.0], [30.0, 10.0], [50.0, 30.0]])


def test_select_point_postprocess_picks_the_best_f1_on_a_hand_made_case():
    from nucleiweak_d2.engine.calibration import select_point_postprocess

    prob, gt = _blobs_case()
    grid = {"thresholds": (0.25, 0.4, 0.45), "min_areas": (2, 4, 8, 12)}
    best, scores = select_point_postprocess([prob], [gt], 11.0, 0, **grid)
    # 0.25 keeps the false blob (3 TP, 1 FP); 0.4 and 0.45 are exact down to 4 px, then the
    # 4 px nucleus (8) and the 9 px one (12) are lost; ties: nearest 0.35, then the larger area
    assert scores["0.25/2"] == pytest.approx(6 / 7)
    assert scores["0.4/2"] == scores["0.4/4"] == scores["0.45/4"] == 1.0
    assert scores["0.4/8"] == pytest.approx(0.8) and scores["0.4/12"] == pytest.approx(0.5)
    assert best == (0.4, 4)
    # a maximum area drops the 25 px blob whatever the pair
    best, scores = select_point_postprocess([prob], [gt], 11.0, 20, **grid)
    assert best == (0.4, 4) and max(scores.values()) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="at least one"):
        select_point_postprocess([], [], 11.0)


def test_periodic_evaluation_of_a_detector_scores_it_at_its_val_best_threshold(tmp_path):
    """Qu's DET.CALIBRATE_EVAL: a detector whose nuclei reach only 0.3 finds nothing at the
    configured 0.35; the calibrating trainer chooses a lower threshold on val first."""
    pytest.importorskip("detectron2")
    from conftest import TINY_UNET_OPTS, make_tiny_coco

    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine.trainer import (
        Trainer,
        calibrate_points_during_training,
        val_choosing_trainer,
    )

    make_tiny_coco(tmp_path, "detcal", n_images=4, size=(64, 64))
    cfg = setup_cfg(
        "configs/quick/qu2020_instant_test.yaml",
        TINY_UNET_OPTS
        + ["MODEL.META_ARCHITECTURE", "NucleiWeakUNetPointDetector"]
        + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1", "NUCLEIWEAK.COCO_EVAL", "False"]
        + ["DATASETS.TEST", "('detcal_val',)", "OUTPUT_DIR", str(tmp_path / "out")]
        + ["NUCLEIWEAK.UNET.POINT_THRESHOLD", "0.35", "NUCLEIWEAK.UNET.POINT_MIN_AREA", "2"],
    )
    model = Trainer.build_model(cfg)

    def logits(images):  # probability 0.3 on dark (nucleus) pixels, 0.05 elsewhere
        dark = (images.tensor.mean(dim=1, keepdim=True) < 1.0).float()
        p = 0.05 + 0.25 * dark
        return torch.log(p / (1 - p))

    model.logits = logits
    model.train()
    assert Trainer.test(cfg, model)["nuclei"]["det_F1"] == 0.0
    trainer = val_choosing_trainer(Trainer, calibrate_points_during_training, "Calibrating")
    f1 = trainer.test(cfg, model)["nuclei"]["det_F1"]
    assert model.threshold < 0.3 and f1 > 0.5
    assert model.training  # the training mode is restored
