"""Fully annotated crops of the "DH25crop" baseline (methods/feng2019/crops.py)."""

import math

import numpy as np
import pytest

pytest.importorskip("detectron2")

from nucleiweak_d2.methods.feng2019.crops import crop_fully_annotated, crop_seed, crop_window  # noqa: E402


def _label(h=100, w=80):
    label = np.zeros((h, w), np.int32)
    rng = np.random.default_rng(3)
    for k in range(1, 40):
        r, c = rng.integers(0, h - 6), rng.integers(0, w - 6)
        label[r : r + 6, c : c + 6] = 100 + 7 * k  # non-consecutive ids
    return label


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_window_area_aspect_and_bounds(fraction):
    rng = np.random.default_rng(0)
    corners = set()
    for _ in range(50):
        y0, x0, h, w = crop_window(1000, 600, fraction, rng)
        assert (h, w) == (round(1000 * math.sqrt(fraction)), round(600 * math.sqrt(fraction)))
        assert 0 <= y0 <= 1000 - h and 0 <= x0 <= 600 - w
        corners.add((y0, x0))
    assert abs(h * w / (1000 * 600) - fraction) < 0.01
    assert corners == {(0, 0)} if fraction == 1.0 else len(corners) > 40
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="area_fraction"):
            crop_window(10, 10, bad, rng)


def test_crop_keeps_every_nucleus_label_and_is_seeded():
    label = _label()
    image = np.stack([label % 256, label // 256, np.zeros_like(label)], axis=-1).astype(np.uint8)
    img_c, lab_c, (y0, x0, h, w) = crop_fully_annotated(image, label, 0.25, crop_seed(0, "img1"))
    assert lab_c.shape == img_c.shape[:2] == (h, w) == (50, 40) and lab_c.dtype == label.dtype
    original = label[y0 : y0 + h, x0 : x0 + w]
    assert np.array_equal(img_c, image[y0 : y0 + h, x0 : x0 + w])
    # same partition of the window, ids renumbered 1..K in order of the original ids
    assert np.array_equal(lab_c > 0, original > 0)
    ids = np.unique(original[original > 0])
    assert np.array_equal(np.unique(lab_c[lab_c > 0]), np.arange(1, len(ids) + 1))
    for new, old in enumerate(ids, start=1):
        assert np.array_equal(lab_c == new, original == old)
    assert len(ids) > 0
    # the window depends only on (seed, name)
    again = crop_fully_annotated(image, label, 0.25, crop_seed(0, "img1"))[2]
    assert again == (y0, x0, h, w)
    others = {
        crop_fully_annotated(image, label, 0.25, crop_seed(s, "img1"))[2] for s in range(1, 8)
    }
    others |= {
        crop_fully_annotated(image, label, 0.25, crop_seed(0, f"img{k}"))[2] for k in range(2, 8)
    }
    assert len(others) > 1
    with pytest.raises(ValueError, match="share"):
        crop_fully_annotated(image[:10], label, 0.25, 0)
    with pytest.raises(ValueError, match="integer"):
        crop_fully_annotated(image, label.astype(float), 0.25, 0)


def test_crop_without_background_renumbers_from_one():
    label = np.full((4, 4), 9, np.int32)
    label[:, 2:] = 5
    _, lab_c, _ = crop_fully_annotated(np.zeros((4, 4, 3), np.uint8), label, 1.0, 0)
    assert np.array_equal(lab_c, np.where(label == 5, 1, 2))
