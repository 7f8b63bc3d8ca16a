"""tools/make_pseudo_labels.py on a tiny synthetic COCO dataset."""

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script  # noqa: E402
from PIL import Image

from nucleiweak_d2.pseudo_labels import IGNORE

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_pseudo_labels.py"


def _tool():
    return load_script("make_pseudo_labels", TOOL)


@pytest.fixture(scope="module")
def coco(synthetic_root, tmp_path_factory):
    from nucleiweak_d2.data.coco import export_coco_splits

    out = tmp_path_factory.mktemp("coco")
    return export_coco_splits(synthetic_root, out, splits=["train"])["train"], synthetic_root


def test_cli_writes_labels_and_overlays(coco, tmp_path):
    json_file, root = coco
    tool = _tool()
    out = tmp_path / "pl"
    argv = [
        str(json_file),
        "--image-root",
        str(root),
        "--out",
        str(out),
        "--kinds",
        "voronoi",
        "cluster",
        "geo_voronoi",
        "--workers",
        "2",
    ]
    assert tool.main(argv) == 0
    labels = sorted((out / "cluster").glob("*.png"))
    assert labels and len(labels) == len(list((out / "voronoi_overlay").glob("*.png")))
    from nucleiweak_d2.data.io import read_image

    img = read_image(root / "images" / f"{labels[0].stem}.png")
    lab = np.asarray(Image.open(labels[0]))
    ov = np.asarray(Image.open(out / "cluster_overlay" / labels[0].name))
    assert lab.shape == img.shape[:2] and set(np.unique(lab)) <= {0, 1, 2}
    np.testing.assert_array_equal(ov[lab == IGNORE], img[lab == IGNORE])
    assert np.all(ov[lab == 1][:, 1] >= img[lab == 1][:, 1])  # nucleus tinted green
    assert np.all(ov[lab == 0][:, 0] >= img[lab == 0][:, 0])  # background tinted red
    # second run refuses to overwrite, --overwrite replaces
    assert tool.main(argv) == 2  # bad input: the guard's exit code
    assert tool.main(argv[:-2] + ["--overwrite"]) == 0


def test_make_labels_without_points_is_all_ignore():
    from nucleiweak_d2.pseudo_labels.export import make_labels

    labels = make_labels(
        np.zeros((6, 7, 3), np.uint8), np.zeros((0, 2), int), ["voronoi", "geo_cluster"]
    )
    assert all(np.all(v == IGNORE) and v.shape == (6, 7) for v in labels.values())


def test_cli_refuses_images_sharing_a_stem(tmp_path):
    import json

    from nucleiweak_d2.data.io import write_image

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_image(tmp_path / sub / "x.png", np.full((16, 16, 3), 200, np.uint8))
    coco = {
        "images": [
            {"id": i, "file_name": f"{sub}/x.png", "height": 16, "width": 16}
            for i, sub in enumerate(("a", "b"), 1)
        ],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "point": [8, 8], "point_labeled": 1}
            for i in (1, 2)
        ],
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    rc = _tool().main([str(tmp_path / "c.json"), "--image-root", str(tmp_path), "--out", str(out)])
    assert rc == 2
    assert not out.exists() or not any(out.rglob("*.png"))
