"""engine/checkpoint_average.py: exact means on hand-made weights, the periodic checkpoints of a
folder, the file round trip, and bad inputs."""

import pytest
import torch

from nucleiweak_d2.engine.checkpoint_average import (
    average_state_dicts,
    last_periodic_checkpoints,
    periodic_checkpoints,
    write_average,
)


def _sd(w, bias, steps):
    return {
        "w": torch.tensor(w, dtype=torch.float32),
        "b": torch.tensor(bias, dtype=torch.float16),
        "bn.num_batches_tracked": torch.tensor(steps),
    }


def test_floats_are_averaged_in_their_dtype_and_integers_come_from_the_last():
    out = average_state_dicts([_sd([1.0, 2.0], [0.5], 3), _sd([3.0, 6.0], [1.5], 7)])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0]))
    assert out["b"].dtype == torch.float16 and out["b"].item() == 1.0
    assert out["bn.num_batches_tracked"].item() == 7
    # one dict: itself
    one = average_state_dicts([_sd([1.0, 2.0], [0.5], 3)])
    assert torch.equal(one["w"], torch.tensor([1.0, 2.0]))


def test_mismatched_or_no_state_dicts_are_refused():
    with pytest.raises(ValueError, match="no checkpoint"):
        average_state_dicts([])
    other = _sd([1.0, 2.0], [0.5], 3)
    other["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="other weights"):
        average_state_dicts([other, _sd([1.0, 2.0], [0.5], 3)])
    with pytest.raises(ValueError, match="shape"):
        average_state_dicts([_sd([1.0, 2.0, 3.0], [0.5], 3), _sd([1.0, 2.0], [0.5], 3)])


def test_periodic_checkpoints_in_iteration_order_without_best_and_final(tmp_path):
    for name in ("model_0000999.pth", "model_0000099.pth", "model_best.pth", "model_final.pth"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "model_12.pth").write_bytes(b"")  # not Detectron2's 7-digit name
    assert [p.name for p in periodic_checkpoints(tmp_path)] == [
        "model_0000099.pth",
        "model_0000999.pth",
    ]
    assert periodic_checkpoints(tmp_path / "missing") == []
    assert [p.name for p in last_periodic_checkpoints(tmp_path, 1)] == ["model_0000999.pth"]
    assert len(last_periodic_checkpoints(tmp_path, 2)) == 2
    with pytest.raises(ValueError, match="holds 2 periodic checkpoints, fewer than 3"):
        last_periodic_checkpoints(tmp_path, 3)


def test_write_average_round_trip_and_refuses_a_file_without_model(tmp_path):
    paths = []
    for i, w in enumerate(([0.0, 4.0], [2.0, 8.0], [4.0, 0.0])):
        paths.append(tmp_path / f"model_{i:07d}.pth")
        torch.save({"model": _sd(w, [0.0], i), "iteration": i}, paths[-1])
    out = write_average(paths, tmp_path / "avg" / "model_average.pth")
    ckpt = torch.load(out, weights_only=False)
    assert torch.equal(ckpt["model"]["w"], torch.tensor([2.0, 4.0]))
    assert ckpt["averaged_from"] == [p.name for p in paths]
    assert not list((tmp_path / "avg").glob("*.tmp"))
    torch.save({"weights": {}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="no 'model' entry"):
        write_average([tmp_path / "bad.pth"], tmp_path / "x.pth")
