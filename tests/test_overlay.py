"""The one instance-outline painter (nucleiweak_d2.data.overlay)."""

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from nucleiweak_d2.data.overlay import draw_outlines, outline_pixels


def _touching():
    label = np.zeros((6, 7), np.int32)
    label[1:4, 1:3] = 1
    label[1:4, 3:5] = 2  # touches 1
    label[4:6, 5:7] = 3  # at the image corner
    return label


def test_outline_pixels_hand_made():
    inner = outline_pixels(_touching())
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 1, 0, 0],
            [0, 1, 1, 1, 1, 0, 0],
            [0, 1, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 1, 1],
            [0, 0, 0, 0, 0, 1, 0],  # the image border is no boundary
        ],
        bool,
    )
    np.testing.assert_array_equal(inner, expected)
    thick = outline_pixels(_touching(), mode="thick")
    assert (thick & ~inner).sum() > 0 and not (inner & ~thick).any()
    assert thick[0, 1] and thick[1, 0] and not thick[0, 0]  # background next to an object
    assert not outline_pixels(np.zeros((3, 3), int)).any()


def test_outline_pixels_match_skimage_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(30):
        h, w = rng.integers(1, 30, size=2)
        label = rng.integers(0, 4, size=(h, w))
        label[rng.random((h, w)) < 0.3] = 0
        np.testing.assert_array_equal(
            outline_pixels(label), find_boundaries(label, mode="inner") & (label > 0)
        )
        np.testing.assert_array_equal(
            outline_pixels(label, mode="thick"), find_boundaries(label, mode="thick")
        )


def test_draw_outlines_colours_points_and_copy():
    label = _touching()
    image = np.full((6, 7, 3), 100, np.uint8)
    out = draw_outlines(
        image,
        label,
        points=[[0.4, 5.6], [3.0, 2.0], [40, 40]],
        color=(1, 2, 3),
        point_color=(9, 8, 7),
    )
    assert (image == 100).all()  # the input is not modified
    dots = np.zeros(label.shape, bool)
    dots[5, 0:2] = True  # (0.4, 5.6) -> (x 0, y 6), below the image: the part of its square inside
    dots[1:4, 2:5] = True  # (3, 2)
    assert (out[dots] == [9, 8, 7]).all()  # points over the outlines
    outline = outline_pixels(label) & ~dots
    assert outline.sum() > 0 and (out[outline] == [1, 2, 3]).all()
    assert (out[~(dots | outline_pixels(label))] == 100).all()
    thick = draw_outlines(image, label, mode="thick")
    np.testing.assert_array_equal((thick != 100).any(axis=2), outline_pixels(label, "thick"))
    assert (thick[outline_pixels(label, "thick")] == [0, 255, 0]).all()


def test_draw_outlines_errors():
    with pytest.raises(ValueError, match="instance map is"):
        draw_outlines(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="outline mode"):
        draw_outlines(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), int), mode="outer")
