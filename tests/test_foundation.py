"""The package imports, its numpy modules work without detectron2, and Detectron2 trains on CPU."""

import subprocess
import sys
import textwrap

import pytest

NUMPY_ONLY = [
    "nucleiweak_d2.data.points",
    "nucleiweak_d2.pseudo_labels",
    "nucleiweak_d2.evaluation.metrics",
]


def test_numpy_modules_import_without_detectron2_or_torch():
    # A meta-path finder that refuses detectron2 and torch, as on a machine without them.
    code = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("detectron2", "torch", "torchvision"):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import importlib
        for m in {NUMPY_ONLY!r}:
            importlib.import_module(m)
        assert not any(k.split(".")[0] in ("detectron2", "torch") for k in sys.modules)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_setup_cfg_has_our_node():
    pytest.importorskip("detectron2")
    from nucleiweak_d2.config import setup_cfg

    cfg = setup_cfg(
        None, ["NUCLEIWEAK.MAPPER", "NucleiDatasetMapper", "NUCLEIWEAK.SOLVER.OPTIMIZER", "ADAM"]
    )
    assert cfg.NUCLEIWEAK.MAPPER == "NucleiDatasetMapper"
    assert cfg.NUCLEIWEAK.SOLVER.OPTIMIZER == "ADAM"
    assert cfg.SEED == -1  # Detectron2's own default is left alone; our base YAMLs set 0
    for node in ("DATA", "EVAL", "UNET", "LOSSES", "SOLVER", "QU2020", "FENG2019"):
        assert node in cfg.NUCLEIWEAK
    assert cfg.is_frozen()
    with pytest.raises(KeyError, match="NUCLEIWEAK.SOLVER.OPTIMIZER"):
        setup_cfg(None, ["SOLVER.OPTIMIZER", "ADAM"])  # the old key says where it went


def test_maskrcnn_one_training_step_on_cpu():
    torch = pytest.importorskip("torch")
    pytest.importorskip("detectron2")
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine import Trainer

    cfg = setup_cfg(
        None,
        [
            "MODEL.META_ARCHITECTURE",
            "GeneralizedRCNN",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.BACKBONE.NAME",
            "build_resnet_fpn_backbone",
            "MODEL.MASK_ON",
            "True",
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "64",
            "MODEL.RESNETS.OUT_FEATURES",
            "['res2', 'res3', 'res4', 'res5']",
            "MODEL.FPN.IN_FEATURES",
            "['res2', 'res3', 'res4', 'res5']",
            "MODEL.ANCHOR_GENERATOR.SIZES",
            "[[8], [16], [32], [64], [128]]",
            "MODEL.RPN.IN_FEATURES",
            "['p2', 'p3', 'p4', 'p5', 'p6']",
            "MODEL.ROI_HEADS.IN_FEATURES",
            "['p2', 'p3', 'p4', 'p5']",
            "MODEL.ROI_HEADS.NAME",
            "StandardROIHeads",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "1",
            "MODEL.ROI_BOX_HEAD.NAME",
            "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_FC",
            "2",
            "MODEL.ROI_MASK_HEAD.NAME",
            "MaskRCNNConvUpsampleHead",
            "MODEL.ROI_MASK_HEAD.NUM_CONV",
            "2",
            "SOLVER.BASE_LR",
            "0.001",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 10:20, 10:22] = True
    masks[1, 30:44, 35:47] = True
    inst = Instances((64, 64))
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 22.0, 20.0], [35.0, 30.0, 47.0, 44.0]]))
    inst.gt_classes = torch.zeros(2, dtype=torch.long)
    batch = [
        {
            "image": torch.randint(0, 255, (3, 64, 64)).float(),
            "instances": inst,
            "height": 64,
            "width": 64,
        }
    ]
    model.train()
    with EventStorage():
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    assert torch.isfinite(total)


def test_cuda_device_falls_back_to_cpu_without_cuda():
    torch = pytest.importorskip("torch")
    pytest.importorskip("detectron2")
    from nucleiweak_d2.config import setup_cfg

    cfg = setup_cfg(None, ["MODEL.DEVICE", "cuda"])
    assert cfg.MODEL.DEVICE == ("cuda" if torch.cuda.is_available() else "cpu")


def test_datasets_named_in_the_config_are_registered(tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset
    from nucleiweak_d2.engine import register_datasets_from_cfg

    root = make_synthetic_dataset(tmp_path / "syn", n_images=4, size=(64, 64), seed=1)
    export_coco_splits(root, tmp_path / "coco", ratio=0.5, seed=0)
    cfg = setup_cfg(
        None,
        [
            "NUCLEIWEAK.DATASETS.COCO_DIR",
            str(tmp_path / "coco"),
            "NUCLEIWEAK.DATASETS.IMAGE_ROOT",
            str(root),
            "NUCLEIWEAK.DATASETS.PREFIX",
            "cfgreg",
        ],
    )
    names = register_datasets_from_cfg(cfg)
    assert set(names) >= {"cfgreg_train", "cfgreg_test"}
    records = DatasetCatalog.get("cfgreg_train")
    assert records and all(r["file_name"].startswith(str(root)) for r in records)
    assert MetadataCatalog.get("cfgreg_train").evaluator_type == "nuclei"
    assert register_datasets_from_cfg(setup_cfg(None)) == []
