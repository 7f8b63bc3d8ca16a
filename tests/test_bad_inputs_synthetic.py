"""tools/make_synthetic.py and make_synthetic_dataset never delete a file they did not write.

Each refusal must leave every file of the folder byte-identical.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script  # noqa: E402

from nucleiweak_d2.data.io import write_image, write_label

REPO = Path(__file__).resolve().parents[1]
MANIFEST = ".nucleiweak_synthetic.json"
SMALL = ["--n-images", "3", "--size", "32", "32", "--seed", "1"]


def _tool():
    return load_script("make_synthetic_tool", REPO / "tools" / "make_synthetic.py")


def _snapshot(root):
    """Every file under ``root`` (hidden ones too) with its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()
    }


def _real_dataset(root):
    """A user's dataset in the folder layout (as prepare_monuseg writes it)."""
    rng = np.random.default_rng(0)
    for name in ("slide_a", "slide_b"):
        write_image(root / "images" / f"{name}.png", rng.integers(0, 255, (20, 20, 3), np.uint8))
        write_label(root / "labels" / f"{name}.png", rng.integers(0, 9, (20, 20)))
    (root / "split.json").write_text(json.dumps({"train": ["slide_a"], "test": ["slide_b"]}))
    return _snapshot(root)


def test_overwrite_refuses_a_real_dataset_and_deletes_nothing(tmp_path, capsys):
    root = tmp_path / "monuseg"
    before = _real_dataset(root)
    assert _tool().main([str(root), "--overwrite"] + SMALL) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"{root / 'images' / 'slide_a.png'} and 4 more not written by make_synthetic" in err
    assert _snapshot(root) == before


def test_overwrite_deletes_only_the_files_of_its_manifest(tmp_path, capsys):
    root = tmp_path / "synth"
    tool = _tool()
    assert tool.main([str(root)] + SMALL) == 0
    manifest = json.loads((root / MANIFEST).read_text())["files"]
    assert sorted(manifest) == sorted(p for p in _snapshot(root) if p != MANIFEST)
    # a user file dropped into images/ blocks --overwrite; nothing is deleted
    write_image(root / "images" / "mine.png", np.full((8, 8, 3), 7, np.uint8))
    before = _snapshot(root)
    assert tool.main([str(root), "--overwrite"] + SMALL) == 2
    err = capsys.readouterr().err
    assert f"{root / 'images' / 'mine.png'} not written by make_synthetic" in err
    assert _snapshot(root) == before
    # without it: fewer images replace the old ones; a file outside the layout is kept
    (root / "images" / "mine.png").unlink()
    (root / "notes.txt").write_text("my notes")
    assert tool.main([str(root), "--overwrite", "--n-images", "2", "--size", "32", "32"]) == 0
    after = _snapshot(root)
    assert after["notes.txt"] == b"my notes"
    assert sorted(after) == sorted(
        [MANIFEST, "notes.txt", "split.json"]
        + [f"{d}/synth_{i:03d}.png" for d in ("images", "labels") for i in range(2)]
    )
    assert sorted(json.loads(after[MANIFEST])["files"]) == sorted(
        p for p in after if p not in (MANIFEST, "notes.txt")
    )


def test_a_file_changed_after_writing_is_not_deleted(tmp_path, capsys):
    root = tmp_path / "synth"
    tool = _tool()
    assert tool.main([str(root)] + SMALL) == 0
    write_label(root / "labels" / "synth_001.png", np.ones((32, 32), np.int32))  # hand-edited
    before = _snapshot(root)
    assert tool.main([str(root), "--overwrite"] + SMALL) == 2
    assert f"{root / 'labels' / 'synth_001.png'} changed after" in capsys.readouterr().err
    assert _snapshot(root) == before


def test_a_manifest_naming_other_files_deletes_nothing(tmp_path, capsys):
    root = tmp_path / "synth"
    tool = _tool()
    assert tool.main([str(root)] + SMALL) == 0
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    doc = json.loads((root / MANIFEST).read_text())
    doc["files"]["../precious.txt"] = None
    (root / MANIFEST).write_text(json.dumps(doc))
    before = _snapshot(tmp_path)
    assert tool.main([str(root), "--overwrite"] + SMALL) == 2
    assert "'../precious.txt', outside" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_bad_arguments_change_nothing(tmp_path):
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "synth", n_images=2, size=(32, 32), seed=1)
    before = _snapshot(root)
    with pytest.raises(ValueError, match="radius_range"):
        make_synthetic_dataset(root, n_images=2, size=(32, 32), overwrite=True, radius_range=(5, 2))
    with pytest.raises(ValueError, match="size"):
        make_synthetic_dataset(root, n_images=2, size=(8, 8), overwrite=True)
    assert _snapshot(root) == before


def test_an_interrupted_run_can_be_replaced(tmp_path, monkeypatch):
    from nucleiweak_d2.data import synthetic

    calls = []

    def crash_on_second(path, label):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        write_label(path, label)

    monkeypatch.setattr(synthetic, "write_label", crash_on_second)
    root = tmp_path / "synth"
    with pytest.raises(OSError, match="disk full"):
        synthetic.make_synthetic_dataset(root, n_images=3, size=(32, 32), seed=1)
    monkeypatch.undo()
    assert (root / "images" / "synth_001.png").exists()  # written by the interrupted run
    with pytest.raises(FileExistsError, match="--overwrite"):
        synthetic.make_synthetic_dataset(root, n_images=3, size=(32, 32), seed=1)
    synthetic.make_synthetic_dataset(root, n_images=3, size=(32, 32), seed=1, overwrite=True)
    assert all(v is not None for v in json.loads((root / MANIFEST).read_text())["files"].values())
