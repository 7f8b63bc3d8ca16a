"""Exactness of the fast inference parts: batch-norm folding, float32 CIELAB conversions, the
lookup-table relabelling (each checked against the slower original it replaces)."""

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab
from skimage.segmentation import relabel_sequential

pytest.importorskip("detectron2")

from detectron2.layers import Conv2d  # noqa: E402
from torch import nn  # noqa: E402

from nucleiweak_d2.data import stain  # noqa: E402
from nucleiweak_d2.modeling.backbone.fold_bn import (  # noqa: E402
    fold_batchnorm,
    parameter_versions,
)
from nucleiweak_d2.modeling.meta_arch.postprocess import (  # noqa: E402
    relabel_sequential as ours_relabel_sequential,
)


def _conv_bn(bias):
    torch.manual_seed(0)
    net = nn.Sequential(
        Conv2d(3, 8, 3, padding=1, bias=bias, norm=nn.BatchNorm2d(8), activation=nn.ReLU()),
        Conv2d(8, 4, 1, bias=True, norm=nn.GroupNorm(2, 4)),
    )
    bn = net[0].norm
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("bias", [False, True])
def test_fold_batchnorm_gives_the_same_output(bias):
    net = _conv_bn(bias)
    x = torch.randn(2, 3, 10, 12)
    with torch.no_grad():
        ref = net(x)
        folded = fold_batchnorm(net)
        out = folded(x)
    assert folded[0].norm is None and folded[0].bias is not None
    assert isinstance(folded[1].norm, nn.GroupNorm)  # other norms are kept
    assert isinstance(net[0].norm, nn.BatchNorm2d)  # the original is untouched
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_parameter_versions_change_with_in_place_updates():
    net = _conv_bn(False)
    key = parameter_versions(net)
    assert parameter_versions(net) == key
    with torch.no_grad():
        net[0].weight.mul_(2)
    assert parameter_versions(net) != key
    key = parameter_versions(net)
    net.load_state_dict(net.state_dict())
    assert parameter_versions(net) != key


def _all_colours():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 300, 3)).astype(np.uint8)
    image[0, :3] = [[0, 0, 0], [255, 255, 255], [255, 0, 0]]
    return image


def test_rgb_to_lab_matches_scikit_image():
    image = _all_colours()
    ref = rgb2lab(image.astype(np.float64) / 255.0)
    out = stain._rgb_to_lab(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.abs(out - ref).max() < 2e-3


def test_lab_to_rgb_matches_scikit_image_within_one_level():
    rng = np.random.default_rng(1)
    lab = stain._rgb_to_lab(_all_colours()) + rng.normal(0, 25, (200, 300, 3)).astype(np.float32)
    with pytest.warns(UserWarning):  # scikit-image warns about the clipped Z < 0 colours
        ref = stain._to_uint8(lab2rgb(lab.astype(np.float64)) * 255.0)
    out = stain._lab_to_rgb_uint8(lab).reshape(lab.shape)
    diff = np.abs(out.astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_relabel_sequential_matches_scikit_image():
    rng = np.random.default_rng(2)
    for shape in [(1, 1), (5, 7), (200, 300)]:
        label = (rng.integers(0, 60, shape) * rng.integers(0, 2, shape) * 7).astype(np.int32)
        np.testing.assert_array_equal(ours_relabel_sequential(label), relabel_sequential(label)[0])
    assert ours_relabel_sequential(np.zeros((3, 4), np.int32)).max() == 0
    out = ours_relabel_sequential(np.array([[0, 9], [4, 9]], np.int32))
    np.testing.assert_array_equal(out, [[0, 2], [1, 2]])
    assert out.dtype == np.int32


def test_fill_holes_per_object_absorbs_or_keeps_an_enclosed_object():
    from nucleiweak_d2.modeling.meta_arch.postprocess import (
        fill_holes_per_object,
        remove_small_objects,
    )

    ring = np.zeros((7, 7), np.int32)
    ring[1:6, 1:6] = 1
    ring[2:5, 2:5] = 0  # a 3x3 hole in object 1 ...
    ring[3, 3] = 2  # ... holding object 2 (one pixel)
    absorbed = fill_holes_per_object(ring)
    assert (absorbed[1:6, 1:6] == 1).all() and absorbed.sum() == 25
    kept = fill_holes_per_object(ring, keep_enclosed=True)
    assert kept[3, 3] == 2 and (kept[1:6, 1:6] > 0).all() and (kept == 1).sum() == 24
    assert ring[2, 2] == 0  # the input is not modified
    # remove_small_objects: object 2 has 1 pixel, object 1 has 16
    np.testing.assert_array_equal(np.unique(remove_small_objects(ring.copy(), 2)), [0, 1])
    np.testing.assert_array_equal(np.unique(remove_small_objects(ring.copy(), 0)), [0, 1, 2])
