"""Stain tools: Reinhard / Macenko normalisation, HED jitter and the mapper-facing callables."""

import numpy as np
import pytest

from nucleiweak_d2.data.stain import (
    MACENKO_BETA,
    StainJitter,
    StainNormalizer,
    dataset_pixel_stats,
    fit_macenko_target,
    fit_reinhard_target,
    hed_jitter,
    macenko_normalize,
    macenko_stains,
    reinhard_normalize,
    reinhard_stats,
)
from nucleiweak_d2.data.synthetic import synthesize_image

H_VEC = np.array([0.65, 0.70, 0.29]) / np.linalg.norm([0.65, 0.70, 0.29])
E_VEC = np.array([0.07, 0.99, 0.11]) / np.linalg.norm([0.07, 0.99, 0.11])


@pytest.fixture(scope="module")
def he_tiles():
    return [synthesize_image(size=(96, 96), seed=s)[0] for s in range(3)]


def _beer_lambert(size=64, seed=0):
    """Image from the known H and E vectors: pure H, pure E, mixtures and white background."""
    rng = np.random.default_rng(seed)
    n = size * size
    kind = rng.choice(4, size=n, p=[0.25, 0.25, 0.4, 0.1])
    conc = np.zeros((n, 2))
    conc[kind == 0, 0] = rng.uniform(0.5, 1.5, (kind == 0).sum())
    conc[kind == 1, 1] = rng.uniform(2.3, 3.0, (kind == 1).sum())
    conc[kind == 2, 0] = rng.uniform(0.3, 1.2, (kind == 2).sum())
    conc[kind == 2, 1] = rng.uniform(0.5, 2.0, (kind == 2).sum())
    od = conc @ np.stack([H_VEC, E_VEC])  # kind 3 stays OD 0 (white)
    image = np.clip(np.rint(256.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8)
    return image.reshape(size, size, 3)


def _lab_tissue(image):
    from skimage.color import rgb2lab

    return rgb2lab(image)


# ---------------------------------------------------------------- Reinhard


def test_reinhard_stats_shape_and_tissue_mask():
    image = np.full((20, 20, 3), 255, np.uint8)
    image[:10] = (150, 60, 140)  # purple half; white half is excluded
    stats = reinhard_stats(image)
    lab = _lab_tissue(image[:10])
    assert stats.shape == (6,)
    np.testing.assert_allclose(stats[:3], lab.reshape(-1, 3).mean(0), atol=1e-3)
    np.testing.assert_allclose(stats[3:], 0.0, atol=1e-3)
    # an explicit mask overrides the tissue rule
    full = reinhard_stats(image, mask=np.ones((20, 20), bool))
    assert full[0] > stats[0] + 10
    # all-white: fewer than 1% tissue pixels -> all pixels
    white = reinhard_stats(np.full((8, 8, 3), 255, np.uint8))
    np.testing.assert_allclose(white, [100, 0, 0, 0, 0, 0], atol=1e-2)


def test_reinhard_normalized_stats_match_target(he_tiles):
    target = reinhard_stats(he_tiles[1]) + [-5.0, 5.0, -3.0, 2.0, 1.0, 1.0]
    for image in (he_tiles[0], he_tiles[2]):
        out = reinhard_normalize(image, target)
        assert out.dtype == np.uint8 and out.shape == image.shape
        # statistics over the pixels that were tissue in the source (the transform's own mask);
        # residue: uint8 rounding and gamut clipping
        tissue = _lab_tissue(image)[..., 0] <= 90
        np.testing.assert_allclose(reinhard_stats(out, mask=tissue), target, atol=0.25)


def test_reinhard_own_stats_is_identity(he_tiles):
    for image in he_tiles:
        out = reinhard_normalize(image, reinhard_stats(image))
        diff = np.abs(out.astype(int) - image.astype(int))
        assert diff.max() <= 2


def test_fit_reinhard_target(he_tiles):
    image = he_tiles[1]
    np.testing.assert_allclose(fit_reinhard_target([image, image, image]), reinhard_stats(image))
    both = fit_reinhard_target(he_tiles[:2])
    np.testing.assert_allclose(
        both, (reinhard_stats(he_tiles[0]) + reinhard_stats(he_tiles[1])) / 2
    )


def test_reinhard_blank_tile_unchanged():
    white = np.full((16, 16, 3), 250, np.uint8)
    out = reinhard_normalize(white, [55.0, 30.0, -18.0, 14.0, 9.0, 7.0])
    np.testing.assert_array_equal(out, white)
    assert out is not white


# ---------------------------------------------------------------- Macenko


def test_macenko_recovers_known_stains():
    matrix, max_conc = macenko_stains(_beer_lambert())
    assert matrix.shape == (3, 2) and max_conc.shape == (2,)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=0), 1.0)
    assert matrix[:, 0] @ H_VEC > 0.99  # hematoxylin first
    assert matrix[:, 1] @ E_VEC > 0.99
    assert matrix[0, 0] > matrix[0, 1]
    # 99th percentile of the known concentrations (pure-stain populations dominate the top)
    assert 1.3 < max_conc[0] < 1.55 and 2.7 < max_conc[1] < 3.05


def test_macenko_own_target_is_nearly_identity(he_tiles):
    image = _beer_lambert(seed=1)  # exactly two stains: only rounding
    matrix, max_conc = fit_macenko_target([image])
    out = macenko_normalize(image, matrix, max_conc)
    assert out.dtype == np.uint8 and out.shape == image.shape
    diff = np.abs(out.astype(int) - image.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.2
    # rendered tiles are not exactly two-stain: the OD residual off the stain plane is dropped
    # (as in Macenko), so the output is the image's projection on its stain plane
    for image in he_tiles:
        matrix, max_conc = fit_macenko_target([image])
        out = macenko_normalize(image, matrix, max_conc)
        od = -np.log((image.reshape(-1, 3) + 1.0) / 256.0)
        projected = od @ (matrix @ np.linalg.pinv(matrix)).T
        expected = np.clip(np.rint(256.0 * np.exp(-projected) - 1.0), 0, 255).reshape(image.shape)
        assert np.abs(out.astype(int) - expected).max() <= 1
        diff = np.abs(out.astype(int) - image.astype(int))
        assert diff.mean() < 5


def test_macenko_normalize_moves_to_target_stains():
    source = _beer_lambert(seed=2)
    rot = np.array([0.55, 0.75, 0.37]) / np.linalg.norm([0.55, 0.75, 0.37])
    target_matrix = np.stack([rot, E_VEC], axis=1)
    out = macenko_normalize(source, target_matrix, np.array([1.2, 3.2]))
    matrix, max_conc = macenko_stains(out)
    assert matrix[:, 0] @ rot > 0.99 and matrix[:, 1] @ E_VEC > 0.99
    np.testing.assert_allclose(max_conc, [1.2, 3.2], rtol=0.03)


def test_macenko_blank_tile_falls_back():
    white = np.full((32, 32, 3), 255, np.uint8)
    with pytest.raises(ValueError, match="too few tissue pixels"):
        macenko_stains(white)
    matrix, max_conc = macenko_stains(_beer_lambert())
    out = macenko_normalize(white, matrix, max_conc)
    np.testing.assert_array_equal(out, white)
    # a single-stain image is degenerate: unchanged as well
    od = np.outer(np.linspace(0.5, 1.5, 256), H_VEC)
    mono = np.clip(np.rint(256 * np.exp(-od) - 1), 0, 255).astype(np.uint8).reshape(16, 16, 3)
    with pytest.raises(ValueError):
        macenko_stains(mono)
    np.testing.assert_array_equal(macenko_normalize(mono, matrix, max_conc), mono)
    # fitting skips unusable images, fails when none is usable
    fit_m, fit_c = fit_macenko_target([white, _beer_lambert()])
    np.testing.assert_allclose(fit_m, matrix)
    np.testing.assert_allclose(fit_c, max_conc)
    with pytest.raises(ValueError, match="no usable image"):
        fit_macenko_target([white])


def test_macenko_beta_is_od_threshold():
    # grey 220: OD = ln(256/221) = 0.147 < beta -> background
    assert -np.log(221 / 256) < MACENKO_BETA
    with pytest.raises(ValueError, match="too few"):
        macenko_stains(np.full((16, 16, 3), 220, np.uint8))


def test_fit_macenko_target_mean():
    a, b = _beer_lambert(seed=3), _beer_lambert(seed=4)
    (ma, ca), (mb, cb) = macenko_stains(a), macenko_stains(b)
    matrix, max_conc = fit_macenko_target([a, b])
    mean = (ma + mb) / 2
    np.testing.assert_allclose(matrix, mean / np.linalg.norm(mean, axis=0))
    np.testing.assert_allclose(max_conc, (ca + cb) / 2)


# ---------------------------------------------------------------- HED jitter


def test_hed_jitter_zero_is_identity(he_tiles):
    rng = np.random.default_rng(0)
    every = np.stack(np.meshgrid(np.arange(0, 256, 5), np.arange(0, 256, 5), [0, 77, 255]), -1)
    every = every.reshape(-1, 1, 3).astype(np.uint8)  # includes colours outside the HED cone
    for image in [*he_tiles, every]:
        out = hed_jitter(image, rng, sigma=0.0, bias=0.0)
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert np.abs(out.astype(int) - image.astype(int)).max() <= 1


def test_hed_jitter_deterministic_and_changes(he_tiles):
    image = he_tiles[0]
    a = hed_jitter(image, np.random.default_rng(7), sigma=0.1, bias=0.02)
    b = hed_jitter(image, np.random.default_rng(7), sigma=0.1, bias=0.02)
    c = hed_jitter(image, np.random.default_rng(8), sigma=0.1, bias=0.02)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert np.abs(a.astype(int) - image.astype(int)).mean() > 0.5
    assert not np.array_equal(a, c)
    only_sigma = hed_jitter(image, np.random.default_rng(1), sigma=0.2, bias=0.0)
    assert not np.array_equal(only_sigma, image)


def test_stain_jitter_callable(he_tiles):
    image = he_tiles[2]
    jitter = StainJitter(sigma=0.05, bias=0.05)
    np.testing.assert_array_equal(
        jitter(image, np.random.default_rng(3)), hed_jitter(image, np.random.default_rng(3))
    )
    # global np.random state when rng is None
    np.random.seed(5)
    a = jitter(image)
    np.random.seed(5)
    np.testing.assert_array_equal(a, jitter(image))
    np.testing.assert_array_equal(a, hed_jitter(image, np.random.RandomState(5)))
    assert StainJitter(0.2, 0.2, prob=0.0)(image) is image
    with pytest.raises(ValueError, match="prob"):
        StainJitter(prob=1.5)
    with pytest.raises(ValueError, match="sigma"):
        StainJitter(sigma=-0.1)


# ---------------------------------------------------------------- callables and statistics


def test_stain_normalizer(he_tiles):
    reinhard = StainNormalizer.fit("reinhard", he_tiles)
    assert reinhard.method == "reinhard" and len(reinhard.target_list()) == 6
    np.testing.assert_allclose(reinhard.target_list(), fit_reinhard_target(he_tiles))
    rebuilt = StainNormalizer("reinhard", reinhard.target_list())
    np.testing.assert_array_equal(
        rebuilt(he_tiles[0]), reinhard_normalize(he_tiles[0], fit_reinhard_target(he_tiles))
    )

    macenko = StainNormalizer.fit("macenko", he_tiles)
    flat = macenko.target_list()
    assert len(flat) == 8 and all(isinstance(v, float) for v in flat)
    matrix, max_conc = fit_macenko_target(he_tiles)
    np.testing.assert_allclose(flat, [*matrix.reshape(-1), *max_conc])
    np.testing.assert_array_equal(
        StainNormalizer("macenko", flat)(he_tiles[1]),
        macenko_normalize(he_tiles[1], matrix, max_conc),
    )

    none = StainNormalizer("none")
    assert none(he_tiles[0]) is he_tiles[0] and none.target_list() == []
    assert StainNormalizer.fit("none", he_tiles).method == "none"


def test_stain_normalizer_bad_targets():
    with pytest.raises(ValueError, match="stain method"):
        StainNormalizer("vahadane", [])
    with pytest.raises(ValueError, match="6 finite floats"):
        StainNormalizer("reinhard", [1.0, 2.0])
    with pytest.raises(ValueError, match="8 floats"):
        StainNormalizer("macenko", [0.5] * 6)
    with pytest.raises(ValueError, match="> 0"):
        StainNormalizer("macenko", [0.6, 0.1, 0.7, 0.9, 0.3, 0.1, 1.0, -1.0])


def test_dataset_pixel_stats():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(5, 7), (9, 4), (3, 3)]]
    mean, std = dataset_pixel_stats(images)
    pixels = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-12)
    const = dataset_pixel_stats([np.full((4, 4, 3), (10, 20, 30), np.uint8)])
    np.testing.assert_allclose(const[0], [10, 20, 30])
    np.testing.assert_allclose(const[1], 0.0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((8, 8, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        ([[[0, 0, 0]]], "numpy array"),
    ],
)
def test_bad_images(bad, match):
    calls = [
        lambda im: reinhard_stats(im),
        lambda im: reinhard_normalize(im, [50, 0, 0, 10, 5, 5]),
        lambda im: macenko_stains(im),
        lambda im: macenko_normalize(im, np.stack([H_VEC, E_VEC], 1), [1.0, 1.0]),
        lambda im: hed_jitter(im, np.random.default_rng(0)),
        lambda im: StainJitter()(im),
        lambda im: StainNormalizer("none")(im),
        lambda im: dataset_pixel_stats([im]),
        lambda im: fit_reinhard_target([im]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=match):
            call(bad)


def test_bad_image_lists():
    with pytest.raises(ValueError, match="empty"):
        fit_reinhard_target([])
    with pytest.raises(ValueError, match="single image"):
        dataset_pixel_stats(np.zeros((4, 4, 3), np.uint8))
