"""PROnet targets: shape-guided offsets point at the nucleus centroid, not at the shifted click;
they survive augmentation; the centre map of points near or outside a crop."""

import numpy as np
import pytest

pytest.importorskip("detectron2")

from detectron2.data import transforms as T  # noqa: E402

from nucleiweak_d2.data.transforms import Rot90Transform  # noqa: E402
from nucleiweak_d2.methods.nam2023.mappers import _move_points  # noqa: E402
from nucleiweak_d2.methods.nam2023.targets import (  # noqa: E402
    IGNORED,
    center_target,
    offset_target,
    shape_guided_targets,
)
from nucleiweak_d2.pseudo_labels import offset_targets  # noqa: E402
from nucleiweak_d2.pseudo_labels._common import nearest_point  # noqa: E402


def _disk(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.fixture
def two_nuclei():
    """Two disks of radius 5 centred at (15, 20) and (40, 22); the first click is shifted inside
    its nucleus (+4, -3), the second one outside it (+7, +3), as a careless click would be."""
    shape = (40, 60)
    centres = np.array([[15, 20], [40, 22]])
    fg = _disk(shape, 15, 20, 5) | _disk(shape, 40, 22, 5)
    clicks = centres + np.array([[4, -3], [7, 3]])
    assert fg[clicks[0, 1], clicks[0, 0]] and not fg[clicks[1, 1], clicks[1, 0]]
    cells = nearest_point(clicks, shape)[1]
    return shape, fg, centres, clicks, cells


def test_offsets_point_at_the_centroid_not_at_the_click(two_nuclei):
    shape, fg, centres, clicks, cells = two_nuclei
    nuclei, found = shape_guided_targets(fg, clicks, cells)
    np.testing.assert_allclose(found, centres)  # disks: centroid = centre
    assert set(np.unique(nuclei)) == {0, 1, 2}
    target, weight = offset_target(nuclei, found)
    ys, xs = np.nonzero(nuclei > 0)
    k = nuclei[ys, xs] - 1
    votes = np.stack([xs + target[0, ys, xs], ys + target[1, ys, xs]], axis=1)
    np.testing.assert_allclose(votes, centres[k], atol=1e-5)
    assert np.linalg.norm(votes - clicks[k], axis=1).min() >= 5.0  # never the click
    assert (weight[0][nuclei > 0] == 1).all() and (weight[0][~fg] == 1).all()
    # the shared offset_targets defaults to the click: the vote would return the shifted point
    point_target, _ = offset_targets(fg, clicks, cells)
    np.testing.assert_allclose(xs + point_target[0, ys, xs], clicks[k, 0])


def test_other_foreground_in_a_cell_is_ignored_and_small_pieces_never_chosen():
    shape = (30, 60)
    fg = _disk(shape, 15, 15, 5) | _disk(shape, 45, 15, 4)  # the second nucleus has no click
    click = np.array([[17, 16]])
    cells = np.zeros(shape, dtype=np.int32)  # one cell covers both
    nuclei, centres = shape_guided_targets(fg, click, cells)
    assert (nuclei[_disk(shape, 15, 15, 5)] == 1).all()
    assert (nuclei[_disk(shape, 45, 15, 4)] == IGNORED).all()
    _, w = offset_target(nuclei, centres, background_weight=0.5)
    assert (w[0][nuclei == IGNORED] == 0).all() and (w[0][~fg] == 0.5).all()
    # a 1-pixel speck under the click is not a nucleus when min_area excludes it
    speck = _disk(shape, 45, 15, 4)
    speck[16, 17] = True
    nuclei2, centres2 = shape_guided_targets(speck, click, cells, min_area=5)
    np.testing.assert_allclose(centres2[0], [45, 15])
    assert nuclei2[16, 17] == IGNORED
    # no foreground in the cell: no centre, nothing to train
    _, none = shape_guided_targets(np.zeros(shape, bool), click, cells)
    assert np.isnan(none).all()


def test_offsets_formed_after_augmentation_point_at_the_moved_centre(two_nuclei):
    shape, fg, centres, clicks, cells = two_nuclei
    nuclei, found = shape_guided_targets(fg, clicks, cells)
    h, w = shape
    tfm = T.TransformList(
        [T.HFlipTransform(w), Rot90Transform(h, w, 1), T.CropTransform(5, 3, 30, 50)]
    )
    moved_nuclei = np.rint(tfm.apply_segmentation(nuclei.astype(np.float32))).astype(np.int64)
    moved_centres = _move_points(tfm, found)
    target, _ = offset_target(moved_nuclei, moved_centres)
    for k, (cx, cy) in enumerate(centres):
        marker = np.zeros(shape, dtype=np.float32)
        marker[cy, cx] = 1.0
        my, mx = np.argwhere(tfm.apply_segmentation(marker) > 0.5)[0]
        ys, xs = np.nonzero(moved_nuclei == k + 1)
        np.testing.assert_allclose(xs + target[0, ys, xs], mx, atol=1e-4)
        np.testing.assert_allclose(ys + target[1, ys, xs], my, atol=1e-4)


def test_warped_nuclei_keep_their_ids_and_the_outside_weighs_nothing(two_nuclei):
    from nucleiweak_d2.data.transforms import AffineTransform
    from nucleiweak_d2.methods.nam2023.mappers import NucleiWeakNam2023Mapper

    shape, fg, centres, clicks, cells = two_nuclei
    nuclei, found = shape_guided_targets(fg, clicks, cells)
    nuclei[nuclei == 1] = 2**20  # a large id survives the float32 trip exactly
    h, w = shape
    # a 12-px shift to the right: the 12 left columns come from outside the image
    tfm = T.TransformList([AffineTransform(h, w, [[1, 0, 12], [0, 1, 0]], h, w, seg_fill=2)])
    mapper = NucleiWeakNam2023Mapper(True, augmentations=[])
    moved, outside = mapper._move_nuclei(tfm, nuclei)
    assert outside[:, :12].all() and not outside[:, 12:].any()
    assert (moved[:, :12] == 0).all()
    np.testing.assert_array_equal(moved[:, 12:], nuclei[:, : w - 12])
    assert set(np.unique(moved)) == {0, 2, 2**20}
    # without a warp the map is unchanged and nothing is outside
    same, none = mapper._move_nuclei(T.TransformList([T.HFlipTransform(w)]), nuclei)
    np.testing.assert_array_equal(same, nuclei[:, ::-1])
    assert not none.any()


def test_mapper_warps_offsets_with_the_outside_ignored(two_nuclei, tmp_path):
    """With the recipe's rotation the offset targets still point at the moved centres, and
    rotated-in corners weigh 0 in the offset loss (they were refused before)."""
    import torch

    from nucleiweak_d2.data.atomic import savez_compressed
    from nucleiweak_d2.data.io import write_image
    from nucleiweak_d2.data.transforms import RandomAffine
    from nucleiweak_d2.methods.nam2023.mappers import NucleiWeakNam2023Mapper

    shape, fg, centres, clicks, cells = two_nuclei
    nuclei, found = shape_guided_targets(fg, clicks, cells)
    image = np.full((*shape, 3), 220, np.uint8)
    image[fg] = (90, 50, 140)
    write_image(tmp_path / "img.png", image)
    savez_compressed(tmp_path / "7.npz", nuclei=nuclei, centres=found)
    record = {
        "file_name": str(tmp_path / "img.png"),
        "height": shape[0],
        "width": shape[1],
        "image_id": 7,
        "annotations": [{"point": [int(x), int(y)], "point_labeled": True} for x, y in clicks],
    }
    rotate = [RandomAffine(affine=0.0, rotate=(30.0, 30.0))]  # a fixed 30-degree rotation
    mapper = NucleiWeakNam2023Mapper(True, augmentations=rotate, targets_dir=str(tmp_path))
    out = mapper(record)
    weight, target = out["offset_weight"][0].numpy(), out["offset_target"].numpy()
    tfm = T.AugmentationList(rotate)(T.AugInput(image))  # the same transform
    moved, outside = mapper._move_nuclei(tfm, nuclei)
    black = (out["image"].numpy() == 0).all(axis=0)  # wholly rotated in from outside
    assert black.any() and outside[black].all()
    assert (weight[outside] == 0).all() and (out["sem_seg"].numpy()[:, outside] == 2).all()
    # every nucleus pixel still points at its moved centre
    moved_centres = _move_points(tfm, found)
    for k in (1, 2):
        ys, xs = np.nonzero(moved == k)
        assert len(ys) > 50 and (weight[ys, xs] == 1.0).all()
        np.testing.assert_allclose(xs + target[0, ys, xs], moved_centres[k - 1, 0], atol=1e-4)
        np.testing.assert_allclose(ys + target[1, ys, xs], moved_centres[k - 1, 1], atol=1e-4)
    assert isinstance(out["center_target"], torch.Tensor)


def test_center_target_peaks_and_tails_of_points_outside_the_crop():
    heat = center_target([[3.7, 4.2], [-2.0, 10.0], [50.0, 50.0]], (20, 20), radius=4.0)
    assert heat[4, 3] == 1.0 and heat.max() == 1.0
    sigma = 9.0 / 6.0
    assert heat[10, 0] == pytest.approx(np.exp(-4.0 / (2 * sigma**2)), rel=1e-6)  # tail of x = -2
    assert heat[10, 3] == 0.0  # beyond the radius
    assert (center_target(np.zeros((0, 2)), (5, 5), 4.0) == 0).all()


def test_mapper_takes_the_erosion_of_the_config_and_refuses_a_negative_one():
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.methods.nam2023.labels import binary_labels
    from nucleiweak_d2.methods.nam2023.mappers import NucleiWeakNam2023Mapper

    cfg = setup_cfg(None, ["NUCLEIWEAK.NAM2023.LABELS.ERODE_RADIUS", 5])
    assert NucleiWeakNam2023Mapper(cfg, True).label_args["erode_radius"] == 5
    with pytest.raises(ValueError, match="ERODE_RADIUS must be >= 0"):
        NucleiWeakNam2023Mapper(True, augmentations=[], erode_radius=-1)
    # less erosion, larger nucleus label (a flat disc of radius 10 around its point)
    image = np.full((64, 64, 3), 255, np.uint8)
    yy, xx = np.mgrid[:64, :64]
    image[(yy - 32) ** 2 + (xx - 32) ** 2 <= 100] = (90, 50, 140)
    pts = np.array([[32, 32], [5, 5]])
    n5 = (binary_labels(image, pts, erode_radius=5)["cluster"] == 1).sum()
    n7 = (binary_labels(image, pts, erode_radius=7)["cluster"] == 1).sum()
    assert n5 > n7 > 0
