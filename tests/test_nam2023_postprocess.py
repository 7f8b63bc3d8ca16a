"""PROnet inference on toy maps: heatmap peaks, then pixels to centres by their offsets."""

import numpy as np
import pytest

from nucleiweak_d2.methods.nam2023.postprocess import heatmap_peaks, instances_from_centres
from nucleiweak_d2.pseudo_labels import center_heatmap


def test_heatmap_peaks_threshold_and_plateau():
    heat = center_heatmap([[5, 6], [20, 8]], (16, 30), radius=4) * np.float32(0.9)
    heat[2:4, 25:27] = 0.5  # a 2x2 plateau -> one centre at its middle
    heat[12, 3] = 0.15  # below the threshold
    peaks = heatmap_peaks(heat, threshold=0.2)
    np.testing.assert_allclose(peaks, [[25.5, 2.5], [5, 6], [20, 8]])
    assert peaks.flags.c_contiguous  # the model wraps it in a tensor
    assert len(heatmap_peaks(heat, threshold=0.95)) == 0


def test_touching_nuclei_separated_by_offsets_and_a_far_blob_split_off():
    shape = (30, 50)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    centres = np.array([[15.0, 15.0], [24.0, 15.0]])
    gt = np.zeros(shape, dtype=np.int32)
    gt[(xx - 15) ** 2 + (yy - 15) ** 2 <= 30] = 1
    gt[((xx - 24) ** 2 + (yy - 15) ** 2 <= 30) & (gt == 0)] = 2  # touching the first
    gt[(xx - 42) ** 2 + (yy - 15) ** 2 <= 9] = 3  # a blob without a peak
    fg = gt > 0
    offsets = np.zeros((2,) + shape)
    for k in (1, 2):
        ys, xs = np.nonzero(gt == k)
        offsets[0, ys, xs] = centres[k - 1, 0] - xs
        offsets[1, ys, xs] = centres[k - 1, 1] - ys
    heat = center_heatmap(np.round(centres).astype(int), shape, radius=4)
    inst = instances_from_centres(fg, offsets, heatmap_peaks(heat, 0.2))
    assert inst.max() == 3
    for k in (1, 2, 3):  # each object is exactly one instance
        ids = np.unique(inst[gt == k])
        assert len(ids) == 1 and (inst == ids[0]).sum() == (gt == k).sum()
    # the blob is a piece of its own; min_area drops it
    assert instances_from_centres(fg, offsets, centres, min_area=40).max() == 2
    # no centre at all: connected components of the foreground
    fallback = instances_from_centres(fg, offsets, np.zeros((0, 2)))
    assert fallback.max() == 2 and fallback.dtype == np.int32


def test_without_offsets_touching_nuclei_split_by_distance_only():
    fg = np.ones((5, 10), dtype=bool)
    inst = instances_from_centres(fg, np.zeros((2, 5, 10)), np.array([[1.0, 2.0], [8.0, 2.0]]))
    assert (inst[:, :5] == 1).all() and (inst[:, 5:] == 2).all()
    with pytest.raises(ValueError):
        heatmap_peaks(np.zeros((2, 2, 2)))
