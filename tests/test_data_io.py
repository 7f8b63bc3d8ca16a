"""Tests of nucleiweak_d2.data.io: image/label readers and writers."""

import numpy as np
import pytest
from PIL import Image

from nucleiweak_d2.data.io import image_size, read_image, read_label, write_image, write_label

tifffile = pytest.importorskip("tifffile")


def _rgb():
    return np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 3


def test_read_image_rgb_png_roundtrip(tmp_path):
    write_image(tmp_path / "a.png", _rgb())
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, _rgb())


def test_read_image_grayscale_is_replicated(tmp_path):
    gray = np.array([[0, 10], [200, 255]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (2, 2, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_read_image_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((3, 3, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 100, 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (3, 3, 3)
    assert (out[..., 0] == 100).all() and (out[..., 1:] == 0).all()


def test_read_image_16bit_png_scales_full_range(tmp_path):
    arr = np.array([[0, 257, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "s.png")
    out = read_image(tmp_path / "s.png")
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 255])


def test_read_image_tif_rgb_and_channel_first(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _rgb())
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), _rgb())
    tifffile.imwrite(tmp_path / "b.tif", np.moveaxis(_rgb(), -1, 0), photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "b.tif"), _rgb())
    tifffile.imwrite(tmp_path / "c.tif", (np.ones((4, 5, 3)) * 65535).astype(np.uint16))
    assert (read_image(tmp_path / "c.tif") == 255).all()


def test_read_image_jpg(tmp_path):
    img = np.full((8, 8, 3), 128, dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (8, 8, 3) and np.abs(out.astype(int) - 128).max() <= 2


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.png"):
        read_image(bad)
    with pytest.raises(ValueError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty.npy"):
        read_label(tmp_path / "empty.npy")


def test_label_roundtrip_16bit(tmp_path):
    label = np.array([[0, 1, 70000 - 4465], [300, 0, 2]], dtype=np.int64)
    write_label(tmp_path / "l.png", label)
    with Image.open(tmp_path / "l.png") as im:
        assert im.mode.startswith("I;16")
    out = read_label(tmp_path / "l.png")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, label)


def test_read_label_tif_npy_and_gray_rgb(tmp_path):
    label = np.array([[0, 5], [5, 9]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "l.tif", label)
    np.save(tmp_path / "l.npy", label.astype(np.int32))
    Image.fromarray(np.repeat(label.astype(np.uint8)[..., None], 3, 2)).save(tmp_path / "rgb.png")
    for name in ("l.tif", "l.npy", "rgb.png"):
        np.testing.assert_array_equal(read_label(tmp_path / name), label)


def test_read_label_rejects_float_colour_and_negative(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.ones((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="f.tif.*float"):
        read_label(tmp_path / "f.tif")
    np.save(tmp_path / "neg.npy", np.array([[0, -1]], dtype=np.int32))
    with pytest.raises(ValueError, match="neg.npy"):
        read_label(tmp_path / "neg.npy")
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[0, 0] = (1, 2, 3)
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(ValueError, match="c.png.*colour"):
        read_label(tmp_path / "c.png")


def test_write_label_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="16-bit PNG.*l.tif"):
        write_label(tmp_path / "l.tif", np.zeros((2, 2), dtype=np.int32))
    with pytest.raises(ValueError, match="integers"):
        write_label(tmp_path / "l.png", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="65535"):
        write_label(tmp_path / "l.png", np.full((2, 2), 70000, dtype=np.int32))


def test_image_size_from_header(tmp_path):
    write_image(tmp_path / "a.png", _rgb())
    assert image_size(tmp_path / "a.png") == (4, 5, "u")
    tifffile.imwrite(tmp_path / "f.tif", np.ones((3, 7), dtype=np.float32))
    assert image_size(tmp_path / "f.tif") == (3, 7, "f")
