"""Slides read by regions: pyramidal TIFFs, strips, planes, levels, pixel size, tissue."""

import numpy as np
import pytest
import tifffile

from nucleiweak_d2.data import slides
from nucleiweak_d2.data.slides import ArraySource, make_view, open_source, thumbnail, tissue_mask


def _write_pyramid(path, image, mpp=0.25, levels=3, tile=64):
    """A pyramidal tiled TIFF (SubIFDs) of ``image`` and its 2x, 4x, ... subsamplings."""
    pyramid = [image[:: 2**k, :: 2**k] for k in range(levels)]
    with tifffile.TiffWriter(path) as tw:
        tw.write(
            pyramid[0],
            tile=(tile, tile),
            subifds=levels - 1,
            compression="zlib",
            photometric="rgb",
            resolution=(1e4 / mpp, 1e4 / mpp),
            resolutionunit="CENTIMETER",
        )
        for level in pyramid[1:]:
            tw.write(level, tile=(tile, tile), subfiletype=1, compression="zlib", photometric="rgb")
    return pyramid


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (333, 410, 3), dtype=np.uint8)


def _expected(ref, x, y, w, h):
    out = np.zeros((h, w, 3), np.uint8)
    H, W = ref.shape[:2]
    xa, ya, xb, yb = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if xb > xa and yb > ya:
        out[ya - y : yb - y, xa - x : xb - x] = ref[ya:yb, xa:xb]
    return out


def test_pyramid_regions_equal_the_full_levels(tmp_path, image):
    path = tmp_path / "slide.tif"
    pyramid = _write_pyramid(path, image)
    with open_source(path) as source:
        assert source.kind == "tiff" and source.mpp == pytest.approx(0.25)
        assert source.level_dimensions == [(410, 333), (205, 167), (103, 84)]
        rng = np.random.default_rng(1)
        for level, ref in enumerate(pyramid):
            H, W = ref.shape[:2]
            for _ in range(15):
                x, y = int(rng.integers(-20, W)), int(rng.integers(-20, H))
                w, h = (int(v) for v in rng.integers(1, 150, 2))
                np.testing.assert_array_equal(
                    source.read(level, x, y, w, h), _expected(ref, x, y, w, h)
                )
        # a view of a region equals the same region of the full image
        view = make_view(source, region=(100, 40, 200, 150))
        assert (view.width, view.height, view.downsample) == (200, 150, 1.0)
        np.testing.assert_array_equal(view.read(0, 0, 200, 150), image[40:190, 100:300])
        np.testing.assert_array_equal(view.read(30, 20, 90, 70), image[60:110, 130:190])
        np.testing.assert_allclose(view.to_slide([[0, 0], [10.5, 2]]), [[100, 40], [110.5, 42]])
        level1 = make_view(source, level=1, region=(100, 40, 200, 150))
        assert (level1.width, level1.height, level1.downsample) == (100, 75, 2.0)
        np.testing.assert_array_equal(level1.read(0, 0, 100, 75), pyramid[1][20:95, 50:150])


def test_strips_planes_gray16_and_uncompressed(tmp_path, image):
    gray = image[..., 1].astype(np.uint16) * 16  # 12-bit data in 16 bits
    files = {
        "strips.tif": dict(data=image, rowsperstrip=40, compression="zlib"),
        "planar.tif": dict(
            data=np.moveaxis(image, -1, 0),
            planarconfig="separate",
            photometric="rgb",
            tile=(64, 64),
        ),
        "plain.tif": dict(data=image),
    }
    for name, kwargs in files.items():
        tifffile.imwrite(tmp_path / name, **kwargs)
    tifffile.imwrite(tmp_path / "gray16.tif", gray, tile=(64, 64))
    for name in files:
        with open_source(tmp_path / name) as source:
            np.testing.assert_array_equal(source.read(0, 50, 30, 120, 200), image[30:230, 50:170])
    with open_source(tmp_path / "gray16.tif") as source:
        part = source.read(0, 0, 0, 20, 10)
        expected = np.round(gray[:10, :20] * 255.0 / 65535).astype(np.uint8)
        np.testing.assert_array_equal(part, np.repeat(expected[..., None], 3, axis=2))


def test_mpp_chooses_the_level_and_resamples(tmp_path, image):
    path = tmp_path / "slide.tif"
    _write_pyramid(path, image)
    with open_source(path) as source:
        view = make_view(source, mpp=0.5)
        assert (view.level, view.scale, view.width, view.mpp) == (1, 1.0, 205, 0.5)
        view = make_view(source, mpp=0.6)  # level 1 (0.5 µm/px) resized by 0.5 / 0.6
        assert view.level == 1 and view.scale == pytest.approx(0.5 / 0.6)
        assert view.downsample == pytest.approx(2.4) and view.mpp == pytest.approx(0.6)
        whole = view.read(0, 0, view.width, view.height)
        assert whole.shape == (view.height, view.width, 3)
        # a box read alone matches the whole resampled view (up to PIL's fixed-point rounding)
        part = view.read(10, 20, 60, 50).astype(np.int16)
        assert np.abs(part - whole[20:50, 10:60]).max() <= 2
        assert make_view(source, mpp=0.1).scale == pytest.approx(2.5)  # finer: upsampled
        with pytest.raises(ValueError, match="--level 3 does not exist .* 3 level"):
            make_view(source, level=3)
        with pytest.raises(ValueError, match="--region .* is not inside the 410x333"):
            make_view(source, region=(400, 0, 20, 20))
    with pytest.raises(ValueError, match="--slide-mpp"):
        make_view(ArraySource(image), mpp=0.5)
    assert make_view(ArraySource(image, mpp=0.25), mpp=0.5).scale == pytest.approx(0.5)


def test_openslide_formats_need_openslide(tmp_path, monkeypatch):
    fake = tmp_path / "slide.svs"
    fake.write_bytes(b"II*\x00 not a real slide")
    monkeypatch.setattr(slides, "_has_module", lambda name: False)
    with pytest.raises(
        ValueError,
        match=r"reading \.svs slides needs OpenSlide, which is not "
        r"installed: pip install openslide-python",
    ):
        open_source(fake)


def test_thumbnail_and_tissue_mask(tmp_path):
    from nucleiweak_d2.data.synthetic import synthesize_image

    tissue, _ = synthesize_image(size=(256, 256), seed=0)
    image = np.full((256, 640, 3), 244, np.uint8)  # glass ...
    image[:, 300:556] = tissue  # ... and a block of tissue
    path = tmp_path / "half.tif"
    _write_pyramid(path, image, levels=2)
    with open_source(path) as source:
        view = make_view(source)
        thumb = thumbnail(view, 4)
        assert thumb.shape == (64, 160, 3)
        assert (thumb[:, :70] == 244).all() and (thumb[:, 145:] == 244).all()  # glass
        blocks = image.reshape(64, 4, 160, 4, 3).mean(axis=(1, 3))  # 4x4 means
        assert np.abs(thumb[:, 80:134] - blocks[:, 80:134]).mean() < 8
        mask = tissue_mask(view, max_side=160, margin=8)
    assert mask.factor == 4
    assert mask.any_in((320, 0, 500, 256)) and not mask.any_in((0, 0, 250, 256))
    assert not mask.any_in((600, 0, 640, 256))
    assert 0.35 < mask.fraction < 0.55
    # an image without glass keeps its pale stroma
    whole = tissue_mask(make_view(ArraySource(tissue)), max_side=64)
    assert whole.fraction > 0.9
