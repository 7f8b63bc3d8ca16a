"""Pseudo-box quality against the unannotated nuclei (methods/feng2019/quality.py)."""

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from detectron2.modeling import build_model  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.methods.feng2019.quality import (  # noqa: E402
    box_iou,
    evaluate_pseudo_boxes,
    match_boxes,
    pseudo_box_quality,
    sum_quality,
)

PARTIAL = (
    Path(__file__).resolve().parents[1] / "configs" / "quick" / "feng2019_partial_instant_test.yaml"
)


def test_box_iou_and_greedy_one_to_one_matching():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]], float)
    b = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], float)
    iou = box_iou(a, b)
    assert iou[0, 0] == 1 and math.isclose(iou[1, 0], 0.9) and iou[2].sum() == 0
    # both a0 and a1 overlap b0; the higher IoU (a0) takes it, a1 stays unmatched
    assert match_boxes(a, b, 0.5).tolist() == [0, -1, -1]
    assert match_boxes(a[1:], b, 0.5).tolist() == [0, -1]
    assert match_boxes(a[1:], b, 0.95).tolist() == [-1, -1]  # below the IoU threshold
    assert match_boxes(np.zeros((0, 4)), b).tolist() == []
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 2)


def test_pseudo_box_quality_counts():
    unannotated = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]
    annotated = [[0, 40, 10, 50]]
    pseudo = [
        [0, 0, 10, 10],  # unannotated nucleus 0: tp
        [21, 0, 31, 10],  # unannotated nucleus 1 (IoU 0.82): tp
        [1, 0, 11, 10],  # duplicate on nucleus 0: false positive
        [0, 40, 10, 50],  # annotated nucleus: set aside
        [80, 80, 90, 90],  # background: false positive
    ]
    q = pseudo_box_quality(pseudo, unannotated, 0.5, gt_boxes_annotated=annotated)
    assert (
        q["num_pseudo"],
        q["num_unannotated"],
        q["num_annotated"],
        q["tp"],
        q["on_annotated"],
    ) == (5, 4, 1, 2, 1)
    assert q["precision"] == 2 / 4 and q["recall"] == 2 / 4 and q["f1"] == 0.5
    # without the annotated boxes the box on the annotated nucleus is a false positive
    q = pseudo_box_quality(torch.tensor(pseudo, dtype=torch.float32), unannotated)
    assert q["tp"] == 2 and q["on_annotated"] == 0 and q["precision"] == 2 / 5
    empty = pseudo_box_quality(np.zeros((0, 4)), unannotated)
    assert (
        empty["num_pseudo"] == 0
        and math.isnan(empty["precision"])
        and empty["recall"] == 0
        and empty["f1"] == 0
    )
    assert math.isnan(pseudo_box_quality(np.zeros((0, 4)), np.zeros((0, 4)))["f1"])
    total = sum_quality(
        [pseudo_box_quality(pseudo, unannotated, gt_boxes_annotated=annotated), empty]
    )
    assert total["tp"] == 2 and total["num_unannotated"] == 8 and total["recall"] == 2 / 8
    assert total["precision"] == 2 / 4


def test_evaluate_pseudo_boxes_on_records_in_output_coordinates():
    cfg = setup_cfg(str(PARTIAL), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    head = model.centerness_head

    def forward(feature):  # two peaks: cells (4, 4) and (10, 12); zero deltas (12x12 boxes)
        logits = torch.full((feature.shape[0], 1, *feature.shape[-2:]), -10.0)
        logits[:, 0, 4, 4], logits[:, 0, 10, 12] = 8.0, 3.0  # probabilities 0.9997 and 0.953
        return logits, torch.zeros((feature.shape[0], 4, *feature.shape[-2:]))

    head.forward = forward
    image = (torch.rand(3, 64, 64) * 255).to(torch.uint8)
    # the record's image is 128x128: the model sees it at 64x64, boxes come back scaled by 2
    record = {
        "height": 128,
        "width": 128,
        "annotations": [
            {"bbox": [24, 24, 24, 24], "point_labeled": False},  # = pseudo-box of cell (4, 4) x2
            {"bbox": [88, 72, 24, 24], "point_labeled": True},  # = pseudo-box of cell (10, 12) x2
            {"bbox": [0, 100, 20, 20], "point_labeled": False},  # missed
            {"bbox": [0, 0, 20, 20], "point_labeled": False, "iscrowd": 1},  # ignored
        ],
    }
    found = evaluate_pseudo_boxes(
        model,
        [record],
        lambda r: {"image": image, "height": 128, "width": 128},
        score_threshs=[0.5, 0.99],
    )
    assert model.training  # mode restored
    q = found[0.5]
    assert (q["num_pseudo"], q["tp"], q["on_annotated"], q["num_unannotated"]) == (2, 1, 1, 2)
    assert q["precision"] == 1.0 and q["recall"] == 0.5
    assert found[0.99]["num_pseudo"] == 1 and found[0.99]["tp"] == 1
    # on fully annotated images every nucleus is a target
    q = evaluate_pseudo_boxes(
        model,
        [record],
        lambda r: {"image": image, "height": 128, "width": 128},
        score_threshs=[0.5],
        target="all",
    )[0.5]
    assert (q["tp"], q["on_annotated"], q["num_unannotated"]) == (2, 0, 3)
    with pytest.raises(ValueError, match="target"):
        evaluate_pseudo_boxes(model, [record], None, target="labelled")
