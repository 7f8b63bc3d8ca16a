"""COCOEvaluator on a dataset registered from our COCO export scores perfect masks as AP 100."""

import numpy as np
import pytest

pytest.importorskip("detectron2")
torch = pytest.importorskip("torch")


def test_coco_ap_of_ground_truth_predictions_is_100(tmp_path):
    from detectron2.data import DatasetCatalog
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import BitMasks, Instances

    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.datasets import register_nuclei_dataset
    from nucleiweak_d2.data.io import read_label
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "syn", n_images=4, size=(96, 96), seed=2)
    files = export_coco_splits(root, tmp_path / "coco", ratio=0.5, seed=0, splits=["test"])
    register_nuclei_dataset("nw_cocoeval_test", files["test"], root)
    records = DatasetCatalog.get("nw_cocoeval_test")
    ev = COCOEvaluator(
        "nw_cocoeval_test",
        tasks=("segm",),
        distributed=False,
        output_dir=str(tmp_path / "out"),
        max_dets_per_image=1000,
    )
    ev.reset()
    for record in records:
        label = read_label(record["label_file_name"])
        ids = np.unique(label)[1:]
        masks = torch.from_numpy(label[None] == ids[:, None, None])
        inst = Instances(label.shape)
        inst.pred_masks = masks
        inst.pred_boxes = BitMasks(masks).get_bounding_boxes()
        inst.scores = torch.ones(len(ids))
        inst.pred_classes = torch.zeros(len(ids), dtype=torch.int64)
        ev.process([{"image_id": record["image_id"]}], [{"instances": inst}])
    res = ev.evaluate()
    assert res["segm"]["AP"] == pytest.approx(100.0)
