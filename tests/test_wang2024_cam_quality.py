"""benchmarks/wang2024_cam_quality.py: the pixel counts on a hand-made label, and the labels a
(random) DoNuSeg model makes for a crop, as its training step makes them."""

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "wang2024_cam_quality.py"


def _script():
    return load_script("nucleiweak_wang2024_cam_quality", SCRIPT)


def test_counts_and_summary_on_a_hand_made_label():
    tool = _script()
    gt = np.zeros((4, 5), bool)
    gt[0:2, 0:2] = True  # 4 nucleus pixels
    label = np.full((4, 5), 2, np.uint8)
    label[0, 0:3] = 1  # 3 nucleus: 2 on the nucleus, 1 off
    label[1, 0] = 0  # a nucleus pixel called background
    label[3, :] = 0
    counts = tool.label_counts(label, gt)
    assert counts.tolist() == [3, 2, 4, 1, 20]
    assert tool.summary(counts) == pytest.approx((2 / 3, 0.5, 0.25, 0.15))


def test_roc_auc_on_hand_made_scores():
    tool = _script()
    gt = np.array([True, True, False, False, False])
    assert tool.roc_auc([0.9, 0.8, 0.1, 0.2, 0.3], gt) == 1.0
    assert tool.roc_auc([0.1, 0.2, 0.9, 0.8, 0.7], gt) == 0.0
    # pairs (pos, neg): 0.5 beats 0.4 and 0.1, loses to 0.6; 0.4 ties 0.4 -> (2 + 0.5 + 1) / 6
    assert tool.roc_auc([0.5, 0.4, 0.6, 0.4, 0.1], gt) == pytest.approx(3.5 / 6)
    with pytest.raises(ValueError, match="both"):
        tool.roc_auc([0.1, 0.2], np.array([True, True]))


def test_cam_labels_of_a_model_match_a_training_step():
    torch = pytest.importorskip("torch")
    pytest.importorskip("detectron2")
    from detectron2.modeling import build_model

    import nucleiweak_d2.methods.wang2024  # noqa: F401
    from nucleiweak_d2.config import setup_cfg

    tool = _script()
    torch.manual_seed(0)
    model = build_model(setup_cfg("configs/quick/wang2024_instant_test.yaml")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out = tool.cam_labels(model, image, np.array([[10, 12], [40, 30]]))
    blocks = model.cam_blocks
    assert out["binary"].shape == (len(blocks), 128, 128) and out["alpha"].shape == (len(blocks),)
    assert out["cams"].shape == (len(blocks), 128, 128) and (out["cams"] >= 0).all()  # ReLU
    # M: nucleus within r 4 of each click (pixel centres), P is the block of the best alpha
    assert out["M"][12, 10] == 1 and out["M"][30, 40] == 1 and out["M"][127, 0] == 0
    assert (out["P"] == out["binary"][int(np.argmax(out["alpha"]))]).all()
    assert not model.training  # mode restored, no statistic or weight changed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cam_norm_window_from_the_config_changes_the_labels():
    torch = pytest.importorskip("torch")
    pytest.importorskip("detectron2")
    from detectron2.modeling import build_model

    import nucleiweak_d2.methods.wang2024  # noqa: F401
    from nucleiweak_d2.config import setup_cfg

    tool = _script()
    quick = "configs/quick/wang2024_instant_test.yaml"
    image = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    clicks = np.array([[10, 12], [60, 70]])
    outs = []
    for window in (0, 9):
        torch.manual_seed(1)  # a random model whose CAMs are not all 0
        model = build_model(setup_cfg(quick, ["NUCLEIWEAK.WANG2024.CAM.NORM_WINDOW", window]))
        assert model.cam_norm_window == window
        outs.append(tool.cam_labels(model, image, clicks))
    np.testing.assert_array_equal(outs[0]["cams"], outs[1]["cams"])  # same raw CAMs
    assert outs[0]["cams"].max() > 0
    # u / local max >= (u - min) / (max - min) for a ReLU map: every nucleus pixel of the
    # min-max scaling stays one, and the window adds some
    glob, local = outs[0]["binary"] == 1, outs[1]["binary"] == 1
    assert local[glob].all() and local.sum() > glob.sum()
    with pytest.raises(ValueError, match="NORM_WINDOW"):
        build_model(setup_cfg(quick, ["NUCLEIWEAK.WANG2024.CAM.NORM_WINDOW", 4]))
