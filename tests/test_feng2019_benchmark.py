"""benchmarks/feng2019_monuseg.py on synthetic data: crop baseline data, seeding, threshold sweep."""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from conftest import load_script  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402

import nucleiweak_d2.methods  # noqa: E402,F401  (registration)
from nucleiweak_d2.config import setup_cfg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARTIAL = REPO / "configs" / "quick" / "feng2019_partial_instant_test.yaml"
LOGGER = logging.getLogger("test_feng2019_benchmark")


@pytest.fixture(scope="module")
def bench():
    return load_script("feng2019_monuseg_bench", REPO / "benchmarks" / "feng2019_monuseg.py")


def test_crop_baseline_data_is_fully_annotated_quarter_of_each_image(
    bench, synthetic_root, tmp_path
):
    from nucleiweak_d2.data.folder import load_folder_dataset
    from nucleiweak_d2.data.io import read_label
    from nucleiweak_d2.methods.feng2019.crops import crop_seed, crop_window

    name, n_nuclei = bench.prepare_crop_data(synthetic_root, tmp_path, 0.25, 0)
    records = DatasetCatalog.get(name)
    samples = {s["name"]: s for s in load_folder_dataset(synthetic_root, "train")}
    assert len(records) == len(samples) == 3
    assert sum(len(r["annotations"]) for r in records) == n_nuclei > 0
    for r in records:
        stem = Path(r["file_name"]).stem
        assert (r["height"], r["width"]) == (64, 64)  # 25 % of 128x128
        assert all(a["point_labeled"] for a in r["annotations"])  # every nucleus annotated
        y0, x0, h, w = crop_window(128, 128, 0.25, np.random.default_rng(crop_seed(0, stem)))
        window = read_label(samples[stem]["label_path"])[y0 : y0 + h, x0 : x0 + w]
        assert len(r["annotations"]) == len(np.unique(window[window > 0]))
        assert np.array_equal(read_label(r["label_file_name"]) > 0, window > 0)


def _cfg(names, seed):
    return setup_cfg(
        str(PARTIAL),
        [
            "MODEL.DEVICE",
            "cpu",
            "DATASETS.TRAIN",
            f"('{names['train']}',)",
            "DATASETS.TEST",
            "()",
            "SEED",
            str(seed),
            "SOLVER.MAX_ITER",
            "2",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.0",
        ],
    )


def test_training_is_seeded_quality_is_monitored_and_the_sweep_matches_the_evaluator(
    bench, synthetic_root, tmp_path
):
    from detectron2.evaluation import inference_on_dataset

    from nucleiweak_d2.engine.trainer import Trainer
    from nucleiweak_d2.evaluation.evaluator import build_nuclei_evaluator

    names = bench.prepare_data(synthetic_root, tmp_path, 0.25, 0, ["val"])
    cfg = _cfg(names, 5)
    monitor = bench.PseudoBoxMonitor(cfg, names["train"], names["val"], [0.3, 0.6], LOGGER)
    np.random.seed(1)  # other global states before each run must not matter
    first, iters, _ = bench.train_for(cfg, math.inf, 2, LOGGER, monitor, period=1)
    np.random.seed(2)
    again = bench.PseudoBoxMonitor(cfg, names["train"], names["val"], [0.3, 0.6], LOGGER)
    second, _, _ = bench.train_for(cfg, math.inf, 2, LOGGER, again, period=1)
    assert iters == 2
    a, b = first.state_dict(), second.state_dict()
    # same seed, same data order and weights (the unfitted stain target buffer is NaN)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
    assert json.dumps(again.curve) == json.dumps(monitor.curve)  # (NaN-safe comparison)
    # the quality curve: one entry per period, thresholds chosen among the candidates on val
    assert [e["iter"] for e in monitor.curve] == [1, 2]
    last = monitor.curve[-1]
    assert last["score_thresh"] == first.centerness_head.score_thresh
    assert last["score_thresh"] in (0.3, 0.6)
    assert set(last["val"]) == {"0.3", "0.6"} and set(last["train"]) == {"0.3", "0.6"}
    total = sum(
        len(r["annotations"]) - sum(x["point_labeled"] for x in r["annotations"])
        for r in DatasetCatalog.get(names["train"])
    )
    assert last["train"]["0.3"]["num_unannotated"] == total > 0
    # one inference scored at several thresholds; 0.0 is exactly the evaluator's default
    scores, _ = bench.score_dataset(first, cfg, names["val"], [0.0, 0.99], "score", 0.5)
    reference = inference_on_dataset(
        first,
        Trainer.build_test_loader(cfg, names["val"]),
        build_nuclei_evaluator(cfg, names["val"], str(tmp_path / "ev")),
    )["nuclei"]
    assert scores[0.0]["AJI"] == pytest.approx(reference["AJI"]) and scores[0.0][
        "PQ"
    ] == pytest.approx(reference["PQ"])
    assert scores[0.0] == pytest.approx(reference, nan_ok=True)
    assert scores[0.99] != scores[0.0]


def test_selection_and_summary_helpers(bench):
    assert bench._best({0.0: 0.4, 0.5: 0.6, 0.7: 0.6, 0.9: None}) == 0.5  # ties: first
    assert bench._best({0.3: float("nan"), 0.6: None}) == 0.3
    runs = {0: {"partial": {"AJI": 0.5, "iters": 10}}, 1: {"partial": {"AJI": 0.7, "iters": 10}}}
    summary = bench.summarise(runs, ["partial"])
    assert summary["partial"]["AJI"] == {
        "mean": pytest.approx(0.6),
        "std": pytest.approx(0.1),
        "n": 2,
    }
    assert bench._finite({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}
    args = bench.parse_args(["--ratio", "0.5", "--seeds", "0", "1", "2", "--iters", "100"])
    assert args.models == ["baseline", "baseline_crop", "partial", "baseline_full"]
    assert args.seeds == [0, 1, 2] and args.iters == 100 and args.ratio == 0.5
