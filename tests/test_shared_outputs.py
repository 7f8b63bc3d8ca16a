"""SharedImageOutputs: an image that several scored datasets share runs through the model once."""

import pytest
import torch
from torch import nn

from nucleiweak_d2.engine.shared_outputs import SharedImageOutputs, image_key


class _Counting(nn.Module):
    """Output: the image's sum; counts the images it ran."""

    def __init__(self):
        super().__init__()
        self.ran = []

    def forward(self, batched_inputs):
        self.ran += [x["file_name"] for x in batched_inputs]
        return [{"sem_seg": x["image"].float().sum().reshape(1)} for x in batched_inputs]


def _rec(name, value, h=2, w=2, image_id=None):
    return {
        "file_name": name,
        "height": h,
        "width": w,
        "image_id": image_id or name,
        "image": torch.full((1, h, w), float(value)),
    }


def test_union_split_runs_each_image_once_and_gives_the_same_outputs():
    a = [_rec("a.png", 1), _rec("b.png", 2)]
    b = [_rec("c.png", 3)]
    union = [_rec("a.png", 1, image_id=7), _rec("c.png", 3, image_id=9), _rec("b.png", 2)]
    base = _Counting()
    model = SharedImageOutputs(base, [union, a, b])
    assert set(model.uses_left) == {image_key(r) for r in union}
    got = {}
    for name, records in [("test", union), ("testA", a), ("testB", b)]:
        got[name] = [model([r])[0]["sem_seg"].item() for r in records]
    assert got == {"test": [4.0, 12.0, 8.0], "testA": [4.0, 8.0], "testB": [12.0]}
    assert sorted(base.ran) == ["a.png", "b.png", "c.png"]  # each image once
    assert model.store == {} and model.uses_left == {}  # dropped after the last use


def test_unshared_or_unnamed_images_always_run_and_are_not_kept():
    base = _Counting()
    val = [_rec("v.png", 1)]
    test = [_rec("t.png", 1), _rec("v.png", 1, h=3, w=3)]  # same file, other size: not shared
    model = SharedImageOutputs(base, [val, test, [{"image": torch.ones(1, 2, 2)}]])
    assert model.uses_left == {}
    for r in val + test:
        model([r])
    assert base.ran == ["v.png", "t.png", "v.png"] and model.store == {}


def test_a_batch_with_a_new_image_runs_whole():
    base = _Counting()
    first, second = [_rec("a.png", 1)], [_rec("a.png", 1), _rec("b.png", 2)]
    model = SharedImageOutputs(base, [first, second])
    model(first)
    out = model(second)
    assert [o["sem_seg"].item() for o in out] == [4.0, 8.0]
    assert base.ran == ["a.png", "a.png", "b.png"] and model.calls == 2


@pytest.mark.parametrize("training", [False, True])
def test_train_and_eval_mode_reach_the_model(training):
    base = _Counting()
    model = SharedImageOutputs(base, [[_rec("a.png", 1)]] * 2)
    model.train(training)
    assert base.training is training


def test_outputs_over_the_byte_budget_are_not_kept_and_run_again():
    from detectron2.structures import BitMasks, Boxes, Instances

    from nucleiweak_d2.engine.shared_outputs import output_bytes

    inst = Instances((4, 5))
    inst.pred_masks = BitMasks(torch.zeros(3, 4, 5, dtype=torch.bool))  # 60 bytes
    inst.pred_boxes = Boxes(torch.zeros(3, 4))  # 48 bytes
    assert output_bytes([{"instances": inst, "sem_seg": torch.zeros(2, 4, 5)}]) == 60 + 48 + 160

    base = _Counting()  # each output: one float32 value, 4 bytes
    union = [_rec("a.png", 1), _rec("b.png", 2), _rec("c.png", 3)]
    model = SharedImageOutputs(base, [union, union], max_bytes=8)  # room for two outputs
    first = [model([r])[0]["sem_seg"].item() for r in union]
    assert len(model.store) == 2 and model.stored_bytes == 8  # c.png did not fit
    second = [model([r])[0]["sem_seg"].item() for r in union]
    assert first == second == [4.0, 8.0, 12.0]
    assert base.ran == ["a.png", "b.png", "c.png", "c.png"]  # only c.png ran twice
    assert model.store == {} and model.stored_bytes == 0
