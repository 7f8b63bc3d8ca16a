"""The QuPath correction loop without QuPath: predict -> GeoJSON -> corrected points ->
tools/prepare_dataset.py --points -> points-only COCO -> tools/evaluate.py (detection)."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("detectron2")
import torch  # noqa: E402
from conftest import load_script  # noqa: E402
from detectron2.modeling import META_ARCH_REGISTRY  # noqa: E402
from scipy import ndimage  # noqa: E402

from nucleiweak_d2.data.geojson import points_feature, rasterize_polygon, read_geojson_polygons  # noqa: E402
from nucleiweak_d2.data.io import read_label, write_image  # noqa: E402

TOOLS = Path(__file__).resolve().parents[1] / "tools"
ARCH = "QuPathRoundTripThreshold"


class _Threshold(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.threshold = torch.nn.Parameter(torch.tensor(180.0))

    @property
    def device(self):
        return self.threshold.device

    def forward(self, batched_inputs):
        return [
            {
                "instance_map": torch.from_numpy(
                    ndimage.label(
                        x["image"][0].numpy() < float(self.threshold), structure=np.ones((3, 3))
                    )[0].astype(np.int32)
                )
            }
            for x in batched_inputs
        ]


if ARCH not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(type(ARCH, (_Threshold,), {}))


def _tool(name):
    return load_script(f"roundtrip_{name}", TOOLS / f"{name}.py")


def _image(seed, shape=(90, 120)):
    rng = np.random.default_rng(seed)
    image = np.full(shape + (3,), 232, np.uint8)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    for y in range(12, shape[0] - 8, 22):
        for x in range(12, shape[1] - 8, 22):
            r = rng.uniform(4, 7)
            image[(rows - y - rng.uniform(-2, 2)) ** 2 + (cols - x) ** 2 <= r * r] = (80, 40, 140)
    return image


@pytest.fixture
def predicted(tmp_path):
    root = tmp_path / "data"
    for k in range(3):
        write_image(root / "images" / f"img{k}.png", _image(k))
    (root / "split.json").write_text(json.dumps({"train": ["img0", "img1"], "test": ["img2"]}))
    config = tmp_path / "fake.yaml"
    config.write_text(
        f"MODEL:\n  META_ARCHITECTURE: {ARCH}\n  DEVICE: cpu\nINPUT:\n  FORMAT: RGB\n"
    )
    pred = tmp_path / "pred"
    run = _tool("predict").main(
        [
            "--config-file",
            str(config),
            "--input",
            str(root / "images"),
            "--output",
            str(pred),
            "--outputs",
            "labels,geojson",
            "--allow-random-weights",
        ]
    )
    assert run.exit_code == 0 and len(run) == 3
    return root, pred


def test_correction_loop(predicted, tmp_path, capsys):
    root, pred = predicted
    clicks = tmp_path / "clicks"
    clicks.mkdir()
    truth = {}
    for k in (0, 1, 2):
        label = read_label(pred / f"img{k}_instances.png")
        polygons = read_geojson_polygons(pred / f"img{k}_nuclei.geojson")
        assert len(polygons) == label.max() > 10
        for rings, props in polygons:  # each polygon is its nucleus of the label map
            np.testing.assert_array_equal(
                rasterize_polygon(rings[0], label.shape), label == props["measurements"]["Label"]
            )
        if k == 1:
            continue  # not annotated: left out of the dataset
        # "in QuPath": the nuclei centres as points, one deleted (a false positive of the
        # model) and one added (a missed nucleus)
        centres = np.array([rings[0][:-1].mean(axis=0) for rings, _ in polygons])
        corrected = np.vstack([centres[1:], [[3.5, 80.5]]])
        truth[f"img{k}"] = corrected
        feature = points_feature(corrected)  # a QuPath "Points" annotation (MultiPoint)
        name = "img0.png.geojson" if k == 0 else "img2.geojson"  # both names are matched
        (clicks / name).write_text(json.dumps([feature]))  # QuPath's plain list of features
    out = tmp_path / "coco"
    assert (
        _tool("prepare_dataset").main(
            [str(root), "--points", str(clicks), "--out", str(out), "--weak-splits", "train"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "1 image(s) without a points file left out: img1" in printed
    train = json.loads((out / "train.json").read_text())
    test = json.loads((out / "test.json").read_text())
    assert train["info"]["nucleiweak"]["annotation"] == "points_only"
    assert [im["file_name"] for im in train["images"]] == ["images/img0.png"]
    points = np.array([a["point"] for a in train["annotations"]])
    np.testing.assert_array_equal(points, np.floor(truth["img0"]).astype(int))
    assert all("segmentation" not in a for a in train["annotations"] + test["annotations"])
    from nucleiweak_d2.data.coco import load_nuclei_coco

    records = load_nuclei_coco(out / "train.json", root)
    assert len(records[0]["annotations"]) == len(truth["img0"])
    # detection against the clicked points: one false positive, one miss
    summary = _tool("evaluate").main(
        [
            "--gt",
            str(out / "test.json"),
            "--pred",
            str(pred),
            "--radius",
            "4",
            "--output",
            str(tmp_path / "ev"),
        ]
    )
    n = len(truth["img2"])
    assert (summary["det_TP"], summary["det_FP"], summary["det_FN"]) == (n - 1, 1, 1)
    assert "AJI" not in summary
    assert "points-only ground truth: detection metrics only" in capsys.readouterr().out


def test_points_only_folder_dataset_is_scored(predicted, tmp_path):
    root, pred = predicted
    folder = tmp_path / "clicked"
    (folder / "images").mkdir(parents=True)
    (folder / "points").mkdir()
    label = read_label(pred / "img2_instances.png")
    write_image(folder / "images" / "img2.png", _image(2))
    centres = ndimage.center_of_mass(label > 0, label, range(1, label.max() + 1))
    rows = [f"{x:.1f},{y:.1f}" for y, x in centres]
    (folder / "points" / "img2.csv").write_text("X,Y\n" + "\n".join(rows) + "\n")
    summary = _tool("evaluate").main(["--gt", str(folder), "--pred", str(pred), "--radius", "3"])
    assert (summary["det_TP"], summary["det_FP"], summary["det_FN"]) == (label.max(), 0, 0)


def test_prepare_points_refusals(predicted, tmp_path):
    root, _ = predicted
    tool = _tool("prepare_dataset")
    stray = tmp_path / "stray.geojson"
    stray.write_text(json.dumps([points_feature([[1, 1]])]))
    with pytest.raises(ValueError, match="names no image"):
        tool.run([str(root), "--points", str(stray), "--out", str(tmp_path / "o")])
    (tmp_path / "many").mkdir()
    (tmp_path / "many" / "img0.csv").write_text("x,y\n1,1\n")
    (tmp_path / "many" / "img0.geojson").write_text(json.dumps([points_feature([[1, 1]])]))
    with pytest.raises(ValueError, match="two points files for image 'img0'"):
        tool.run([str(root), "--points", str(tmp_path / "many"), "--out", str(tmp_path / "o")])
    (tmp_path / "many" / "img0.csv").unlink()
    with pytest.raises(ValueError, match="'partial_mask' needs label maps|points-only"):
        tool.run(
            [
                str(root),
                "--points",
                str(tmp_path / "many"),
                "--annotation",
                "partial_mask",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    with pytest.raises(ValueError, match="outside it"):
        tool.run(
            [
                str(root),
                "--points",
                str(tmp_path / "many"),
                "--points-offset",
                "-500",
                "0",
                "--splits",
                "train",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    with pytest.raises(ValueError, match="split 'test' has no image with a points file"):
        tool.run([str(root), "--points", str(tmp_path / "many"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
