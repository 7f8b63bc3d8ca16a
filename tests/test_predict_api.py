"""nucleiweak_d2.api: predict() on arrays, files and slide regions; load_predictor; the
console-script entry points."""

import numpy as np
import pytest

pytest.importorskip("detectron2")
import tifffile  # noqa: E402
import torch  # noqa: E402
from detectron2.modeling import META_ARCH_REGISTRY  # noqa: E402
from scipy import ndimage  # noqa: E402

from nucleiweak_d2 import api  # noqa: E402

ARCH = "PredictApiThreshold"


class _Threshold(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.threshold = torch.nn.Parameter(torch.tensor(180.0))

    @property
    def device(self):
        return self.threshold.device

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            red = x["image"][0].numpy()
            label, _ = ndimage.label(red < float(self.threshold), structure=np.ones((3, 3)))
            centres = ndimage.center_of_mass(label > 0, label, range(1, label.max() + 1))
            points = np.ascontiguousarray(np.asarray(centres, np.float64).reshape(-1, 2)[:, ::-1])
            outputs.append(
                {
                    "instance_map": torch.from_numpy(label.astype(np.int32)),
                    "pred_points": torch.from_numpy(points),
                }
            )
        return outputs


if ARCH not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(type(ARCH, (_Threshold,), {}))


def _disks(shape, step=23, radius=6):
    image = np.full(shape + (3,), 235, np.uint8)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    for y in range(12, shape[0] - 8, step):
        for x in range(12 + (y % 2) * 5, shape[1] - 8, step):
            image[(rows - y) ** 2 + (cols - x) ** 2 <= radius**2] = (80, 40, 140)
    return image


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "fake.yaml"
    path.write_text(f"MODEL:\n  META_ARCHITECTURE: {ARCH}\n  DEVICE: cpu\nINPUT:\n  FORMAT: RGB\n")
    return path


def _same_partition(a, b):
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


def test_predict_array_file_and_tiles(tmp_path, config):
    image = _disks((150, 190))
    predictor = api.load_predictor(config, allow_random_weights=True)
    whole = api.predict(image, predictor=predictor)
    label = whole["instance_map"]
    expected = ndimage.label(image[..., 0] < 180, structure=np.ones((3, 3)))[0]
    assert _same_partition(label, expected) and label.max() == expected.max() > 30
    assert whole["points"].shape == (label.max(), 2) and whole["scores"].shape == (label.max(),)
    assert np.isnan(whole["scores"]).all()  # this model gives no scores
    tiled = api.predict(image, predictor=predictor, tile=64, tile_overlap=24, batch=4)
    assert _same_partition(tiled["instance_map"], label)
    np.testing.assert_allclose(np.sort(tiled["points"], axis=0), np.sort(whole["points"], axis=0))
    # from a file, with config= (weights refused unless a checkpoint is given)
    tifffile.imwrite(tmp_path / "img.tif", image)
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        api.predict(tmp_path / "img.tif", config=config)
    with pytest.raises(ValueError, match="config file not found"):
        api.load_predictor(tmp_path / "nope.yaml")


def test_region_of_a_slide_equals_the_same_crop(tmp_path, config):
    image = _disks((300, 360))
    pyramid = [image, image[::2, ::2]]
    with tifffile.TiffWriter(tmp_path / "slide.tif") as tw:
        tw.write(pyramid[0], tile=(64, 64), subifds=1, photometric="rgb", compression="zlib")
        tw.write(pyramid[1], tile=(64, 64), subfiletype=1, photometric="rgb", compression="zlib")
    predictor = api.load_predictor(config, allow_random_weights=True)
    x, y, w, h = 70, 45, 200, 180
    region = api.predict(
        tmp_path / "slide.tif", predictor=predictor, region=(x, y, w, h), tile=64, tile_overlap=24
    )
    crop = api.predict(np.ascontiguousarray(image[y : y + h, x : x + w]), predictor=predictor)
    assert _same_partition(region["instance_map"], crop["instance_map"])
    assert region["origin"] == (70.0, 45.0) and region["downsample"] == 1.0
    level1 = api.predict(tmp_path / "slide.tif", predictor=predictor, level=1)
    assert level1["instance_map"].shape == (150, 180) and level1["downsample"] == 2.0


def test_console_script_entries_find_the_tools(capsys):
    path = api.tool_path("predict")
    assert path.name == "predict.py" and path.is_file()
    assert api.run_tool("predict", ["--help"]) == 0
    assert "--tissue-mask" in capsys.readouterr().out
    assert api.run_tool("evaluate", ["--gt", "/nonexistent", "--pred", "/nonexistent"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="NUCLEIWEAK_TOOLS"):
        api.tool_path("no_such_tool")
