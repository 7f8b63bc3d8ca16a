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
    record = {"file_name": "/x/img7.png", "height": 6, "width": 6,
              "annotations": [{"segmentation": rle}, {"segmentation": polygon}]}
    label = gt_label_map(record)
    assert (label == 1).sum() == 9  # the RLE nucleus keeps the overlap
    assert set(np.unique(label[0])) == {2}
    assert record_name(record) == "img7"
    assert gt_points(label).tolist() == [[2.0, 2.0], [2.0, 0.0]]
    bad = {"file_name": "/x/img8.png", "height": 5, "width": 6,
           "annotations": [{"segmentation": rle}]}
    with pytest.raises(ValueError, match="img8.png.*RLE of size"):
        gt_label_map(bad)
    with pytest.raises(ValueError, match="img9.png.*no ground truth"):
        gt_label_map({"file_name": "img9.png"})


def test_ground_truth_empty_annotations_and_label_file_size(tmp_path):
    from nucleiweak_d2.data.io import write_label

    assert gt_label_map({"file_name": "e.png", "height": 3, "width": 4,
                         "annotations": []}).tolist() == [[0] * 4] * 3
    write_label(tmp_path / "l.png", np.ones((3, 4), np.int32))
    with pytest.raises(ValueError, match="l.png is 3x4 but the record says 4x4"):
        gt_label_map({"label_file_name": str(tmp_path / "l.png"), "height": 4, "width": 4})
