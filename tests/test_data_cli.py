"""Tests of the data CLIs: tools/make_synthetic.py, tools/prepare_dataset.py,
datasets/prepare_monuseg.py (on a hand-made Aperio XML + TIF)."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script  # noqa: E402

from nucleiweak_d2.data.io import read_image, read_label

REPO = Path(__file__).resolve().parents[1]


def _load(relpath):
    return load_script(Path(relpath).stem, REPO / relpath)


make_synthetic = _load("tools/make_synthetic.py")
prepare_dataset = _load("tools/prepare_dataset.py")
prepare_monuseg = _load("datasets/prepare_monuseg.py")


def test_synthetic_then_prepare_cli(tmp_path, capsys):
    root = tmp_path / "synth"
    assert make_synthetic.main([str(root), "--n-images", "4", "--size", "48", "48"]) == 0
    assert make_synthetic.main([str(root), "--n-images", "4", "--size", "48", "48"]) == 2
    assert "overwrite" in capsys.readouterr().err
    out = tmp_path / "coco"
    args = [str(root), "--out", str(out), "--ratio", "0.5", "--shift", "2-4", "--seed", "3"]
    assert prepare_dataset.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.json", "train.json", "val.json"]
    info = json.loads((out / "train.json").read_text())["info"]["nucleiweak"]
    assert info["ratio"] == 0.5 and info["shift"] == [2.0, 4.0] and info["seed"] == 3
    before = (out / "train.json").read_bytes()
    assert prepare_dataset.main(args[:-1] + ["4"]) == 2  # refuses silently replacing
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "train.json").read_bytes() == before
    assert prepare_dataset.main(args[:-1] + ["4", "--overwrite"]) == 0
    assert (out / "train.json").read_bytes() != before
    assert prepare_dataset.main([str(root), "--out", str(out), "--ratio", "2", "--overwrite"]) == 2
    assert "ratio" in capsys.readouterr().err


XML = """<?xml version="1.0" encoding="UTF-8"?>
<Annotations MicronsPerPixel="0.252">
<Annotation Id="1"><Regions>
<Region Id="1" Type="0"><Vertices>
<Vertex X="2" Y="2" Z="0"/><Vertex X="9" Y="2" Z="0"/><Vertex X="9" Y="7" Z="0"/><Vertex X="2" Y="7" Z="0"/>
</Vertices></Region>
<Region Id="2" Type="0"><Vertices>
<Vertex X="6" Y="4" Z="0"/><Vertex X="14" Y="4" Z="0"/><Vertex X="14" Y="10" Z="0"/><Vertex X="6" Y="10" Z="0"/>
</Vertices></Region>
<Region Id="3" Type="0"><Vertices>
<Vertex X="3" Y="3" Z="0"/><Vertex X="4" Y="3" Z="0"/><Vertex X="4" Y="4" Z="0"/><Vertex X="3" Y="4" Z="0"/>
</Vertices></Region>
</Regions></Annotation></Annotations>
"""


def test_prepare_monuseg_first_region_wins(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    src = tmp_path / "MoNuSeg 2018 Training Data"
    (src / "Tissue Images").mkdir(parents=True)
    (src / "Annotations").mkdir()
    image = np.random.default_rng(0).integers(0, 255, (16, 20, 3), dtype=np.uint8)
    tifffile.imwrite(src / "Tissue Images" / "TCGA-XX.tif", image)
    (src / "Annotations" / "TCGA-XX.xml").write_text(XML)
    out = tmp_path / "out"
    assert prepare_monuseg.main([str(src), str(out)]) == 0
    np.testing.assert_array_equal(read_image(out / "images" / "TCGA-XX.png"), image)
    label = read_label(out / "labels" / "TCGA-XX.png")
    expected = np.zeros((16, 20), dtype=np.int32)
    expected[2:8, 2:10] = 1  # pixel centres inside [2, 9] x [2, 7]
    sub = np.zeros_like(expected)
    sub[4:11, 6:15] = 2
    expected[(expected == 0) & (sub == 2)] = 2  # the first region keeps the overlap
    # region 3 lies inside region 1: it claims no pixel and is skipped
    np.testing.assert_array_equal(label, expected)
    assert not (out / "split.json").exists()  # not the 30 Kumar images
    assert prepare_monuseg.main([str(src), str(out)]) == 2
    assert prepare_monuseg.main([str(src), str(out), "--overwrite", "--one-based"]) == 0
    np.testing.assert_array_equal(read_label(out / "labels" / "TCGA-XX.png")[1:7, 1:9], 1)


def test_prepare_monuseg_errors(tmp_path):
    (tmp_path / "a.xml").write_text(XML)
    with pytest.raises(ValueError, match="a.xml has no image"):
        prepare_monuseg.find_pairs(tmp_path)
    (tmp_path / "b.xml").write_text("<Annotations><Region")
    with pytest.raises(ValueError, match="b.xml"):
        prepare_monuseg.read_regions(tmp_path / "b.xml")
    with pytest.raises(ValueError, match="no Aperio XML"):
        prepare_monuseg.find_pairs(tmp_path / "a.xml")
