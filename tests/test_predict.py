"""tools/predict.py and NucleiPredictor with a fake thresholding model (no training)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("detectron2")
import torch  # noqa: E402
from conftest import load_script  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.modeling import META_ARCH_REGISTRY  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.data.io import read_image, read_label, write_image  # noqa: E402
from nucleiweak_d2.data.synthetic import synthesize_image  # noqa: E402
from nucleiweak_d2.engine.predictor import (  # noqa: E402
    NucleiPredictor,
    stitch_instance_maps,
    stitch_points,
    tile_boxes,
)

TOOL = Path(__file__).resolve().parents[1] / "tools" / "predict.py"
THRESHOLD = 180.0  # red channel: synthetic nuclei < ~165, background > ~205


def _components(red, threshold=THRESHOLD):
    """What the fake model computes: 8-connected components of ``red < threshold``."""
    label, _ = ndimage.label(np.asarray(red) < threshold, structure=np.ones((3, 3)))
    return label.astype(np.int32)


def _centroids(label):
    ids = np.arange(1, label.max() + 1)
    if not ids.size:
        return np.zeros((0, 2))
    rows_cols = np.asarray(ndimage.center_of_mass(label > 0, label, ids)).reshape(-1, 2)
    return rows_cols[:, ::-1]  # (x, y)


class _FakeThreshold(torch.nn.Module):
    """Thresholds the red channel (found through cfg.INPUT.FORMAT) of each input image."""

    points = False

    def __init__(self, cfg):
        super().__init__()
        self.red = 0 if cfg.INPUT.FORMAT == "RGB" else 2
        self.threshold = torch.nn.Parameter(torch.tensor(THRESHOLD))

    @property
    def device(self):
        return self.threshold.device

    def forward(self, batched_inputs):
        assert not self.training and not torch.is_grad_enabled()
        outputs = []
        for x in batched_inputs:
            image = x["image"]
            assert image.dtype == torch.uint8 and image.shape[1:] == (x["height"], x["width"])
            label = _components(image[self.red].numpy(), float(self.threshold))
            out = {"instance_map": torch.from_numpy(label)}
            if self.points:  # continuous coordinates (pixel centre at +0.5)
                out["pred_points"] = torch.as_tensor(_centroids(label) + 0.5).float()
            outputs.append(out)
        return outputs


for _name, _points in (("NucleiWeakTestThreshold", False), ("NucleiWeakTestThresholdPoints", True)):
    if _name not in META_ARCH_REGISTRY:
        META_ARCH_REGISTRY.register(type(_name, (_FakeThreshold,), {"points": _points}))


def _tool():
    return load_script("nucleiweak_predict_tool", TOOL)


@pytest.fixture
def setup(tmp_path):
    """Two synthetic 96x96 images in a folder and a config naming the fake model."""
    in_dir = tmp_path / "images"
    images = {}
    for seed in (1, 2):
        image, _ = synthesize_image(size=(96, 96), seed=seed)
        write_image(in_dir / f"tile{seed}.png", image)
        images[f"tile{seed}"] = image
    config = tmp_path / "fake.yaml"
    config.write_text(
        "MODEL:\n  META_ARCHITECTURE: NucleiWeakTestThresholdPoints\n"
        "  DEVICE: cpu\nNUCLEIWEAK:\n  EVAL:\n    PRED_POINTS_OFFSET: 0.5\n"
    )
    return in_dir, config, images


def test_cli_end_to_end_files_and_values(setup, tmp_path):
    in_dir, config, images = setup
    out = tmp_path / "pred"
    written = _tool().main(
        [
            "--config-file",
            str(config),
            "--input",
            str(in_dir),
            "--output",
            str(out),
            "--allow-random-weights",
        ]
    )
    assert sorted(p.name for p in out.iterdir()) == [
        f"tile{s}_{k}" for s in (1, 2) for k in ("instances.png", "overlay.png", "points.csv")
    ]
    assert len(written) == 2
    for stem, image in images.items():
        expected = _components(image[..., 0])
        assert expected.max() >= 3  # the synthetic tiles do hold nuclei
        with Image.open(out / f"{stem}_instances.png") as im:
            assert im.mode.startswith("I;16")  # 16-bit PNG
        np.testing.assert_array_equal(read_label(out / f"{stem}_instances.png"), expected)
        overlay = read_image(out / f"{stem}_overlay.png")
        points = np.loadtxt(out / f"{stem}_points.csv", delimiter=",", skiprows=1, ndmin=2)
        np.testing.assert_allclose(points, _centroids(expected), atol=1e-3)  # offset removed
        contour = find_boundaries(expected, mode="inner") & (expected > 0)
        dots = np.zeros(expected.shape, bool)
        for x, y in np.rint(points).astype(int):
            dots[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = True
        assert (overlay[dots] == [255, 0, 0]).all()
        assert (overlay[contour & ~dots] == [0, 255, 0]).all()
        far = ~(contour | dots)
        np.testing.assert_array_equal(overlay[far], image[far])  # image untouched elsewhere


def test_cli_refuses_to_overwrite_and_glob_input(setup, tmp_path):
    in_dir, config, _ = setup
    out = tmp_path / "pred"
    tool = _tool()
    base = ["--config-file", str(config), "--output", str(out), "--allow-random-weights"]
    tool.main(base + ["--input", str(in_dir / "*1.png")])  # glob: tile1 only
    assert sorted(p.name for p in out.iterdir()) == [
        "tile1_instances.png",
        "tile1_overlay.png",
        "tile1_points.csv",
    ]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "tile1_points.csv").write_text("x,y\n1,1\n")
    with pytest.raises(
        ValueError, match="outputs already exist: .*tile1_instances.png.*--overwrite"
    ):
        tool.main(base + ["--input", str(in_dir)])
    assert not (out / "tile2_instances.png").exists()  # refused before any work
    assert (out / "tile1_points.csv").read_text() == "x,y\n1,1\n"
    # --overwrite with a model without points: outputs replaced, the stale points file removed.
    tool.main(
        base
        + [
            "--input",
            str(in_dir),
            "--overwrite",
            "--opts",
            "MODEL.META_ARCHITECTURE",
            "NucleiWeakTestThreshold",
        ]
    )
    assert not (out / "tile1_points.csv").exists()
    assert (out / "tile1_instances.png").read_bytes() == before["tile1_instances.png"]
    assert (out / "tile2_instances.png").is_file()
    with pytest.raises(ValueError, match="is the input folder"):
        tool.main(["--config-file", str(config), "--input", str(in_dir), "--output", str(in_dir)])


def test_cli_errors_name_the_input(tmp_path, setup):
    _, config, _ = setup
    missing = tmp_path / "nope" / "slide.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--config-file",
            str(config),
            "--input",
            str(missing),
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert f"error: input not found: {missing}" in proc.stderr
    tool = _tool()
    with pytest.raises(ValueError, match="no image file .* in pattern"):
        tool.main(
            [
                "--config-file",
                str(config),
                "--input",
                str(tmp_path / "*.tif"),
                "--output",
                str(tmp_path / "o"),
            ]
        )
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt is not an image file"):
        tool.main(
            [
                "--config-file",
                str(config),
                "--input",
                str(tmp_path / "notes.txt"),
                "--output",
                str(tmp_path / "o"),
            ]
        )
    assert not (tmp_path / "o").exists()


def test_predictor_format_and_weights(tmp_path):
    image, _ = synthesize_image(size=(64, 48), seed=3)
    arch = ["MODEL.META_ARCHITECTURE", "NucleiWeakTestThreshold", "MODEL.DEVICE", "cpu"]
    rgb = NucleiPredictor(setup_cfg(None, arch))(image)
    bgr = NucleiPredictor(setup_cfg(None, arch + ["INPUT.FORMAT", "BGR"]))(image)
    np.testing.assert_array_equal(rgb["instance_map"], _components(image[..., 0]))
    np.testing.assert_array_equal(bgr["instance_map"], rgb["instance_map"])
    assert rgb["points"] is None and "instance_map" in rgb["raw"]
    # MODEL.WEIGHTS is loaded: a checkpoint with threshold 120 changes the prediction.
    predictor = NucleiPredictor(setup_cfg(None, arch))
    predictor.model.threshold.data.fill_(120.0)
    DetectionCheckpointer(predictor.model, save_dir=str(tmp_path)).save("fake")
    loaded = NucleiPredictor(setup_cfg(None, arch + ["MODEL.WEIGHTS", str(tmp_path / "fake.pth")]))
    assert float(loaded.model.threshold.detach()) == 120.0
    np.testing.assert_array_equal(loaded(image)["instance_map"], _components(image[..., 0], 120.0))
    with pytest.raises(ValueError, match="MODEL.WEIGHTS file not found: .*missing.pth"):
        NucleiPredictor(setup_cfg(None, arch + ["MODEL.WEIGHTS", str(tmp_path / "missing.pth")]))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        rgb_predictor = NucleiPredictor(setup_cfg(None, arch))
        rgb_predictor(image.astype(np.float32))


def _disks(shape, centres, radius=4):
    image = np.full(shape + (3,), 230, np.uint8)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    for x, y in centres:
        image[(rows - y) ** 2 + (cols - x) ** 2 <= radius**2] = (60, 40, 150)
    return image


def _same_partition(a, b):
    """Same instances up to renumbering."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


def test_tiled_prediction_equals_whole_image():
    # Tiles of 48 with overlap 16 on 96x96: x and y starts 0, 32, 48. Disks straddle the
    # cut edges (x or y = 32, 48, 80) and lie in the corners and overlaps.
    centres = [
        (10, 10),
        (40, 10),
        (47, 47),
        (48, 80),
        (56, 60),
        (85, 88),
        (30, 70),
        (64, 40),
        (79, 20),
        (33, 90),
        (90, 33),
    ]
    image = _disks((96, 96), centres)
    arch = ["MODEL.META_ARCHITECTURE", "NucleiWeakTestThresholdPoints", "MODEL.DEVICE", "cpu"]
    cfg = setup_cfg(None, arch + ["NUCLEIWEAK.EVAL.PRED_POINTS_OFFSET", "0.5"])
    whole = NucleiPredictor(cfg)(image)
    tiled = NucleiPredictor(cfg, tile=48, tile_overlap=16)(image)
    assert whole["instance_map"].max() == len(centres)
    assert len(tiled["raw"]) == 9 and tiled["raw"][4]["box"] == (32, 32, 80, 80)
    assert _same_partition(tiled["instance_map"], whole["instance_map"])
    key = np.lexsort(tiled["points"].T)
    np.testing.assert_allclose(
        tiled["points"][key],
        np.asarray(centres, float)[np.lexsort(np.asarray(centres, float).T)],
        atol=1e-6,
    )
    assert NucleiPredictor(cfg, tile=96)(image)["raw"].keys() == whole["raw"].keys()


def test_stitch_keeps_each_nucleus_from_its_most_central_tile():
    shape = (12, 40)
    boxes = [(0, 0, 24, 12), (12, 0, 40, 12)]  # cut edges: x = 24 (tile 0), x = 12 (tile 1)
    t0 = np.zeros((12, 24), np.int32)
    t1 = np.zeros((12, 28), np.int32)
    t0[2:5, 2:5] = 1  # A: only in tile 0
    t0[2:6, 14:17] = 7  # B: gap 7 to x = 24 beats tile 1's copy (gap 2 to x = 12)
    t1[2:5, 14 - 12 : 17 - 12] = 3
    t0[6:9, 20:23] = 2  # C: gap 1 to x = 24 loses to tile 1's copy (gap 8)
    t1[6:11, 20 - 12 : 23 - 12] = 5
    t0[0:2, 22:24] = 9  # D: cut by x = 24; its whole copy in tile 1 wins
    t1[0:2, 22 - 12 : 27 - 12] = 6
    t1[5:9, 15 - 12 : 17 - 12] = 8  # E: 2 of its 8 pixels belong to B (kept first): kept
    out = stitch_instance_maps(shape, boxes, [t0, t1])
    expected = np.zeros(shape, np.int32)
    expected[2:5, 2:5] = 1
    expected[2:6, 14:17] = 2
    expected[6:11, 20:23] = 3
    expected[0:2, 22:27] = 4
    expected[6:9, 15:17] = 5  # free pixels only: row 5 stays with B
    assert _same_partition(out, expected)
    # An E with more than half of its pixels taken (4 of 6) is dropped.
    t1[5:9, 15 - 12 : 17 - 12] = 0
    t1[4:7, 15 - 12 : 17 - 12] = 8
    out = stitch_instance_maps(shape, boxes, [t0, t1])
    assert _same_partition(out, np.where(expected == 5, 0, expected))
    with pytest.raises(ValueError, match="tile 1 at .* instance map is 12x20, expected 12x28"):
        stitch_instance_maps(shape, boxes, [t0, t1[:, :20]])


def test_stitch_points_and_tile_boxes():
    shape = (10, 40)
    boxes = [(0, 0, 24, 10), (12, 0, 40, 10)]
    # Global (15, 4): margin 8 in tile 0, 3 in tile 1 -> tile 0. (21, 4): 2 vs 9 -> tile 1.
    p0 = np.array([[15.0, 4.0], [21.0, 4.0], [2.0, 1.0]])
    p1 = np.array([[15.4, 4.0], [21.0, 4.0], [27.0, 9.0]]) - [12, 0]
    out = stitch_points(shape, boxes, [p0, p1])
    assert sorted(map(tuple, out.tolist())) == [(2.0, 1.0), (15.0, 4.0), (21.0, 4.0), (27.0, 9.0)]
    assert stitch_points(shape, boxes, [None, None]) is None
    assert tile_boxes(10, 40, 24, 8) == [(0, 0, 24, 10), (16, 0, 40, 10)]
    assert tile_boxes(20, 20, 48, 16) == [(0, 0, 20, 20)]
    assert tile_boxes(96, 96, 48, 16)[:3] == [(0, 0, 48, 48), (32, 0, 80, 48), (48, 0, 96, 48)]
    with pytest.raises(ValueError, match="overlap must be in"):
        tile_boxes(96, 96, 48, 48)


def test_cli_tiles(setup, tmp_path):
    in_dir, config, images = setup
    _tool().main(
        [
            "--config-file",
            str(config),
            "--input",
            str(in_dir / "tile1.png"),
            "--output",
            str(tmp_path / "tiled"),
            "--tile",
            "64",
            "--tile-overlap",
            "48",
            "--allow-random-weights",
        ]
    )
    tiled = read_label(tmp_path / "tiled" / "tile1_instances.png")
    assert _same_partition(tiled, _components(images["tile1"][..., 0]))
    with pytest.raises(ValueError, match="overlap must be in"):
        _tool().main(
            [
                "--config-file",
                str(config),
                "--input",
                str(in_dir),
                "--output",
                str(tmp_path / "bad"),
                "--tile",
                "32",
                "--tile-overlap",
                "32",
            ]
        )


def test_note_points_to_the_run_config_beside_the_weights(tmp_path):
    """A run's model_final.yaml holds the post-processing chosen on val: predicting its
    model_final.pth with another config gets a note naming it; with it, or without one, none."""
    tool = load_script("nucleiweak_predict_note", TOOL)
    run = tmp_path / "run"
    run.mkdir()
    weights = run / "model_final.pth"
    weights.write_bytes(b"")
    other = tmp_path / "method.yaml"
    other.write_text("")
    assert tool.final_config_note(other, weights) is None  # no model_final.yaml
    (run / "model_final.yaml").write_text("")
    note = tool.final_config_note(other, weights)
    assert note.startswith(f"note: {(run / 'model_final.yaml').resolve()} is the config")
    assert tool.final_config_note(run / "model_final.yaml", weights) is None
    assert tool.final_config_note(other, "") is None
