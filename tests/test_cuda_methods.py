"""Every learned method on CUDA (``gpu`` marker: deselected by ``./run test``, skipped without
CUDA): the quick benchmark trains, selects on val and scores each method with MODEL.DEVICE cuda,
and a UNet predictor gives the same outputs on CUDA as on the CPU."""

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
from conftest import load_script  # noqa: E402

from nucleiweak_d2 import api  # noqa: E402
from nucleiweak_d2.cli import run_cli  # noqa: E402

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]
LEARNED = ("qu2020", "feng2019", "liu2022", "nam2023", "wang2024")


@pytest.fixture(scope="module")
def cuda_rows(tmp_path_factory):
    """Rows of one quick benchmark of every learned method on ``cuda`` (method -> row)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path_factory.mktemp("cuda_bench")
    tool = load_script("nucleiweak_benchmark_tool_cuda", REPO / "tools" / "benchmark.py")
    argv = ["--quick", "--methods", *LEARNED, "--out", str(out), "--opts", "MODEL.DEVICE", "cuda"]
    assert run_cli(tool.main, argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return out, {row["key"][0]: row for row in rows}


@pytest.mark.parametrize("method", LEARNED)
def test_quick_benchmark_trains_and_scores_on_cuda(cuda_rows, method):
    out, rows = cuda_rows
    row = rows[method]
    assert row["device"].startswith("cuda")
    assert torch.cuda.get_device_name(0) in row["hardware"]
    for split, metrics in row["metrics"].items():
        assert math.isfinite(metrics["AJI"]) and 0.0 <= metrics["AJI"] <= 1.0, split
    weights = list((out / row["run_dir"]).rglob("model_final.pth"))
    assert weights, f"no model_final.pth under {row['run_dir']}"


def test_unet_predictor_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from nucleiweak_d2.data.synthetic import synthesize_image

    config = REPO / "configs" / "quick" / "qu2020_instant_test.yaml"
    image = synthesize_image((96, 128), seed=1)[0]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        outputs = {}
        for device in ("cpu", "cuda"):
            predictor = api.load_predictor(config, device=device, allow_random_weights=True)
            assert next(predictor.model.parameters()).device.type == device
            outputs[device] = predictor.run_model(image)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    for key in ("sem_seg", "prob"):
        cpu, cuda = outputs["cpu"][key], outputs["cuda"][key]
        assert cuda.device.type == "cuda" and cpu.shape == cuda.shape, key
        torch.testing.assert_close(cuda.cpu().float(), cpu.float(), atol=1e-3, rtol=1e-3)
