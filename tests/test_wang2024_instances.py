"""DoNuSeg instances: the foreground mask split by detected boxes, on hand-made cases."""

import numpy as np
import pytest

pytest.importorskip("detectron2")

from nucleiweak_d2.methods.wang2024.instances import split_mask_by_boxes  # noqa: E402


def _two_touching_nuclei():
    """A 6 x 12 foreground bar (columns 1..10) = two touching nuclei, boxes overlapping in the
    middle: box A covers pixel columns 0..6, box B columns 4..11."""
    fg = np.zeros((8, 12), dtype=bool)
    fg[1:7, 1:11] = True
    boxes = np.array([[0.0, 0.0, 7.0, 8.0], [4.0, 0.0, 12.0, 8.0]])
    return fg, boxes


def test_nearest_centre_cuts_the_overlap_at_the_bisector():
    fg, boxes = _two_touching_nuclei()
    # centres x = 3.5 and 8.0; pixel centres 4.5 and 5.5 are nearer A, 6.5 nearer B
    inst, owners = split_mask_by_boxes(fg, boxes, np.array([0.9, 0.5]))
    expect = np.zeros_like(inst)
    expect[1:7, 1:6] = 1
    expect[1:7, 6:11] = 2
    np.testing.assert_array_equal(inst, expect)
    assert owners.tolist() == [0, 1]


def test_score_rule_gives_the_overlap_to_the_higher_score():
    fg, boxes = _two_touching_nuclei()
    inst, owners = split_mask_by_boxes(fg, boxes, np.array([0.5, 0.9]), rule="score")
    expect = np.zeros_like(inst)
    expect[1:7, 1:4] = 1  # A keeps only what B does not cover
    expect[1:7, 4:11] = 2
    np.testing.assert_array_equal(inst, expect)
    assert owners.tolist() == [0, 1]


def test_unboxed_pixels_small_pieces_and_empty_boxes():
    fg = np.zeros((10, 10), dtype=bool)
    fg[1:4, 1:4] = True  # in box 0
    fg[1, 5] = True  # in box 0 too, but a separate piece
    fg[7:10, 7:10] = True  # in no box
    boxes = np.array([[0.0, 0.0, 6.0, 5.0], [0.0, 6.0, 3.0, 9.0]])  # box 1 holds no foreground
    inst, owners = split_mask_by_boxes(fg, boxes, np.array([0.8, 0.7]))
    assert owners.tolist() == [0]
    assert inst.max() == 1 and (inst == 1).sum() == 9  # the stray pixel dropped (largest piece)
    assert inst[1, 5] == 0 and inst[8, 8] == 0
    inst, owners = split_mask_by_boxes(
        fg, boxes, np.array([0.8, 0.7]), keep_largest=False, unboxed="components"
    )
    assert owners.tolist() == [0, -1]
    assert (inst == 1).sum() == 10 and (inst == 2).sum() == 9
    inst, owners = split_mask_by_boxes(
        fg, boxes, np.array([0.8, 0.7]), unboxed="components", min_area=10
    )
    assert owners.tolist() == [] and inst.max() == 0
    inst, owners = split_mask_by_boxes(fg, np.zeros((0, 4)), np.zeros(0))
    assert inst.max() == 0 and owners.shape == (0,)
    with pytest.raises(ValueError, match="split rule"):
        split_mask_by_boxes(fg, boxes, np.ones(2), rule="area")
