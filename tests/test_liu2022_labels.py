"""IEN instance pseudo-labels on a hand-made two-cell case, and the CoordConv channels of the
IEN mapper after augmentation."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T

from nucleiweak_d2.data.io import write_image
from nucleiweak_d2.data.transforms import Rot90Transform
from nucleiweak_d2.methods.liu2022.coords import coordinate_grid
from nucleiweak_d2.methods.liu2022.mappers import NucleiWeakLiu2022IENMapper
from nucleiweak_d2.methods.liu2022.pseudo_labels import instance_pseudo_label


def two_cells():
    """20 x 40 probability map; points (9, 10) and (26, 10): the Voronoi border lies between
    columns 17 and 18 (midpoint 17.5)."""
    prob = np.full((20, 40), 0.1, dtype=np.float32)
    prob[5:16, 4:28] = 0.9  # one blob across both cells
    prob[9:12, 21:23] = 0.1  # a hole in it, in cell 1
    prob[17:20, 0:7] = 0.9  # 21 px of foreground in cell 0 without a point
    prob[0:2, 35:38] = 0.9  # 6 px: removed as too small
    prob[0:3, 0:4] = 0.4  # uncertain band
    return prob, np.array([[9, 10], [26, 10]])


def test_two_cells_by_hand():
    prob, pts = two_cells()
    label = instance_pseudo_label(prob, pts, t_fg=0.5, t_bg=0.3, min_area=20)
    expected = np.ones((20, 40), dtype=np.int32)  # background: p <= 0.3
    expected[5:16, 4:18] = 2  # point 0's piece of the blob
    expected[5:16, 18:28] = 3  # point 1's piece, hole filled
    expected[17:20, 0:7] = 0  # foreground piece without a point
    expected[0:2, 35:38] = 0  # removed object: p > T_bg, so not background
    expected[0:3, 0:4] = 0  # T_bg < p <= T_fg
    np.testing.assert_array_equal(label, expected)


def test_point_off_the_foreground_has_no_instance_and_no_points_is_background_only():
    prob, _ = two_cells()
    pts = np.array([[9, 10], [32, 10]])  # the second point lies in the background
    label = instance_pseudo_label(prob, pts)
    # the part of the blob in its cell (x >= 21, midpoint 20.5) is foreground without a point
    assert set(np.unique(label)) == {0, 1, 2}
    assert (label[5:16, 4:21] == 2).all() and (label[5:16, 21:28] == 0).all()
    empty = instance_pseudo_label(prob, np.zeros((0, 2)))
    assert set(np.unique(empty)) == {0, 1}
    with pytest.raises(ValueError, match="t_bg <= t_fg"):
        instance_pseudo_label(prob, np.zeros((0, 2)), t_fg=0.2, t_bg=0.3)


@pytest.fixture()
def record(tmp_path):
    """A 24 x 40 image whose pixel (y, x) has colour (x, y, 7), its SPN probability and points."""
    h, w = 24, 40
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = np.arange(w)[None, :]
    image[..., 1] = np.arange(h)[:, None]
    image[..., 2] = 7
    write_image(tmp_path / "img.png", image)
    prob = np.full((h, w), 0.1, dtype=np.float32)
    prob[4:12, 3:15] = 0.9
    prob[10:20, 22:35] = 0.9
    np.savez(tmp_path / "img_0.npz", prob=prob)
    rec = {
        "file_name": str(tmp_path / "img.png"),
        "height": h,
        "width": w,
        "image_id": "img_0",
        "annotations": [
            {"point": [8, 8], "point_labeled": True},
            {"point": [28, 15], "point_labeled": True},
        ],
    }
    return rec, tmp_path


def _mapper(tmp_path, transforms):
    return NucleiWeakLiu2022IENMapper(True, augmentations=transforms, prob_dir=str(tmp_path))


def _original_xy(coords, shape):
    """Original pixel indices from normalised coordinates."""
    h, w = shape
    x = (coords[0].numpy() + 1) * w / 2 - 0.5
    y = (coords[1].numpy() + 1) * h / 2 - 0.5
    return np.rint(x).astype(int), np.rint(y).astype(int), x, y


@pytest.mark.parametrize("name", ["hflip_crop", "vflip_rot90_crop"])
def test_coordconv_channels_are_original_coordinates_after_augmentation(record, name):
    rec, tmp = record
    h, w = rec["height"], rec["width"]
    if name == "hflip_crop":
        transforms = [T.HFlipTransform(w), T.CropTransform(5, 3, 20, 16)]
        # output pixel (r, c) comes from original column w - 1 - (5 + c), row 3 + r
        rr, cc = np.mgrid[0:16, 0:20]
        want_x, want_y = w - 1 - (5 + cc), 3 + rr
    else:
        transforms = [T.VFlipTransform(h), Rot90Transform(h, w, 1), T.CropTransform(2, 4, 12, 18)]
        # rot90 CCW of the flipped image: output (r, c) <- flipped (c, w - 1 - r);
        # the flip maps flipped row i to original row h - 1 - i
        rr, cc = np.mgrid[4 : 4 + 18, 2 : 2 + 12]
        want_y, want_x = h - 1 - cc, w - 1 - rr
    d = _mapper(tmp, transforms)(rec)
    x, y, xf, yf = _original_xy(d["coords"], (h, w))
    np.testing.assert_allclose(xf, want_x, atol=1e-4)
    np.testing.assert_allclose(yf, want_y, atol=1e-4)
    # the image and the instance labels moved with the coordinates
    img = d["image"].numpy()
    np.testing.assert_array_equal(img[0], want_x)
    np.testing.assert_array_equal(img[1], want_y)
    full = instance_pseudo_label(np.load(tmp / "img_0.npz")["prob"], np.array([[8, 8], [28, 15]]))
    np.testing.assert_array_equal(d["ins_seg"].numpy(), full[want_y, want_x])
    assert d["ins_seg"].dtype == torch.int64 and d["coords"].dtype == torch.float32


def test_resize_moves_coordinates_and_inference_grid_matches_training(record):
    rec, tmp = record
    h, w = rec["height"], rec["width"]
    from nucleiweak_d2.data.transforms import _WritableResize

    d = _mapper(tmp, [_WritableResize(h, w, 2 * h, 2 * w)])(rec)
    _, _, xf, yf = _original_xy(d["coords"], (h, w))
    # interior output pixel centres map to (c + 0.5) / 2 - 0.5 in the original (bilinear)
    cc = np.arange(2 * w)
    np.testing.assert_allclose(xf[5, 1:-1], (cc[1:-1] + 0.5) / 2 - 0.5, atol=1e-4)
    np.testing.assert_allclose(yf[1:-1, 5], (np.arange(2 * h)[1:-1] + 0.5) / 2 - 0.5, atol=1e-4)
    # no augmentation: the mapper's channels are the grid the model builds at inference
    ident = _mapper(tmp, [])(rec)
    np.testing.assert_array_equal(
        ident["coords"].numpy(), coordinate_grid(h, w, as_tensor=True).numpy()
    )
    assert "coords" not in NucleiWeakLiu2022IENMapper(False, augmentations=[])(rec)


def test_missing_probability_is_a_clear_error(record):
    rec, tmp = record
    rec = dict(rec, image_id="other")
    with pytest.raises(FileNotFoundError, match="no SPN probability"):
        _mapper(tmp, [])(rec)
