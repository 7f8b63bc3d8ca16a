"""The IEN (CoordConv stem, embedding output) and the SPN + IEN model, on tiny inputs."""

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage

import nucleiweak_d2.methods.liu2022  # noqa: F401  (registers the method before setup_cfg)
from nucleiweak_d2.config import setup_cfg
from nucleiweak_d2.methods.liu2022 import NucleiWeakLiu2022EmbeddingNet, NucleiWeakLiu2022Model
from nucleiweak_d2.methods.liu2022.coords import coordinate_grid

QUICK = "configs/quick/liu2022_instant_test.yaml"


@pytest.fixture(scope="module")
def cfg():
    return setup_cfg(QUICK)


def _image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def test_ien_starts_as_a_plain_unet_and_builds_the_inference_grid(cfg):
    torch.manual_seed(0)
    ien = NucleiWeakLiu2022EmbeddingNet(cfg).eval()
    assert ien.sem_seg_head.num_classes == cfg.NUCLEIWEAK.LIU2022.IEN.EMBED_DIM
    w = ien.coord_conv.weight[:, :, 0, 0]
    assert torch.equal(w[:, :3], torch.eye(3)) and not w[:, 3:].any()
    x = {"image": _image(40, 56)}
    images, _ = ien.preprocess([x])
    grid = ien.coordinates([x], images)
    assert grid.shape[-2:] == images.tensor.shape[-2:]  # padded to the size divisibility
    assert torch.equal(grid[0, :, :40, :56], coordinate_grid(40, 56, as_tensor=True))
    emb = ien([x])[0]["embedding"]
    assert emb.shape == (cfg.NUCLEIWEAK.LIU2022.IEN.EMBED_DIM, 40, 56)
    # the coordinates matter once the stem uses them: given coords override the grid
    with torch.no_grad():
        ien.coord_conv.weight[:, 3:] = 1.0
    moved = ien([dict(x, coords=-coordinate_grid(40, 56, as_tensor=True))])[0]["embedding"]
    assert not torch.allclose(moved, ien([x])[0]["embedding"])


def test_ien_training_losses(cfg):
    ien = NucleiWeakLiu2022EmbeddingNet(cfg).train()
    lab = torch.ones(32, 32, dtype=torch.int64)
    lab[4:14, 4:14], lab[18:28, 18:28], lab[0, :] = 2, 3, 0
    x = {"image": _image(32, 32), "ins_seg": lab, "coords": coordinate_grid(32, 32, as_tensor=True)}
    with EventStorage():
        losses = ien([x, x])
    assert set(losses) == {"loss_var", "loss_dist", "loss_reg"}
    sum(losses.values()).backward()
    assert (
        ien.coord_conv.weight.grad is not None and torch.isfinite(ien.coord_conv.weight.grad).all()
    )


def test_final_model_freezes_the_spn_and_outputs_instances(cfg):
    model = NucleiWeakLiu2022Model(cfg)
    model.train()
    assert not model.spn.training and model.ien.training
    assert not any(p.requires_grad for p in model.spn.parameters())
    assert all(p.requires_grad for p in model.ien.parameters())
    assert {k.split(".")[0] for k in model.state_dict()} == {"spn", "ien"}
    model.eval()
    out = model([{"image": _image(48, 64), "height": 48, "width": 64}])[0]
    assert out["instance_map"].shape == (48, 64) and out["instance_map"].dtype == torch.int32
    assert out["prob"].shape == (48, 64) and out["sem_seg"].shape == (2, 48, 64)
    # an all-foreground SPN and two embedding clusters: two instances split at x = 32
    scores = torch.zeros(2, 48, 64)
    scores[1] = 1.0
    emb = torch.zeros(cfg.NUCLEIWEAK.LIU2022.IEN.EMBED_DIM, 48, 64)
    emb[0, :, 32:] = 3.0
    inst = model.inference_single(scores, emb)["instance_map"].numpy()
    assert inst.max() == 2 and len(np.unique(inst[:, :32])) == 1 and inst[0, 0] != inst[0, 40]


def test_ien_initialised_from_a_trained_spn(cfg, tmp_path):
    """``IEN.INIT_FROM_SPN``: the IEN's encoder and decoder start as the SPN's; the prediction
    layer (2 classes there, ``EMBED_DIM`` here) and the CoordConv stem keep their own start."""
    from nucleiweak_d2.modeling.meta_arch.segmentor import NucleiWeakUNetSegmentor

    spn_cfg = cfg.clone()
    spn_cfg.defrost()
    spn_cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    torch.manual_seed(1)
    spn = NucleiWeakUNetSegmentor(spn_cfg)
    with torch.no_grad():
        for p in spn.parameters():
            p.add_(torch.randn_like(p))  # "trained": far from any fresh initialisation
    path = tmp_path / "spn.pth"
    torch.save({"model": spn.state_dict()}, path)

    torch.manual_seed(2)
    model = NucleiWeakLiu2022Model(cfg, spn_weights=str(path), ien_weights=str(path))
    spn_state, ien_state = spn.state_dict(), model.ien.state_dict()
    copied = [k for k in ien_state if k in spn_state and ien_state[k].shape == spn_state[k].shape]
    assert any(k.startswith("backbone.") for k in copied)
    assert any(k.startswith("sem_seg_head.") for k in copied)
    for k in copied:
        assert torch.allclose(ien_state[k], spn_state[k], rtol=0, atol=0, equal_nan=True), k
    skipped = [k for k in ien_state if k in spn_state and k not in copied]
    assert skipped and all(
        ien_state[k].shape[0] == cfg.NUCLEIWEAK.LIU2022.IEN.EMBED_DIM for k in skipped
    )
    w = model.ien.coord_conv.weight[:, :, 0, 0]
    assert torch.equal(w[:, :3], torch.eye(3)) and not w[:, 3:].any()
    for k, v in spn_state.items():  # the frozen SPN itself is the SPN
        assert torch.allclose(model.spn.state_dict()[k], v, rtol=0, atol=0, equal_nan=True), k
