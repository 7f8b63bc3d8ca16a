"""DoNuSeg CAMs and dynamic CAM selection: Grad-CAM against hand-computed weighted feature sums,
the binarisation of Eq. 3, the similarity rate of Eq. 4 and the selected pseudo-label."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from nucleiweak_d2.methods.wang2024.cam import IGNORE, binarize_cam, grad_cam, normalize_cam  # noqa: E402
from nucleiweak_d2.methods.wang2024.dcs import select_cam, similarity_rate  # noqa: E402
from nucleiweak_d2.methods.wang2024.seg_loss import dcs_loss, masked_bce  # noqa: E402


def test_grad_cam_of_a_toy_network_is_the_hand_computed_weighted_sum():
    """Block 1 -> linear 1x1 map V -> block 2 -> linear per-location head w -> S = sum.

    dS/dA2 = w everywhere (Zhou's CAM), dS/dA1 = V^T w everywhere, so the CAMs are
    ReLU(sum_c w_c A2_c) and ReLU(sum_c (V^T w)_c A1_c) exactly.
    """
    g = torch.Generator().manual_seed(0)
    a1 = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)  # (N, C1, h, w)
    v = torch.randn(4, 3, generator=g)  # block 2 = V a1 per location, C2 = 4
    w = torch.randn(4, generator=g)  # head weights
    a2 = torch.einsum("dc,nchw->ndhw", v, a1)
    scores = torch.einsum("d,ndhw->n", w, a2)  # per-image S = sum over locations of w . a2
    cam1, cam2 = grad_cam(scores, [a1, a2])

    expect2 = torch.relu((w[None, :, None, None] * a2).sum(dim=1))
    vw = v.t() @ w
    expect1 = torch.relu((vw[None, :, None, None] * a1).sum(dim=1))
    torch.testing.assert_close(cam2, expect2.detach())
    torch.testing.assert_close(cam1, expect1.detach())
    assert not cam1.requires_grad
    scores.sum().backward()  # the graph is kept for the losses
    assert a1.grad is not None


def test_grad_cam_weights_are_the_spatial_mean_of_the_gradient():
    a = torch.tensor([[[[1.0, 2.0], [3.0, -4.0]]]], requires_grad=True)  # one channel
    weight_map = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    scores = (a[:, 0] * weight_map).sum(dim=(1, 2))
    (cam,) = grad_cam(scores, [a])
    torch.testing.assert_close(cam[0], torch.relu(a[0, 0] * 1.0).detach())  # mean gradient 1


def test_normalize_and_binarize():
    cam = torch.tensor([[[0.0, 1.0], [4.0, 2.0]]])
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    norm = normalize_cam(cam, (2, 2), valid)
    torch.testing.assert_close(norm, torch.tensor([[[0.0, 0.25], [1.0, 0.5]]]), atol=1e-6, rtol=0)
    # min and max over the valid pixels only; padding set to 0
    valid[0, 1, 0] = False
    norm = normalize_cam(cam, (2, 2), valid)
    torch.testing.assert_close(norm, torch.tensor([[[0.0, 0.5], [0.0, 1.0]]]), atol=1e-6, rtol=0)

    c = binarize_cam(torch.tensor([0.1, 0.2, 0.5, 0.8, 0.81, 1.0]), theta=0.8)
    assert c.tolist() == [0, 0, IGNORE, IGNORE, 1, 1]  # > theta: 1, <= 1 - theta: 0
    c = binarize_cam(torch.tensor([0.9, 0.1]), 0.8, valid=torch.tensor([False, True]))
    assert c.tolist() == [IGNORE, 0]
    with pytest.raises(ValueError, match="theta"):
        binarize_cam(torch.zeros(2), theta=0.3)


def test_dcs_picks_the_cam_that_agrees_with_m_and_weights_by_its_alpha():
    # M: left column nucleus, right column background, the middle ignored (4 x 3)
    m = torch.tensor([[1, 2, 0]] * 4, dtype=torch.uint8)[None]
    good = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 2, 0], [2, 0, 0]], dtype=torch.uint8)
    bad = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]], dtype=torch.uint8)
    cams = torch.stack([bad, good])[None]  # (1, K=2, 4, 3)
    alpha = similarity_rate(cams, m)
    # Omega_M: 8 pixels. good: left 1,1,1,ignored -> 3; right 0,0,0,0 -> 4: 7/8.
    # bad: left 0,0,1,0 -> 1; right 1,1,1,0 -> 1: 2/8.
    torch.testing.assert_close(alpha, torch.tensor([[2 / 8, 7 / 8]]))
    p, alpha_p, index = select_cam(cams, alpha)
    assert index.tolist() == [1] and torch.equal(p[0], good)
    torch.testing.assert_close(alpha_p, torch.tensor([7 / 8]))

    logits = torch.randn(1, 4, 3, requires_grad=True)
    torch.testing.assert_close(dcs_loss(logits, p, alpha_p), 7 / 8 * masked_bce(logits, p))
    # ties go to the first CAM; no valid pixel in M gives alpha 0
    _, _, index = select_cam(torch.stack([good, good])[None], torch.tensor([[0.5, 0.5]]))
    assert index.tolist() == [0]
    assert similarity_rate(cams, torch.full_like(m, IGNORE)).tolist() == [[0.0, 0.0]]


def test_masked_bce_is_eq1_per_image_then_mean():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]]])
    label = torch.tensor([[[1, 0], [2, 1]], [[2, 2], [2, 2]]], dtype=torch.uint8)
    y = torch.sigmoid(logits[0])
    per_image = -(torch.log(y[0, 0]) + torch.log(1 - y[0, 1]) + torch.log(y[1, 1])) / 3
    torch.testing.assert_close(masked_bce(logits, label), per_image / 2)  # 2nd image adds 0


def test_normalize_cam_local_window():
    # two peaks of 4 and 1, five pixels apart: a window of 3 sees one peak at a time
    cam = torch.tensor([[[4.0, 2.0, 0.0, 0.0, 0.5, 1.0]]])
    valid = torch.ones(1, 1, 6, dtype=torch.bool)
    norm = normalize_cam(cam, (1, 6), valid, eps=0.0, window=3)
    torch.testing.assert_close(norm[0, 0, [0, 1, 4, 5]], torch.tensor([1.0, 0.5, 0.5, 1.0]))
    assert norm[0, 0, 2] == 0 and norm[0, 0, 3] == 0
    # the global min-max leaves the weaker peak at 1/4, below theta 0.8
    assert normalize_cam(cam, (1, 6), valid)[0, 0, 5] < 0.26
    # a window wider than the map is the global max (min 0: a ReLU map)
    wide = normalize_cam(cam, (1, 6), valid, eps=0.0, window=13)
    torch.testing.assert_close(wide, cam / 4.0)
    # padding: 0 and not a local maximum for its neighbours
    valid[0, 0, 0] = False
    norm = normalize_cam(cam, (1, 6), valid, eps=0.0, window=3)
    assert norm[0, 0, 0] == 0 and norm[0, 0, 1] == 1.0
    with pytest.raises(ValueError, match="odd"):
        normalize_cam(cam, (1, 6), valid, window=4)
