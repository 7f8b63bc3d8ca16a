"""The pseudo-box quality hook of the Feng pipeline (methods/feng2019/quality_hook.py)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from conftest import register_partial_mask_train  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.methods.feng2019.quality_hook import (  # noqa: E402
    PseudoBoxQualityHook,
    read_quality_curve,
)

REPO = Path(__file__).resolve().parents[1]
PARTIAL = REPO / "configs" / "quick" / "feng2019_partial_instant_test.yaml"


class _FakeModel(torch.nn.Module):
    """Pseudo-boxes fixed per threshold: [10,10,30,30] at every threshold, [50,50,70,70] below
    0.9 only; records which thresholds were asked and in which mode."""

    def __init__(self):
        super().__init__()
        self.centerness_head = SimpleNamespace(score_thresh=0.95)
        self.calls = []

    def pseudo_boxes(self, batched_inputs, score_threshs=None):
        self.calls.append((list(score_threshs), self.training))
        out = {}
        for t in score_threshs:
            boxes = [[10, 10, 30, 30]] + ([[50, 50, 70, 70]] if t < 0.9 else [])
            inst = Instances((100, 100))
            inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
            out[float(t)] = [inst]
        return out


RECORD = {
    "height": 100,
    "width": 100,
    "annotations": [
        {"bbox": [10, 10, 20, 20], "point_labeled": 0},  # found at every threshold
        {"bbox": [50, 50, 20, 20], "point_labeled": 0},  # found below 0.9 only
        {"bbox": [80, 0, 10, 10], "point_labeled": 1},  # annotated: not a target
    ],
}


def test_hook_measures_every_period_and_after_the_last_iteration(tmp_path):
    model = _FakeModel().train()
    path = tmp_path / "q.jsonl"
    hook = PseudoBoxQualityHook([RECORD], lambda r: {"height": 100, "width": 100}, 3, path, [0.5])
    hook.trainer = SimpleNamespace(model=model, iter=0, max_iter=7)
    done = []
    for it in range(7):
        hook.trainer.iter = it
        hook.after_step()
        done.append(it + 1)
    curve = read_quality_curve(path)
    assert [e["iter"] for e in curve] == [3, 6, 7]
    assert model.training and all(not training for _, training in model.calls)  # eval, restored
    assert model.calls[0][0] == [0.5, 0.95]  # its own threshold added, one call for both
    e = curve[0]
    assert e["score_thresh"] == 0.95
    assert (e["train"]["0.5"]["tp"], e["train"]["0.5"]["recall"]) == (2, 1.0)
    assert (e["train"]["0.95"]["tp"], e["train"]["0.95"]["recall"]) == (1, 0.5)
    assert e["train"]["0.95"]["num_unannotated"] == 2 and e["train"]["0.95"]["precision"] == 1.0


def test_read_quality_curve_keeps_the_last_entry_per_iteration(tmp_path):
    path = tmp_path / "q.jsonl"
    assert read_quality_curve(path) == []
    lines = [{"iter": 6, "v": 1}, {"iter": 3, "v": 2}, {"iter": 6, "v": 3}]  # resumed after 3
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert read_quality_curve(path) == [{"iter": 3, "v": 2}, {"iter": 6, "v": 3}]


def test_hook_refuses_a_period_of_zero(tmp_path):
    with pytest.raises(ValueError, match="period"):
        PseudoBoxQualityHook([RECORD], None, 0, tmp_path / "q.jsonl")


def _train(cfg_opts, out):
    from detectron2.utils.env import seed_all_rng

    from nucleiweak_d2.methods.feng2019.pipeline import NucleiWeakFeng2019Trainer

    seed_all_rng(3)  # Python, NumPy and torch: two runs of one config are then equal
    cfg = setup_cfg(str(PARTIAL), ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out), *cfg_opts])
    trainer = NucleiWeakFeng2019Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def test_quality_checks_leave_training_unchanged(synthetic_root, tmp_path):
    coco = register_partial_mask_train(synthetic_root, tmp_path, "feng2019_hook_train")
    data = ["DATASETS.TRAIN", "('feng2019_hook_train',)", "DATASETS.TEST", "()"]
    plain = _train(data, tmp_path / "plain")
    checked = _train(
        [
            *data,
            "NUCLEIWEAK.FENG2019.QUALITY_PERIOD",
            "1",
            "NUCLEIWEAK.FENG2019.QUALITY_THRESHOLDS",
            "[0.5]",
        ],
        tmp_path / "checked",
    )
    assert not (tmp_path / "plain" / "pseudo_box_quality.jsonl").exists()
    curve = read_quality_curve(tmp_path / "checked" / "pseudo_box_quality.jsonl")
    assert [e["iter"] for e in curve] == [1, 2] and set(curve[0]["train"]) == {"0.5", "0.95"}
    records = json.loads(Path(coco).read_text())["annotations"]
    unannotated = sum(1 for a in records if not a["point_labeled"] and not a.get("iscrowd", 0))
    assert curve[0]["train"]["0.5"]["num_unannotated"] == unannotated > 0
    a, b = plain.model.state_dict(), checked.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:  # the unfitted stain target buffer is NaN
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
