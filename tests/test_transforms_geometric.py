"""Tests of the geometric augmentations: AffineTransform / RandomAffine, ElasticTransform /
RandomElastic, RandomCropAtPoints, NucleiAugInput and build_nuclei_augmentation's options."""

import numpy as np
import pytest

pytest.importorskip("detectron2")
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from fvcore.transforms.transform import NoOpTransform  # noqa: E402
from skimage.draw import disk  # noqa: E402

from nucleiweak_d2.config import add_nucleiweak_config  # noqa: E402
from nucleiweak_d2.data.transforms import (  # noqa: E402
    AffineTransform,
    CenterCrop,
    ElasticTransform,
    NucleiAugInput,
    RandomAffine,
    RandomCropAtPoints,
    RandomElastic,
    RandomRot90,
    RandomScale,
    RandomScaledCrop,
    ResizeCropTransform,
    Rot90Transform,
    build_nuclei_augmentation,
)


def _rng_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _discs(h, w, centres, radius):
    """Label map with discs of ids 1..N at (row, col) ``centres``."""
    label = np.zeros((h, w), dtype=np.uint8)
    for i, (r, c) in enumerate(centres, start=1):
        rr, cc = disk((r, c), radius, shape=(h, w))
        label[rr, cc] = i
    return label


# --------------------------------------------------------------------------------- affine


def test_affine_coords_exact_and_inverse():
    m = np.array([[0.9, 0.2, 3.0], [-0.1, 1.1, -2.5]])
    t = AffineTransform(40, 50, m, 45, 55)
    pts = np.array([[0.5, 0.5], [10.25, 20.0], [49.0, 39.5]])
    expected = np.stack(
        [0.9 * pts[:, 0] + 0.2 * pts[:, 1] + 3.0, -0.1 * pts[:, 0] + 1.1 * pts[:, 1] - 2.5], 1
    )
    np.testing.assert_allclose(t.apply_coords(pts), expected, rtol=0, atol=1e-12)
    inv = t.inverse()
    assert (inv.h, inv.w, inv.out_h, inv.out_w) == (45, 55, 40, 50)
    np.testing.assert_allclose(inv.apply_coords(t.apply_coords(pts)), pts, atol=1e-12)
    with pytest.raises(ValueError, match="invertible"):
        AffineTransform(4, 4, [[1, 2, 0], [2, 4, 0]], 4, 4)


def test_affine_moves_a_square_where_apply_coords_says():
    h, w = 41, 53
    m = np.array([[1.0, 0.3, 4.0], [-0.2, 1.0, 6.0]])
    t = AffineTransform(h, w, m, h, w)
    image = np.zeros((h, w, 3), np.uint8)
    seg = np.zeros((h, w), np.uint8)
    image[18:21, 20:23] = 255  # 3x3 square centred on pixel (19, 21)
    seg[18:21, 20:23] = 1
    x, y = t.apply_coords(np.array([[21.5, 19.5]]))[0]
    out_img = t.apply_image(image)
    out_seg = t.apply_segmentation(seg)
    assert out_img.dtype == np.uint8 and out_img.shape == image.shape
    r, c = int(np.floor(y)), int(np.floor(x))
    assert out_img[r, c, 0] == 255 and out_seg[r, c] == 1
    # a single bright pixel under an integer shift lands exactly where apply_coords says
    dot = np.zeros((h, w), np.uint8)
    dot[19, 21] = 255
    shift = AffineTransform(h, w, [[1, 0, 7], [0, 1, -3]], h, w)
    x2, y2 = shift.apply_coords(np.array([[21.5, 19.5]]))[0]
    moved = shift.apply_image(dot)
    assert np.argwhere(moved).tolist() == [[int(y2 - 0.5), int(x2 - 0.5)]] == [[16, 28]]
    # a smooth blob's peak under the shear goes where apply_coords says (within a pixel)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    blob = np.exp(-((xx - 21.5) ** 2 + (yy - 19.5) ** 2) / 8.0).astype(np.float32)
    peak = np.unravel_index(np.argmax(t.apply_image(blob)), (h, w))
    assert abs(peak[0] + 0.5 - y) <= 1 and abs(peak[1] + 0.5 - x) <= 1
    rows, cols = np.nonzero(out_seg == 1)
    assert abs(rows.mean() + 0.5 - y) < 1 and abs(cols.mean() + 0.5 - x) < 1


def test_affine_identity_and_float_grid():
    h, w = 17, 23
    ident = AffineTransform(h, w, [[1, 0, 0], [0, 1, 0]], h, w)
    image = _rng_image(h, w)
    np.testing.assert_array_equal(ident.apply_image(image), image)
    seg = np.random.default_rng(1).integers(0, 3, size=(h, w)).astype(np.uint8)
    np.testing.assert_array_equal(ident.apply_segmentation(seg), seg)
    grid = np.random.default_rng(2).normal(size=(h, w, 2)).astype(np.float32)
    np.testing.assert_array_equal(ident.apply_image(grid), grid)
    # a half-pixel shift of a float32 2-channel array is the mean of neighbours
    shift = AffineTransform(h, w, [[1, 0, 0.5], [0, 1, 0]], h, w)
    out = shift.apply_image(grid)
    assert out.dtype == np.float32 and out.shape == (h, w, 2)
    np.testing.assert_allclose(out[:, 1:], 0.5 * (grid[:, :-1] + grid[:, 1:]), atol=1e-6)
    # source x = 0 for column 0: half inside the image -> replicated edge, not black
    np.testing.assert_allclose(out[:, 0], grid[:, 0], atol=1e-6)


def test_affine_outside_fill_and_label_values():
    h, w = 30, 30
    t = AffineTransform(h, w, [[1.2, 0.4, 5.0], [-0.3, 0.9, 8.0]], h, w, seg_fill=2)
    seg = _discs(h, w, [(8, 8), (20, 15)], 5) % 2  # values {0, 1}
    out = t.apply_segmentation(seg)
    assert out.dtype == seg.dtype and set(np.unique(out)) <= {0, 1, 2}
    inst = _discs(h, w, [(8, 8), (20, 15), (10, 22)], 4).astype(np.float32) * 7
    out_inst = AffineTransform(
        h, w, [[0.8, 0.3, 3], [0.2, 1.1, -4]], h, w, seg_fill=-1
    ).apply_segmentation(inst)
    assert out_inst.dtype == np.float32 and set(np.unique(out_inst)) <= set(np.unique(inst)) | {-1}
    # a pure shift by 10 px: the first 10 columns come from outside
    shift = AffineTransform(h, w, [[1, 0, 10], [0, 1, 0]], h, w)
    image = np.full((h, w, 3), 200, np.uint8)
    np.testing.assert_array_equal(shift.apply_image(image)[:, :10], 0)
    np.testing.assert_array_equal(shift.apply_image(image)[:, 10:], 200)
    np.testing.assert_array_equal(shift.apply_segmentation(np.zeros((h, w), np.uint8))[:, :10], 2)
    np.testing.assert_array_equal(shift.apply_segmentation(seg)[:, 10:], seg[:, :-10])


@pytest.mark.parametrize("size", [(15, 15), (16, 16)])
def test_affine_rotation_90_equals_rot90(size):
    h, w = size
    image = _rng_image(h, w, 3)
    seg = np.random.default_rng(4).integers(0, 5, size=(h, w)).astype(np.uint8)
    theta = np.pi / 2
    cos, sin = np.cos(theta), np.sin(theta)  # not exactly 0 / 1
    a = np.array([[cos, sin], [-sin, cos]])
    centre = np.array([w / 2, h / 2])
    m = np.concatenate([a, (centre - a @ centre)[:, None]], axis=1)
    t = AffineTransform(h, w, m, h, w)
    np.testing.assert_array_equal(t.apply_image(image), np.rot90(image, 1))
    np.testing.assert_array_equal(t.apply_segmentation(seg), np.rot90(seg, 1))
    pts = np.array([[0.5, 0.5], [3.2, 11.7], [w - 0.5, 2.5]])
    np.testing.assert_allclose(
        t.apply_coords(pts), Rot90Transform(h, w, 1).apply_coords(pts), atol=1e-9
    )


def test_random_affine_reproducible_and_identity():
    image = _rng_image(40, 60)

    def draw(seed):
        np.random.seed(seed)
        return RandomAffine(0.3)(T.AugInput(image.copy()))

    t1, t2 = draw(5), draw(5)
    assert isinstance(t1, AffineTransform)
    np.testing.assert_array_equal(t1.matrix, t2.matrix)
    assert (t1.h, t1.w, t1.out_h, t1.out_w) == (40, 60, 40, 60)
    # the image centre is fixed
    np.testing.assert_allclose(t1.apply_coords(np.array([[30.0, 20.0]])), [[30.0, 20.0]], atol=1e-9)
    # the perturbation alone: A^-1 = B = I + E with |E| <= 0.3, as in Qu et al.'s code
    np.random.seed(0)
    for _ in range(20):
        t = RandomAffine(0.3, rotate=(0, 0))(T.AugInput(image.copy()))
        b = np.linalg.inv(t.matrix[:, :2])
        assert np.all(np.abs(b - np.eye(2)) <= 0.3 + 1e-12)
    assert isinstance(RandomAffine(0.0, rotate=(0, 0)).get_transform(image), NoOpTransform)
    with pytest.raises(ValueError, match="affine"):
        RandomAffine(0.5)


# -------------------------------------------------------------------------------- elastic


def test_elastic_zero_is_identity():
    h, w = 20, 30
    zero = np.zeros((h, w))
    t = ElasticTransform(h, w, zero, zero)
    image = _rng_image(h, w)
    seg = np.random.default_rng(1).integers(0, 3, size=(h, w)).astype(np.uint8)
    grid = np.random.default_rng(2).normal(size=(h, w, 2)).astype(np.float32)
    np.testing.assert_array_equal(t.apply_image(image), image)
    np.testing.assert_array_equal(t.apply_image(grid), grid)
    np.testing.assert_array_equal(t.apply_segmentation(seg), seg)
    pts = np.array([[0.5, 0.5], [12.3, 7.9]])
    np.testing.assert_allclose(t.apply_coords(pts), pts)
    np.random.seed(0)
    assert isinstance(RandomElastic(alpha=0.0, sigma=5.0).get_transform(image), NoOpTransform)
    assert isinstance(RandomElastic(prob=0.0).get_transform(image), NoOpTransform)


def test_elastic_constant_shift_is_exact():
    h, w = 20, 30
    t = ElasticTransform(h, w, np.full((h, w), -3.0), np.full((h, w), 2.0))  # source = q + d
    image = _rng_image(h, w)
    out = t.apply_image(image)
    # output (r, c) takes input (r + 2, c - 3)
    np.testing.assert_array_equal(out[: h - 2, 3:], image[2:, : w - 3])
    np.testing.assert_array_equal(out[:, :3], 0)
    assert set(np.unique(t.apply_segmentation(np.ones((h, w), np.uint8))[h - 2 :])) == {2}
    np.testing.assert_allclose(t.apply_coords(np.array([[10.5, 5.5]])), [[13.5, 3.5]], atol=1e-6)


def test_elastic_labels_preserved_and_points_stay_in_their_nucleus():
    h, w = 96, 96
    centres = [(r, c) for r in range(12, 96, 24) for c in range(12, 96, 24)]
    label = _discs(h, w, centres, 7)
    np.random.seed(3)
    tfm = RandomElastic(alpha=80.0, sigma=6.0)(T.AugInput(_rng_image(h, w)))
    assert isinstance(tfm, ElasticTransform)
    assert np.abs(tfm.dx).max() > 2  # a real deformation
    moved = tfm.apply_segmentation(label)
    assert moved.dtype == label.dtype and set(np.unique(moved)) <= set(np.unique(label)) | {2}
    pts = np.array([[c + 0.5, r + 0.5] for r, c in centres])
    out = tfm.apply_coords(pts)
    # the forward map is consistent with the warp: the source of the moved point is the point
    src = out + np.stack(tfm._field_at(out[:, 0], out[:, 1]), axis=1)
    np.testing.assert_allclose(src, pts, atol=1e-5)
    for i, (x, y) in enumerate(out, start=1):
        assert moved[int(np.floor(y)), int(np.floor(x))] == i
    # approximate inverse brings the image back in the interior
    image = np.repeat(np.linspace(0, 255, w, dtype=np.float32)[None, :, None], h, 0)
    back = tfm.inverse().apply_image(tfm.apply_image(image))
    assert np.abs(back - image)[10:-10, 10:-10].max() < 2.0


# --------------------------------------------------------------------- points and crops


def test_nuclei_aug_input_moves_points_through_a_chain():
    h, w = 40, 60
    image = _rng_image(h, w)
    pts = np.array([[5.5, 7.5], [30.25, 20.75], [59.5, 39.5]])
    aug_input = NucleiAugInput(image, points=pts)
    chain = [
        T.HFlipTransform(w),
        Rot90Transform(h, w, 1),
        AffineTransform(w, h, [[1, 0.1, 2], [0, 1, -1]], w, h),
        T.CropTransform(3, 4, 30, 40),
    ]
    tfms = T.AugmentationList(chain)(aug_input)
    np.testing.assert_allclose(aug_input.points, tfms.apply_coords(pts.copy()))
    assert aug_input.image.shape == (40, 30, 3)
    np.testing.assert_array_equal(pts[0], [5.5, 7.5])  # the caller's array is untouched
    # no points / empty points
    assert NucleiAugInput(image).points is None
    empty = NucleiAugInput(image, points=np.zeros((0, 2)))
    T.AugmentationList([T.HFlipTransform(w)])(empty)
    assert empty.points.shape == (0, 2)


def test_crop_at_points_contains_a_point():
    h, w = 120, 150
    image = _rng_image(h, w)
    np.random.seed(0)
    for _ in range(50):
        pts = np.random.uniform([0, 0], [w, h], size=(np.random.randint(1, 4), 2))
        aug_input = NucleiAugInput(image, points=pts)
        tfm = RandomCropAtPoints((32, 40), prob_at_point=1.0)(aug_input)
        assert isinstance(tfm, T.CropTransform) and aug_input.image.shape == (32, 40, 3)
        p = aug_input.points
        inside = (p[:, 0] >= 0) & (p[:, 0] < 40) & (p[:, 1] >= 0) & (p[:, 1] < 32)
        assert inside.any()
    # points after an earlier augmentation: the crop sees the moved points
    pts = np.array([[5.5, 5.5]])
    for _ in range(20):
        aug_input = NucleiAugInput(image, points=pts)
        T.AugmentationList(
            [
                T.RandomFlip(prob=1.0, horizontal=True, vertical=False),
                RandomCropAtPoints((20, 20), 1.0),
            ]
        )(aug_input)
        p = aug_input.points[0]
        assert 0 <= p[0] < 20 and 0 <= p[1] < 20


def test_crop_at_points_fallbacks_match_random_crop():
    image = _rng_image(50, 70)
    for inp in (T.AugInput(image), NucleiAugInput(image), NucleiAugInput(image, points=[[-5, 3]])):
        np.random.seed(7)
        ours = RandomCropAtPoints((20, 30), prob_at_point=0.0)(inp)
        np.random.seed(7)
        np.random.rand()  # the coin
        ref = T.RandomCrop("absolute", (20, 30)).get_transform(image)
        assert (ours.x0, ours.y0, ours.w, ours.h) == (ref.x0, ref.y0, ref.w, ref.h)
    # the crop is clamped to a smaller image, like T.RandomCrop("absolute")
    tfm = RandomCropAtPoints((80, 80), 1.0).get_transform(image, np.array([[10.0, 10.0]]))
    assert (tfm.x0, tfm.y0, tfm.w, tfm.h) == (0, 0, 70, 50)


# ------------------------------------------------------------------------------- builder


def _cfg():
    cfg = get_cfg()
    add_nucleiweak_config(cfg)
    return cfg


def test_build_default_unchanged_and_options():
    cfg = _cfg()
    assert cfg.NUCLEIWEAK.DATA.AFFINE == 0.0 and not cfg.NUCLEIWEAK.DATA.ROTATE_ANY
    assert cfg.NUCLEIWEAK.DATA.ELASTIC.PROB == 0.0 and cfg.NUCLEIWEAK.DATA.CROP_AT_POINTS == 0.0
    augs = build_nuclei_augmentation(cfg, True)
    assert [type(a) for a in augs] == [
        RandomScale,
        T.RandomFlip,
        T.RandomFlip,
        RandomRot90,
        T.RandomCrop,
    ]
    assert build_nuclei_augmentation(cfg, False) == []

    cfg.NUCLEIWEAK.DATA.AFFINE = 0.3
    cfg.NUCLEIWEAK.DATA.ROTATE_ANY = True
    cfg.NUCLEIWEAK.DATA.ELASTIC.PROB = 0.5
    cfg.NUCLEIWEAK.DATA.CROP_AT_POINTS = 0.5
    augs = build_nuclei_augmentation(cfg, True)
    # with warps, a region of 1.45 x the crop is cut first (at points), warped, then centre-cropped
    assert [type(a) for a in augs] == [
        RandomScaledCrop,
        RandomAffine,
        RandomElastic,
        T.RandomFlip,
        T.RandomFlip,
        RandomRot90,
        CenterCrop,
    ]
    crop = tuple(cfg.NUCLEIWEAK.DATA.CROP_SIZE)
    cut = augs[0].crop
    assert type(cut) is RandomCropAtPoints and augs[0].scale.min_scale == 0.8
    assert cut.crop_size == tuple(int(np.ceil(1.45 * v)) for v in crop)
    assert cut.prob_at_point == 0.5 and augs[-1].crop_size == crop
    assert augs[1].affine == 0.3 and augs[1].rotate == (0.0, 360.0)
    assert augs[2].prob == 0.5 and augs[2].alpha == 50.0 and augs[2].sigma == 6.0
    cfg.NUCLEIWEAK.DATA.ROTATE_ANY = False
    assert build_nuclei_augmentation(cfg, True)[1].rotate == (0.0, 0.0)
    cfg.NUCLEIWEAK.DATA.RESIZE_SCALE = [1.0, 1.0]  # no scale: the cut alone
    assert type(build_nuclei_augmentation(cfg, True)[0]) is RandomCropAtPoints
    cfg.NUCLEIWEAK.DATA.RESIZE_SCALE = [0.8, 1.25]
    # crops at points without warps: the crop itself is placed at points
    cfg.NUCLEIWEAK.DATA.AFFINE, cfg.NUCLEIWEAK.DATA.ELASTIC.PROB = 0.0, 0.0
    assert type(build_nuclei_augmentation(cfg, True)[-1]) is RandomCropAtPoints
    cfg.NUCLEIWEAK.DATA.AFFINE, cfg.NUCLEIWEAK.DATA.ELASTIC.PROB = 0.3, 0.5

    # the full chain runs on an image + label map + points, and the points follow
    np.random.seed(11)
    h, w = 260, 250
    centres = [(r, c) for r in range(20, 260, 40) for c in range(20, 250, 40)]
    label = _discs(h, w, centres, 6)
    pts = np.array([[c + 0.5, r + 0.5] for r, c in centres])
    for _ in range(3):
        aug_input = NucleiAugInput(_rng_image(h, w), sem_seg=label, points=pts)
        tfms = T.AugmentationList(augs)(aug_input)
        # 224 crop, clamped when the random resize made the image smaller
        assert aug_input.image.shape[:2] == aug_input.sem_seg.shape
        assert 200 <= min(aug_input.sem_seg.shape) <= max(aug_input.sem_seg.shape) <= 224
        ch, cw = aug_input.sem_seg.shape
        for i, (x, y) in enumerate(aug_input.points, start=1):
            if 0 <= x < cw and 0 <= y < ch:  # a nucleus centre stays in its nucleus
                assert aug_input.sem_seg[int(y), int(x)] == i
        assert set(np.unique(aug_input.sem_seg)) <= set(range(len(centres) + 1)) | {2}
        np.testing.assert_allclose(aug_input.points, tfms.apply_coords(pts.copy()), atol=1e-9)


# ----------------------------------------------------------------- resize + crop in one step


def _two_steps(t):
    resize, crop = t.steps()
    return lambda a, interp=None: crop.apply_image(resize.apply_image(a, interp))


def test_resize_crop_transform_matches_resize_then_crop():
    """Same pixels as ResizeTransform + CropTransform up to PIL's rounding (uint8), exactly for
    float maps and coordinates; the (h, w, 1) shape is kept; a crop outside is refused."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)
    lab = (rng.random((300, 280)) < 0.5).astype(np.uint8) * 2
    lab[100:200, 50:150] = 1
    dist = rng.random((300, 280)).astype(np.float32)
    for new_h, new_w, x0, y0, cw, ch in ((360, 336, 40, 70, 101, 99), (240, 224, 0, 3, 224, 97)):
        t = ResizeCropTransform(300, 280, new_h, new_w, x0, y0, cw, ch)
        ref = _two_steps(t)
        out = t.apply_image(rgb)
        assert out.shape == (ch, cw, 3) and out.dtype == np.uint8 and out.flags.writeable
        diff = np.abs(out.astype(int) - ref(rgb).astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.25  # fixed-point rounding, not a shift
        seg = t.apply_segmentation(lab)
        assert set(np.unique(seg)) <= {0, 1, 2} and (seg == ref(lab, Image.NEAREST)).mean() > 0.98
        assert t.apply_image(lab[:, :, None]).shape == (ch, cw, 1)
        np.testing.assert_array_equal(t.apply_segmentation(dist), ref(dist, Image.NEAREST))
        np.testing.assert_array_equal(t.apply_image(dist), ref(dist))
        pts = rng.uniform(0, 280, (20, 2))
        resize, crop = t.steps()
        expected = crop.apply_coords(resize.apply_coords(pts.copy()))
        np.testing.assert_allclose(t.apply_coords(pts.copy()), expected, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="does not fit"):
        ResizeCropTransform(300, 280, 240, 224, 200, 0, 50, 50)


@pytest.mark.parametrize("at_points", [0.5, 0.0])
def test_random_scaled_crop_draws_what_scale_then_crop_draw(at_points):
    """A seed gives RandomScaledCrop the scale and window of RandomScale then the crop, and the
    points move alike (the crop at points reads the resized points)."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (400, 380, 3), dtype=np.uint8)
    points = rng.uniform(0, 380, (30, 2))
    cut = (
        RandomCropAtPoints((150, 140), prob_at_point=at_points)
        if at_points
        else T.RandomCrop("absolute", (150, 140))
    )
    for seed in range(12):
        np.random.seed(seed)
        ref = T.AugInput(img.copy()) if not at_points else NucleiAugInput(img.copy(), points=points)
        tfms = T.AugmentationList([RandomScale(0.8, 1.25), cut])(ref)
        np.random.seed(seed)
        new = T.AugInput(img.copy()) if not at_points else NucleiAugInput(img.copy(), points=points)
        (t,) = T.AugmentationList([RandomScaledCrop(0.8, 1.25, cut)])(new).transforms
        resize, crop = tfms.transforms
        assert (t.new_h, t.new_w) == (resize.new_h, resize.new_w)
        assert (t.x0, t.y0, t.cw, t.ch) == (crop.x0, crop.y0, crop.w, crop.h)
        assert new.image.shape == ref.image.shape
        assert np.abs(new.image.astype(int) - ref.image.astype(int)).max() <= 2
        if at_points:
            np.testing.assert_allclose(new.points, ref.points, rtol=0, atol=1e-9)
    with pytest.raises(TypeError, match="RandomCropAtPoints or RandomCrop"):
        RandomScaledCrop(0.8, 1.25, CenterCrop((10, 10)))
