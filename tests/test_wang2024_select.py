"""DoNuSeg post-processing chosen on val: the threshold grid on a hand-made case, its input
checks, and the claim it rests on (FCOS boxes above a higher score threshold are the boxes of a
lower one, filtered)."""

import numpy as np
import pytest

from nucleiweak_d2.methods.wang2024.calibration import select_postprocess


def _case():
    """Nucleus A (p 0.8, box score 0.9), nucleus B (p 0.3, score 0.25), a false blob (p 0.35,
    score 0.15)."""
    gt = np.zeros((20, 20), np.int32)
    gt[2:6, 2:6], gt[10:14, 10:14] = 1, 2
    prob = np.zeros((20, 20))
    prob[2:6, 2:6], prob[10:14, 10:14], prob[15:18, 2:5] = 0.8, 0.3, 0.35
    boxes = np.array([[2, 2, 6, 6], [10, 10, 14, 14], [2, 15, 5, 18]], float)
    return prob, (boxes, np.array([0.9, 0.25, 0.15])), gt


def test_the_grid_scores_every_pair_and_picks_the_best():
    prob, det, gt = _case()
    best, scores = select_postprocess([prob], [det], [gt], [0.5, 0.2], [0.1, 0.2])
    # 0.5: A only (B's 16 px missed); 0.2 at 0.1: A, B and the 9-px blob; at 0.2: A and B
    assert scores == pytest.approx(
        {"0.5/0.1": 0.5, "0.5/0.2": 0.5, "0.2/0.1": 32 / 41, "0.2/0.2": 1.0}
    )
    assert best == (0.2, 0.2)


def test_ties_go_to_the_first_pair_and_images_are_averaged():
    prob, det, gt = _case()
    best, scores = select_postprocess([prob, prob], [det, det], [gt, gt], [0.5, 0.6], [0.2, 0.1])
    assert best == (0.5, 0.2) and set(scores.values()) == {0.5}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(probs=[]), "at least one image"),
        (lambda a: a.update(gts=[np.zeros((5, 5), np.int32)]), "differ in size"),
        (lambda a: a.update(segs=[]), "segmentation thresholds"),
        (lambda a: a.update(segs=[1.0]), "segmentation thresholds"),
        (lambda a: a.update(scores=[]), "score thresholds"),
        (lambda a: a.update(dets=[(np.zeros((2, 4)), np.zeros(3))]), "boxes must be"),
    ],
)
def test_bad_input_is_refused(change, message):
    prob, det, gt = _case()
    args = {"probs": [prob], "dets": [det], "gts": [gt], "segs": [0.5], "scores": [0.2]}
    change(args)
    with pytest.raises(ValueError, match=message):
        select_postprocess(args["probs"], args["dets"], args["gts"], args["segs"], args["scores"])


def test_higher_score_threshold_gives_the_filtered_detections():
    torch = pytest.importorskip("torch")
    pytest.importorskip("detectron2")
    from detectron2.modeling import build_model

    import nucleiweak_d2.methods.wang2024  # noqa: F401  (registers the method)
    from nucleiweak_d2.config import setup_cfg

    torch.manual_seed(0)
    cfg = setup_cfg(
        "configs/quick/wang2024_instant_test.yaml", ["TEST.DETECTIONS_PER_IMAGE", "3000"]
    )
    model = build_model(cfg).eval()
    image = torch.randint(
        0, 256, (3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        model.test_score_thresh = 0.0
        low = model([{"image": image}])[0]["detections"]
        cut = float(low.scores.median())
        model.test_score_thresh = cut
        high = model([{"image": image}])[0]["detections"]
    keep = low.scores > cut
    assert 0 < len(high) < len(low)
    torch.testing.assert_close(high.scores, low.scores[keep])
    torch.testing.assert_close(high.pred_boxes.tensor, low.pred_boxes.tensor[keep])
