"""k-means cluster labels (Qu) and the adaptive variant (Liu)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from nucleiweak_d2.pseudo_labels import (
    BACKGROUND,
    NUCLEUS,
    adaptive_cluster_label,
    adaptive_color_scale,
    cluster_label,
)
from nucleiweak_d2.pseudo_labels._common import disk
from nucleiweak_d2.pseudo_labels.cluster import refine_nuclei, remove_small_objects


def _disc_image(centres, radius=7, shape=(80, 80)):
    """Dark purple discs on a pink background (uint8 RGB) and their mask."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    mask = np.zeros(shape, bool)
    for x, y in centres:
        mask |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    img = np.empty(shape + (3,), np.uint8)
    img[:] = (235, 190, 220)
    img[mask] = (70, 40, 130)
    return img, mask


CENTRES = [(15, 15), (40, 20), (62, 18), (20, 55), (50, 60), (28, 20)]


@pytest.mark.parametrize("fn", [cluster_label, adaptive_cluster_label])
def test_discs_are_recovered(fn):
    img, mask = _disc_image(CENTRES)
    lab = fn(img, np.array(CENTRES))
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1, 2}
    assert np.all(mask[lab == NUCLEUS])  # nucleus pixels lie in discs
    assert not np.any(mask[lab == BACKGROUND])  # background pixels lie outside
    for x, y in CENTRES:
        assert lab[y, x] == NUCLEUS
    assert (lab == NUCLEUS).sum() > 0.5 * mask.sum()
    assert (lab == BACKGROUND).sum() > 0.3 * (~mask).sum()


def test_background_margin_around_points():
    img, _ = _disc_image(CENTRES)
    lab = cluster_label(img, np.array(CENTRES), bg_margin=10)
    yy, xx = np.mgrid[0:80, 0:80]
    for x, y in CENTRES:
        assert not np.any(lab[(xx - x) ** 2 + (yy - y) ** 2 <= 100] == BACKGROUND)


def test_deterministic_and_seeded_subsample():
    img, _ = _disc_image(CENTRES, shape=(120, 120))
    noise = np.random.default_rng(1).integers(-20, 20, img.shape)
    img = np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)
    a = cluster_label(img, np.array(CENTRES), sample_size=2000)
    np.testing.assert_array_equal(a, cluster_label(img, np.array(CENTRES), sample_size=2000))


def test_constant_image_single_point():
    img = np.full((40, 40, 3), 128, np.uint8)
    lab = cluster_label(img, np.array([[20, 20]]))
    assert lab[20, 20] == NUCLEUS
    assert np.all(lab[:, :5] != NUCLEUS)


def test_border_points():
    img, _ = _disc_image([(0, 0), (79, 40), (40, 79)])
    lab = cluster_label(img, np.array([[0, 0], [79, 40], [40, 79]]))
    assert lab[0, 0] == NUCLEUS and lab[40, 79] == NUCLEUS and lab[79, 40] == NUCLEUS


def test_no_points_and_empty_image_raise():
    img, _ = _disc_image(CENTRES)
    with pytest.raises(ValueError, match="points"):
        cluster_label(img, np.zeros((0, 2)))
    with pytest.raises(ValueError, match="image"):
        cluster_label(np.zeros((0, 0, 3), np.uint8), np.array([[0, 0]]))
    with pytest.raises(ValueError, match="image"):
        adaptive_cluster_label(img[..., 0], np.array([[0, 0]]))


def test_refine_matches_footprint_morphology():
    rng = np.random.default_rng(3)
    nuclei = ndi.binary_opening(rng.random((70, 90)) > 0.55)
    cells = (np.arange(90)[None, :] >= 45).astype(int) * np.ones((70, 1), int)
    got = refine_nuclei(nuclei, cells, 5, 7)
    want = np.zeros_like(nuclei)
    for c in (0, 1):
        m = ndi.binary_dilation(nuclei & (cells == c), structure=disk(5))
        m = ndi.binary_fill_holes(m)
        want |= ndi.binary_erosion(m, structure=disk(7), border_value=1)
    np.testing.assert_array_equal(got, want)


def test_remove_small_objects_is_4_connected():
    m = np.zeros((10, 10), bool)
    m[0, 0] = m[1, 1] = True  # diagonal: two 1-px objects
    m[5:8, 5:8] = True
    np.testing.assert_array_equal(
        remove_small_objects(m, 2), np.pad(np.ones((3, 3), bool), ((5, 2), (5, 2)))
    )


def test_adaptive_scale_exact_on_stripes():
    # Columns alternate black/white: neighbour colour distances are 0 or sqrt(3).
    img = np.zeros((30, 30, 3), np.uint8)
    img[:, 1::2] = 255
    pts = np.array([[15, 15]])
    s = adaptive_color_scale(img, pts, patch_size=10, sample_size=None)
    # each interior pixel: 80 neighbours, 36 at odd column offset (distance sqrt 3), 44 at 0
    p = 36 / 80
    np.testing.assert_allclose(s, np.sqrt(3) * np.sqrt(p * (1 - p)), rtol=1e-12)
    assert adaptive_color_scale(np.full((30, 30, 3), 9, np.uint8), pts) == 0.0


def test_adaptive_scale_sample_close_to_full():
    rng = np.random.default_rng(0)
    img = ndi.gaussian_filter(rng.integers(0, 255, (200, 200, 3)).astype(float), (2, 2, 0))
    img = np.clip(img, 0, 255).astype(np.uint8)
    pts = rng.integers(0, 200, (30, 2))
    full = adaptive_color_scale(img, pts, sample_size=None)
    assert abs(adaptive_color_scale(img, pts, sample_size=5000) - full) < 0.02 * full
