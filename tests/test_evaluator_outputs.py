"""Model outputs -> instance maps, and ground truth from dataset records."""

import numpy as np
import pytest

from nucleiweak_d2.evaluation.ground_truth import gt_label_map, gt_points, record_name
from nucleiweak_d2.evaluation.outputs import label_components, output_instance_map, paint_masks


def test_paint_masks_highest_score_wins_and_thresholds_floats():
    masks = np.zeros((3, 4, 4), np.float32)
    masks[0, :2, :2] = 0.9
    masks[1, :3, :3] = 0.5  # >= 0.5 counts as inside (Detectron2's paste threshold)
    masks[2, 3, 3] = 0.49  # below the threshold: empty
    label = paint_masks(masks, scores=[0.8, 0.3, 0.99])
    expected = np.zeros((4, 4), np.int32)
    expected[:3, :3] = 2
    expected[:2, :2] = 1
    assert np.array_equal(label, expected)
    # Reversed scores: mask 2 (index 1) now covers mask 1.
    assert np.array_equal(paint_masks(masks, scores=[0.3, 0.8, 0.1]), (masks[1] >= 0.5) * 2)
    # No scores: the later mask wins.
    assert paint_masks(masks[:2] > 0.4)[0, 0] == 2
    with pytest.raises(ValueError, match="2 scores for 3"):
        paint_masks(masks, scores=[1, 2])


def _overlapping_instances():
    """Three masks: 0 (score 0.9) covers rows 0-3; 1 (0.3) overlaps it on 3 of its 4 rows;
    2 (0.02, a low-score false positive) lies apart."""
    masks = np.zeros((3, 8, 6), bool)
    masks[0, 0:4, :] = True
    masks[1, 1:5, :] = True
    masks[2, 6:8, 0:2] = True
    return masks, np.array([0.9, 0.3, 0.02])


def test_paint_masks_score_threshold_drops_low_scores():
    masks, scores = _overlapping_instances()
    full = paint_masks(masks, scores)
    assert set(np.unique(full)) == {0, 1, 2, 3}  # default: every mask, as before
    assert np.array_equal(paint_masks(masks, scores, score_thresh=0.0), full)
    label = paint_masks(masks, scores, score_thresh=0.05)
    assert set(np.unique(label)) == {0, 1, 2} and (label[6:, :2] == 0).all()
    assert set(np.unique(paint_masks(masks, scores, score_thresh=0.3))) == {0, 1, 2}  # >= keeps
    assert set(np.unique(paint_masks(masks, scores, score_thresh=0.5))) == {0, 1}
    with pytest.raises(ValueError, match="needs scores"):
        paint_masks(masks, score_thresh=0.5)


def test_paint_masks_overlap_rules():
    masks, scores = _overlapping_instances()
    score_rule = paint_masks(masks, scores)
    assert (score_rule[4] == 2).all() and (score_rule[0:4] == 1).all()  # fragment of mask 1 left
    nms = paint_masks(masks, scores, overlap="mask_nms", overlap_thresh=0.5)
    assert 2 not in nms and (nms[0:4] == 1).all() and (nms[4] == 0).all()  # 3/4 covered: dropped
    assert np.array_equal(
        paint_masks(masks, scores, overlap="mask_nms", overlap_thresh=0.75), score_rule
    )  # 3/4 is not more than 0.75: kept with its free row
    assert np.array_equal(
        paint_masks(masks, scores, overlap="mask_nms", overlap_thresh=1.0), score_rule
    )
    # ties and no scores rank the later mask higher under both rules
    tie = np.array([0.5, 0.5, 0.5])
    assert np.array_equal(
        paint_masks(masks, tie, overlap="mask_nms", overlap_thresh=1.0), paint_masks(masks, tie)
    )
    assert np.array_equal(
        paint_masks(masks, overlap="mask_nms", overlap_thresh=1.0), paint_masks(masks)
    )
    with pytest.raises(ValueError, match="overlap must be"):
        paint_masks(masks, scores, overlap="largest")
    with pytest.raises(ValueError, match="overlap_thresh"):
        paint_masks(masks, scores, overlap="mask_nms", overlap_thresh=1.5)


def test_instances_output_options_and_config_defaults():
    torch = pytest.importorskip("torch")
    pytest.importorskip("detectron2")
    from detectron2.config import CfgNode as CN
    from detectron2.config import get_cfg
    from detectron2.structures import Instances

    from nucleiweak_d2.evaluation.config import add_evaluation_config, instance_map_options

    masks, scores = _overlapping_instances()
    inst = Instances((8, 6))
    inst.pred_masks = torch.from_numpy(masks)
    inst.scores = torch.as_tensor(scores, dtype=torch.float32)
    out = {"instances": inst}
    cfg = get_cfg()
    cfg.NUCLEIWEAK = CN()
    add_evaluation_config(cfg)
    defaults = instance_map_options(cfg)
    assert defaults == {"score_thresh": 0.0, "overlap": "score", "overlap_thresh": 0.5}
    assert np.array_equal(output_instance_map(out, **defaults), output_instance_map(out))
    assert np.array_equal(output_instance_map(out), paint_masks(masks, scores))  # unchanged
    cfg.NUCLEIWEAK.EVAL.INSTANCE_SCORE_THRESH = 0.5
    cfg.NUCLEIWEAK.EVAL.INSTANCE_OVERLAP = "mask_nms"
    label = output_instance_map(out, **instance_map_options(cfg))
    assert set(np.unique(label)) == {0, 1}
    # the options apply to "instances" only; an instance_map output is taken as it is
    given = np.arange(48, dtype=np.int64).reshape(8, 6)
    assert np.array_equal(output_instance_map({"instance_map": given}, score_thresh=0.9), given)


def test_label_components_connectivity():
    fg = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], bool)
    assert label_components(fg, connectivity=2).max() == 1
    assert label_components(fg, connectivity=1).max() == 2
    with pytest.raises(ValueError, match="connectivity"):
        label_components(fg, connectivity=3)


def test_sem_seg_outputs_foreground_classes_and_single_channel():
    scores = np.zeros((3, 3, 5), np.float32)
    scores[0] = 1
    scores[1, :, 0] = 2  # class 1 in column 0
    scores[2, :, 3] = 2  # class 2 in column 3
    assert output_instance_map({"sem_seg": scores}).max() == 1
    assert output_instance_map({"sem_seg": scores}, foreground_classes=(1, 2)).max() == 2
    prob = np.zeros((1, 3, 5), np.float32)
    prob[0, 1, 1:3] = 0.7
    assert np.array_equal(output_instance_map({"sem_seg": prob}) > 0, prob[0] > 0.5)
    with pytest.raises(ValueError, match="negative"):
        output_instance_map({"instance_map": -np.ones((2, 2), np.int64)})


def test_ground_truth_from_rle_and_polygons_first_annotation_wins():
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_util

    m = np.zeros((6, 6), np.uint8, order="F")
    m[1:4, 1:4] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    polygon = [[0.0, 0.0, 6.0, 0.0, 6.0, 2.0, 0.0, 2.0]]  # rows 0-1 of the image
    record = {
        "file_name": "/x/img7.png",
        "height": 6,
        "width": 6,
        "annotations": [{"segmentation": rle}, {"segmentation": polygon}],
    }
    label = gt_label_map(record)
    assert (label == 1).sum() == 9  # the RLE nucleus keeps the overlap
    assert set(np.unique(label[0])) == {2}
    assert record_name(record) == "img7"
    assert gt_points(label).tolist() == [[2.0, 2.0], [2.0, 0.0]]
    bad = {
        "file_name": "/x/img8.png",
        "height": 5,
        "width": 6,
        "annotations": [{"segmentation": rle}],
    }
    with pytest.raises(ValueError, match="img8.png.*RLE of size"):
        gt_label_map(bad)
    with pytest.raises(ValueError, match="img9.png.*no ground truth"):
        gt_label_map({"file_name": "img9.png"})


def test_ground_truth_empty_annotations_and_label_file_size(tmp_path):
    from nucleiweak_d2.data.io import write_label

    assert (
        gt_label_map({"file_name": "e.png", "height": 3, "width": 4, "annotations": []}).tolist()
        == [[0] * 4] * 3
    )
    write_label(tmp_path / "l.png", np.ones((3, 4), np.int32))
    with pytest.raises(ValueError, match="l.png is 3x4 but the record says 4x4"):
        gt_label_map({"label_file_name": str(tmp_path / "l.png"), "height": 4, "width": 4})
