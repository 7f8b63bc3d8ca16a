"""Two-iteration CPU smoke test of every stage of the Liu et al. pipeline on tiny synthetic data,
with --resume (nothing retrained) and --eval-only from the one final weights file."""

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_coco

import nucleiweak_d2.methods.liu2022  # noqa: F401  (registers the method before setup_cfg)
from nucleiweak_d2.config import setup_cfg
from nucleiweak_d2.engine import NUCLEIWEAK_PIPELINE_REGISTRY
from nucleiweak_d2.methods.liu2022 import NucleiWeakLiu2022Pipeline

QUICK = "configs/quick/liu2022_instant_test.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """4 synthetic 96x96 images (2 train / 1 val / 1 test), every point on train."""
    tmp = tmp_path_factory.mktemp("liu2022")
    make_tiny_coco(tmp, "liu2022_smoke", size=(96, 96), ratio=1.0)
    return tmp


def _cfg(out, opts=()):
    return setup_cfg(
        QUICK,
        [
            "DATASETS.TRAIN",
            "('liu2022_smoke_train',)",
            "DATASETS.TEST",
            "('liu2022_smoke_val',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            "['liu2022_smoke_test']",
            "OUTPUT_DIR",
            str(out),
            *opts,
        ],
    )


def test_full_pipeline_two_iterations_per_stage(tiny_dataset):
    out = tiny_dataset / "run"
    cfg = _cfg(
        out, ["NUCLEIWEAK.LIU2022.INFERENCE.BG_RULE_CANDIDATES", "['fragments', 'embedding']"]
    )
    assert (
        NUCLEIWEAK_PIPELINE_REGISTRY.get("NucleiWeakLiu2022Pipeline") is NucleiWeakLiu2022Pipeline
    )
    result = NucleiWeakLiu2022Pipeline(cfg).run()

    for stage in ("spn", "ien"):
        assert (out / stage / "model_final.pth").is_file(), stage
        assert (out / stage / "model_best.pth").is_file(), stage  # selected on val
    for stage in ("pseudo_labels", "spn", "spn_predict", "ien", "select_t0", "eval"):
        assert (out / stage / "stage_done.json").is_file(), stage
    assert len(list((out / "pseudo_labels" / "labels").glob("*.npz"))) == 2
    probs = sorted((out / "spn_predict" / "prob").glob("*.npz"))
    assert len(probs) == 2
    with np.load(probs[0]) as z:
        assert z["prob"].shape == (96, 96) and 0.0 <= z["prob"].min() <= z["prob"].max() <= 1.0
    assert len(list((out / "spn_predict" / "labels").glob("*.npz"))) == 2

    # T0 and the background rule chosen on val among the candidates, used by the final model
    chosen = json.loads((out / "select_t0" / "stage_done.json").read_text())["info"]
    assert chosen["t0"] in (0.3, 0.5) and chosen["bg_rule"] in ("fragments", "embedding")
    assert set(chosen["scores"]) == {
        f"{t}/{r}" for t in ("0.3", "0.5") for r in ("fragments", "embedding")
    }
    best = max(chosen["scores"].values())
    assert chosen["scores"][f"{chosen['t0']:g}/{chosen['bg_rule']}"] == best
    final_cfg, _, weights = NucleiWeakLiu2022Pipeline(cfg).final_model()
    assert final_cfg.NUCLEIWEAK.LIU2022.INFERENCE.T0 == chosen["t0"]
    assert final_cfg.NUCLEIWEAK.LIU2022.INFERENCE.BG_RULE == chosen["bg_rule"]
    assert result["inference"] == {
        "T0": chosen["t0"],
        "BG_RULE": chosen["bg_rule"],
        "T0_from": "val (select_t0)",
    }

    seg = result["segmentation"]["liu2022_smoke_test"]["nuclei"]
    assert 0.0 <= seg["AJI"] <= 1.0 and 0.0 <= seg["pixel_F1"] <= 1.0
    # the Table 2 ablation "SPN": the selected SPN alone, on val and the eval sets
    spn_alone = result["spn_alone"]
    assert set(spn_alone) == {"liu2022_smoke_val", "liu2022_smoke_test"}
    for metrics in spn_alone.values():
        assert 0.0 <= metrics["AJI"] <= 1.0 and "pixel_F1" in metrics
    assert (out / "eval" / "spn_alone" / "liu2022_smoke_test").is_dir()
    # the eval stage's model remembers its groupings (eval sets that share images)
    from nucleiweak_d2.methods.liu2022.grouping import MemoClusterer

    prepared = NucleiWeakLiu2022Pipeline(cfg).prepare_eval_model(torch.nn.Module())
    assert isinstance(prepared.clusterer, MemoClusterer)
    # the final model is the IEN stage's checkpoint kept on val: SPN and IEN in one file
    assert result["weights"] == weights == str(out / "ien" / "model_best.pth")
    state = torch.load(out / "model_final.pth", map_location="cpu")["model"]
    assert {k.split(".")[0] for k in state} == {"spn", "ien"}
    assert any(k.startswith("ien.coord_conv.") for k in state)
    # the SPN was frozen in the IEN stage: its weights are the SPN stage's selected ones
    spn = torch.load(out / "spn" / "model_best.pth", map_location="cpu")["model"]
    for k, v in spn.items():
        # exact, NaN == NaN (an unfitted stain target)
        assert torch.allclose(state["spn." + k], v, rtol=0, atol=0, equal_nan=True), k

    # --resume of a finished run: nothing retrained or rewritten, the same summary
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = NucleiWeakLiu2022Pipeline(cfg, resume=True).run()
    changed = [p for p in out.rglob("*") if p.is_file() and stamps.get(p) != p.stat().st_mtime_ns]
    assert {p.name for p in changed} <= {
        "metrics.json",
        "summary.md",
        "model_final.pth",
        "model_final.yaml",
    }
    assert again["segmentation"] == result["segmentation"]

    # --eval-only from a new folder with MODEL.WEIGHTS = the one final file (T0 from the config)
    fresh = tiny_dataset / "eval_elsewhere"
    t0 = str(chosen["t0"])
    ev = NucleiWeakLiu2022Pipeline(
        _cfg(
            fresh,
            [
                "MODEL.WEIGHTS",
                str(out / "model_final.pth"),
                "NUCLEIWEAK.LIU2022.INFERENCE.T0",
                t0,
                "NUCLEIWEAK.LIU2022.INFERENCE.BG_RULE",
                chosen["bg_rule"],
            ],
        ),
        eval_only=True,
    ).run()
    assert ev["segmentation"]["liu2022_smoke_test"]["nuclei"]["AJI"] == pytest.approx(seg["AJI"])
    assert ev["inference"] == {
        "T0": chosen["t0"],
        "BG_RULE": chosen["bg_rule"],
        "T0_from": "config",
    }
    assert "spn_alone" not in ev  # scoring one final model file has no SPN stage to ablate
    assert not (fresh / "spn").exists()


def test_resume_reruns_only_the_unfinished_stage(tiny_dataset):
    """Stop after ``spn_predict`` (simulated by removing the later records): the SPN, its
    probabilities and the pseudo-labels are reused byte for byte. (This run also starts the
    IEN from the selected SPN, ``IEN.INIT_FROM_SPN``.)"""
    out = tiny_dataset / "run_resume"
    opts = ["NUCLEIWEAK.LIU2022.INFERENCE.T0_CANDIDATES", "[]"]
    cfg = _cfg(out, [*opts, "NUCLEIWEAK.LIU2022.IEN.INIT_FROM_SPN", "True"])
    first = NucleiWeakLiu2022Pipeline(cfg).run()
    spn_weights = str(out / "spn" / "model_best.pth")
    assert NucleiWeakLiu2022Pipeline(cfg).ien_cfg()[1].model_overrides == {
        "spn_weights": spn_weights,
        "ien_weights": spn_weights,
    }
    plain = NucleiWeakLiu2022Pipeline(_cfg(out, opts)).ien_cfg()[1].model_overrides
    assert plain == {"spn_weights": spn_weights, "ien_weights": ""}
    kept = {
        p: (p.stat().st_mtime_ns, p.read_bytes())
        for p in [out / "spn" / "model_best.pth"]
        + sorted((out / "spn_predict").rglob("*.npz"))
        + sorted((out / "pseudo_labels" / "labels").glob("*.npz"))
    }
    (out / "ien" / "stage_done.json").unlink()  # the IEN stage was interrupted
    (out / "eval" / "stage_done.json").unlink()
    second = NucleiWeakLiu2022Pipeline(cfg, resume=True).run()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == kept
    assert not (out / "select_t0").exists()
    assert second["segmentation"]["liu2022_smoke_test"]["nuclei"]["AJI"] == pytest.approx(
        first["segmentation"]["liu2022_smoke_test"]["nuclei"]["AJI"]
    )
