"""Training refuses data that would train or score the wrong thing, and resumes bit for bit."""

import json

import pytest
from conftest import make_tiny_coco

pytest.importorskip("detectron2")

import torch  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.engine import Trainer  # noqa: E402

QUICK = "configs/quick/qu2020_instant_test.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny synthetic set: train (50 % points), val, test; plus a copy of train with no points."""
    from nucleiweak_d2.data.datasets import register_nuclei_dataset

    tmp = tmp_path_factory.mktemp("train_checks")
    root, files, _ = make_tiny_coco(tmp, "tc", size=(96, 96), ratio=0.5)
    coco = json.loads(files["train"].read_text())
    for ann in coco["annotations"]:
        ann["point_labeled"] = 0
    (tmp / "nopoints.json").write_text(json.dumps(coco))
    register_nuclei_dataset("tc_nopoints", tmp / "nopoints.json", root)
    return tmp


def _cfg(out, train="tc_train", test="tc_val", opts=()):
    return setup_cfg(
        QUICK,
        [
            "MODEL.META_ARCHITECTURE",
            "NucleiWeakUNetPointDetector",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "1",
            "NUCLEIWEAK.MAPPER",
            "NucleiWeakQu2020DetMapper",
            "DATASETS.TRAIN",
            f"('{train}',)",
            "DATASETS.TEST",
            f"('{test}',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            "[]",
            "TEST.EVAL_PERIOD",
            "0",
            "OUTPUT_DIR",
            str(out),
            *opts,
        ],
    )


def test_training_without_annotated_points_is_refused(data):
    with pytest.raises(ValueError, match="no annotated points"):
        Trainer(_cfg(data / "nopoints", train="tc_nopoints"))
    assert not (data / "nopoints").exists()


def test_image_in_train_and_test_is_refused(data):
    with pytest.raises(ValueError, match="in both 'tc_train' and 'tc_nopoints'"):
        Trainer(_cfg(data / "overlap", test="tc_nopoints"))  # the same images as train


def _train(cfg, resume=False):
    from detectron2.utils.env import seed_all_rng

    seed_all_rng(cfg.SEED)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return torch.load(f"{cfg.OUTPUT_DIR}/model_final.pth", map_location="cpu")["model"]


def test_interrupted_training_resumes_bit_for_bit(data):
    """N iterations in one go == N/2, stop, resume, N/2 (same seed, CPU, 0 loader workers)."""
    torch.set_num_threads(1)
    opts = [
        "SOLVER.MAX_ITER",
        "6",
        "SOLVER.CHECKPOINT_PERIOD",
        "3",
        "DATALOADER.NUM_WORKERS",
        "0",
        "NUCLEIWEAK.UNET.DROPOUT",
        "0.5",
    ]  # dropout: the torch RNG matters too
    whole = _train(_cfg(data / "whole", opts=opts))
    # the "interrupted" run: only the checkpoint of iteration 3 survives
    half = data / "half"
    half.mkdir()
    (half / "model_0000002.pth").write_bytes((data / "whole" / "model_0000002.pth").read_bytes())
    (half / "last_checkpoint").write_text("model_0000002.pth")
    resumed = _train(_cfg(half, opts=opts), resume=True)
    assert whole.keys() == resumed.keys()
    for key in whole:
        # equal_nan: an unfitted stain target is NaN in both
        assert torch.allclose(
            whole[key].float(), resumed[key].float(), atol=1e-6, equal_nan=True
        ), key
    # without the replayed data stream and RNG the weights would differ: check the test can fail
    fresh = _train(_cfg(data / "other_seed", opts=opts + ["SEED", "1"]))
    assert any(not torch.allclose(whole[k].float(), fresh[k].float(), atol=1e-6) for k in whole)


def test_single_model_rerun_into_a_run_folder_is_refused(tmp_path):
    """A Detectron2 single-model run (Feng et al.) owns its folder like a pipeline: a rerun
    without --resume is refused and changes nothing; --overwrite removes only what it wrote."""
    from nucleiweak_d2.engine import resolve_output_dir

    run = tmp_path / "feng"
    run.mkdir()
    (run / "model_final.pth").write_bytes(b"weights")
    (run / "metrics.json").write_text("{}\n")
    (run / "notes.txt").write_text("mine")
    cfg = setup_cfg(None, ["OUTPUT_DIR", str(run)])
    with pytest.raises(FileExistsError, match="holds another run.*--resume.*--overwrite"):
        resolve_output_dir(cfg)
    assert (run / "model_final.pth").read_bytes() == b"weights"
    assert resolve_output_dir(cfg, resume=True) == run
    assert resolve_output_dir(cfg, eval_only=True) == run / "eval_only"
    assert resolve_output_dir(cfg, overwrite=True) == run
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # the user's file stays
