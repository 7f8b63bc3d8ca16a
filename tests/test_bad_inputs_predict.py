"""tools/predict.py on bad input: weights, unreadable images, reruns, huge label maps.

Uses small fake models (a red-channel threshold, a one-id-per-pixel model) registered here,
so nothing is trained.
"""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("detectron2")
import torch  # noqa: E402
from conftest import load_script  # noqa: E402
from detectron2.modeling import META_ARCH_REGISTRY  # noqa: E402
from scipy import ndimage  # noqa: E402

from nucleiweak_d2.data.io import read_label, write_image  # noqa: E402
from nucleiweak_d2.data.synthetic import synthesize_image  # noqa: E402

TOOL = Path(__file__).resolve().parents[1] / "tools" / "predict.py"
THRESHOLD = "BadInputsTestThreshold"
PER_PIXEL = "BadInputsTestPerPixel"


class _Threshold(torch.nn.Module):
    """Connected components of ``red < threshold``; an unused BatchNorm gives buffers."""

    def __init__(self, cfg):
        super().__init__()
        self.threshold = torch.nn.Parameter(torch.tensor(180.0))
        self.norm = torch.nn.BatchNorm2d(1)

    @property
    def device(self):
        return self.threshold.device

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            red = x["image"][0].numpy()
            label, _ = ndimage.label(red < float(self.threshold))
            outputs.append({"instance_map": torch.from_numpy(label.astype(np.int32))})
        return outputs


class _PerPixel(_Threshold):
    """Every pixel its own nucleus: H * W instances."""

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            h, w = x["image"].shape[1:]
            ids = torch.arange(1, h * w + 1, dtype=torch.int32).reshape(h, w)
            outputs.append({"instance_map": ids})
        return outputs


for _name, _cls in ((THRESHOLD, _Threshold), (PER_PIXEL, _PerPixel)):
    if _name not in META_ARCH_REGISTRY:
        META_ARCH_REGISTRY.register(type(_name, (_cls,), {}))


def _tool():
    return load_script("predict_tool_bad_inputs", TOOL)


def _snapshot(root):
    return {p.name: p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def _mtimes(root):
    return {p.name: p.stat().st_mtime_ns for p in Path(root).iterdir()}


@pytest.fixture
def setup(tmp_path):
    """Three 64x64 synthetic images, a config of the threshold model and its checkpoint."""
    in_dir = tmp_path / "images"
    for seed in (1, 2, 3):
        write_image(in_dir / f"tile{seed}.png", synthesize_image(size=(64, 64), seed=seed)[0])
    config = tmp_path / "fake.yaml"
    config.write_text(f"MODEL:\n  META_ARCHITECTURE: {THRESHOLD}\n  DEVICE: cpu\n")
    weights = tmp_path / "fake.pth"
    model = _Threshold(None)
    model.threshold.data.fill_(170.0)
    torch.save({"model": model.state_dict()}, weights)
    return in_dir, config, weights


def _args(config, in_dir, out, *extra):
    return ["--config-file", str(config), "--input", str(in_dir), "--output", str(out), *extra]


def test_no_weights_is_refused_unless_allowed(setup, tmp_path, capsys):
    in_dir, config, _ = setup
    tool = _tool()
    out = tmp_path / "pred"
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty.*--allow-random-weights"):
        tool.main(_args(config, in_dir, out))
    assert not out.exists()
    from nucleiweak_d2.cli import run_cli

    assert run_cli(tool.main, _args(config, in_dir, out)) == 2
    assert capsys.readouterr().err.startswith("error: MODEL.WEIGHTS is empty")
    assert len(tool.main(_args(config, in_dir, out, "--allow-random-weights"))) == 3


def test_weights_of_another_model_are_refused(setup, tmp_path):
    in_dir, config, _ = setup
    other = tmp_path / "other.pth"
    torch.save({"model": torch.nn.Linear(4, 2).state_dict()}, other)
    out = tmp_path / "pred"
    with pytest.raises(
        ValueError,
        match=(
            rf"MODEL.WEIGHTS {other} does not fit the model of this config: 5 model key\(s\) "
            r"missing from it \(threshold, norm.weight, norm.bias and 2 more\); 2 key\(s\) "
            r"unknown to the model \(weight, bias\)"
        ),
    ):
        _tool().main(_args(config, in_dir, out, "--opts", "MODEL.WEIGHTS", str(other)))
    assert not out.exists()


def test_weights_of_another_shape_are_refused(setup, tmp_path):
    in_dir, config, _ = setup
    state = _Threshold(None).state_dict()
    state["threshold"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save({"model": state}, bad)
    with pytest.raises(
        ValueError,
        match=r"1 tensor\(s\) of another shape \(threshold \(3,\) "
        r"vs model \(\)\)",
    ):
        _tool().main(_args(config, in_dir, tmp_path / "pred", "--opts", "MODEL.WEIGHTS", str(bad)))
    assert not (tmp_path / "pred").exists()


def test_load_trained_weights(setup, tmp_path):
    from nucleiweak_d2.engine.predictor import load_trained_weights

    _, _, weights = setup
    model = _Threshold(None)
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        load_trained_weights(model, "")
    load_trained_weights(model, "", allow_random=True)
    state = torch.load(weights)["model"]
    del state["norm.num_batches_tracked"]  # an ignorable buffer
    torch.save(state, tmp_path / "plain.pth")  # a bare state dict is accepted too
    load_trained_weights(model, str(tmp_path / "plain.pth"))
    assert float(model.threshold.detach()) == 170.0
    broken = tmp_path / "broken.pth"
    broken.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"cannot load MODEL.WEIGHTS {broken}: "):
        load_trained_weights(model, str(broken))


def test_unreadable_image_is_skipped_and_reported(setup, tmp_path, capsys):
    in_dir, config, weights = setup
    data = (in_dir / "tile2.png").read_bytes()
    (in_dir / "tile2.png").write_bytes(data[: len(data) // 2])  # truncated
    out = tmp_path / "pred"
    run = _tool().main(_args(config, in_dir, out, "--opts", "MODEL.WEIGHTS", str(weights)))
    assert sorted(Path(p).name for p in run) == ["tile1.png", "tile3.png"]
    assert run.exit_code == 1 and [Path(p).name for p, _ in run.failed] == ["tile2.png"]
    assert not list(out.glob("tile2*"))
    err = capsys.readouterr().err
    assert "error: 1 image(s) failed and have no outputs:" in err
    assert f"cannot read {in_dir / 'tile2.png'}" in err.split("failed and have no outputs:")[1]
    from nucleiweak_d2.cli import run_cli

    assert (
        run_cli(
            _tool().main,
            _args(config, in_dir, tmp_path / "again", "--opts", "MODEL.WEIGHTS", str(weights)),
        )
        == 1
    )


def test_skip_existing_resumes_and_partial_outputs_are_refused(setup, tmp_path, capsys):
    in_dir, config, weights = setup
    tool = _tool()
    out = tmp_path / "pred"
    opts = ["--opts", "MODEL.WEIGHTS", str(weights)]
    tool.main(_args(config, in_dir / "tile1.png", out, *opts))
    first = _mtimes(out)
    with pytest.raises(
        ValueError, match="outputs already exist: .*tile1_instances.png.*--skip-existing"
    ):
        tool.main(_args(config, in_dir, out, *opts))
    run = tool.main(_args(config, in_dir, out, "--skip-existing", *opts))
    assert [Path(p).name for p in run.skipped] == ["tile1.png"]
    assert sorted(Path(p).name for p in run) == ["tile2.png", "tile3.png"]
    assert f"skipped {in_dir / 'tile1.png'}: its outputs exist" in capsys.readouterr().out
    assert all(_mtimes(out)[name] == t for name, t in first.items())  # not rewritten
    # an interrupted image (overlay but no instance map) needs --overwrite as well
    (out / "tile3_instances.png").unlink()
    before = _snapshot(out)
    with pytest.raises(
        ValueError,
        match=r"incomplete outputs of an earlier run: "
        r".*tile3_overlay.png.*--overwrite",
    ):
        tool.main(_args(config, in_dir, out, "--skip-existing", *opts))
    assert _snapshot(out) == before
    run = tool.main(_args(config, in_dir, out, "--skip-existing", "--overwrite", *opts))
    assert sorted(Path(p).name for p in run) == ["tile3.png"]
    assert (out / "tile3_instances.png").is_file()


def test_more_than_65535_nuclei_are_written_as_32bit_tiff(tmp_path, capsys):
    image = tmp_path / "images" / "dense.png"
    write_image(image, np.full((256, 257, 3), 200, np.uint8))  # 65 792 one-pixel nuclei
    config = tmp_path / "many.yaml"
    config.write_text(f"MODEL:\n  META_ARCHITECTURE: {PER_PIXEL}\n  DEVICE: cpu\n")
    tool = _tool()
    assert "65535" in tool.build_parser().format_help()
    out = tmp_path / "pred"
    tool.main(_args(config, image, out, "--allow-random-weights"))
    assert sorted(p.name for p in out.iterdir()) == ["dense_instances.tif", "dense_overlay.png"]
    label = read_label(out / "dense_instances.tif")
    np.testing.assert_array_equal(label, np.arange(1, 256 * 257 + 1).reshape(256, 257))
    # a rerun with a model finding fewer nuclei replaces the TIFF by a PNG
    (tmp_path / "few.yaml").write_text(f"MODEL:\n  META_ARCHITECTURE: {THRESHOLD}\n  DEVICE: cpu\n")
    tool.main(_args(tmp_path / "few.yaml", image, out, "--allow-random-weights", "--overwrite"))
    assert sorted(p.name for p in out.iterdir()) == ["dense_instances.png", "dense_overlay.png"]
    assert f"removed {out / 'dense_instances.tif'}" in capsys.readouterr().out


def test_an_interrupted_write_leaves_no_half_file(setup, tmp_path, monkeypatch):
    in_dir, config, weights = setup
    import nucleiweak_d2.data.io as io

    def half_write(path, image):
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(io, "write_image", half_write)
    out = tmp_path / "pred"
    with pytest.raises(OSError, match="disk full"):
        _tool().main(
            _args(config, in_dir / "tile1.png", out, "--opts", "MODEL.WEIGHTS", str(weights))
        )
    assert sorted(p.name for p in out.iterdir()) == []  # no overlay, no temporary file
