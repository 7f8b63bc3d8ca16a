"""Dense-CRF loss and bilateral grid against a brute-force O(N^2) evaluation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nucleiweak_d2.modeling.losses import (
    BilateralGrid,
    bilateral_filter,
    dense_crf_loss,
    dense_crf_postprocess,
    nonblack_mask,
)

SXY, SRGB = 9.0, 0.1  # MoNuSeg values of Qu et al.
TOL = 0.05  # at most 5 % relative error (the bilateral grid's accuracy target)


def brute_kernel(image, sigma_xy=SXY, sigma_rgb=SRGB):
    """(N, HW, HW) exact kernels W_ij (j = i included) in float64."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    out = []
    for img in image.double():
        feat = torch.cat([torch.stack([xs, ys]) / sigma_xy, img / sigma_rgb]).reshape(5, -1).T
        out.append(torch.exp(-0.5 * torch.cdist(feat, feat) ** 2))
    return torch.stack(out)


def brute_loss(fg, image, mask=None, **kw):
    """Authors' normalisation: mean_b sum((1-S) m W(m S)) / sum(m), differentiable in fg."""
    kernel = brute_kernel(image, **kw)
    n = fg.shape[0]
    s = fg.reshape(n, -1)
    m = torch.ones_like(s) if mask is None else mask.reshape(n, -1).to(s.dtype)
    per = torch.einsum("bi,bij,bj->b", (1 - s) * m, kernel, m * s)
    return (per / m.sum(1).clamp(min=1)).mean()


def rel_err(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def smooth_field(gen, n, c, size, sigma):
    z = torch.randn(n, c, size, size, generator=gen, dtype=torch.float64)
    r = int(3 * sigma)
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float64) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    z = F.pad(z, (r, r, r, r), mode="reflect")
    z = F.conv2d(F.conv2d(z, k, groups=c), k.transpose(2, 3), groups=c)
    return (z - z.mean()) / z.std()


def smooth_case(seed, n=2, size=32):
    """Random smooth colour image with mild noise and a sharp-ish smooth probability map."""
    gen = torch.Generator().manual_seed(seed)
    image = 0.5 + 0.15 * smooth_field(gen, n, 3, size, 3.0)
    image = image + 0.03 * torch.randn(image.shape, generator=gen, dtype=torch.float64)
    prob = torch.sigmoid(8 * smooth_field(gen, n, 1, size, 4.0)[:, 0])
    return image.clamp(0, 1).float(), prob.float()


def two_region_case(shift=0):
    """Left half pink, right half purple (far apart in colour); probability follows the split.

    Pixel noise of 0.03 (about that of H&E tiles) is added: on perfectly flat colours the grid's
    interpolation error does not average out (see the report / module docstring).
    """
    gen = torch.Generator().manual_seed(11)
    image = 0.03 * torch.randn(1, 3, 32, 32, generator=gen)
    image[:, :, :, :16] += torch.tensor([0.85, 0.55, 0.75]).view(1, 3, 1, 1)
    image[:, :, :, 16:] += torch.tensor([0.35, 0.15, 0.55]).view(1, 3, 1, 1)
    prob = torch.full((1, 32, 32), 0.1)
    prob[:, :, 16 + shift :] = 0.9
    return image, prob


@pytest.mark.parametrize("seed", [0, 1])
def test_filter_matches_brute_force(seed):
    image, prob = smooth_case(seed)
    values = torch.stack([torch.ones_like(prob), prob], 1)
    kernel = brute_kernel(image)
    exact = torch.einsum("bij,bcj->bci", kernel, values.double().flatten(2)).view(values.shape)
    approx = bilateral_filter(values, image, SXY, SRGB)
    assert approx.shape == values.shape
    assert rel_err(approx, exact) <= TOL


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_and_gradient_match_brute_force(seed):
    image, prob = smooth_case(seed)
    fg = prob.clone().requires_grad_(True)
    loss = dense_crf_loss(fg, image, sigma_xy=SXY, sigma_rgb=SRGB)
    loss.backward()
    ref_fg = prob.double().requires_grad_(True)
    ref = brute_loss(ref_fg, image)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= TOL * ref.item()
    assert rel_err(fg.grad, ref_fg.grad) <= TOL


def test_two_region_image():
    aligned_img, aligned = two_region_case(shift=0)
    _, shifted = two_region_case(shift=4)
    values = {}
    for name, prob in [("aligned", aligned), ("shifted", shifted)]:
        fg = prob.clone().requires_grad_(True)
        loss = dense_crf_loss(fg, aligned_img)
        loss.backward()
        ref_fg = prob.double().requires_grad_(True)
        ref = brute_loss(ref_fg, aligned_img)
        ref.backward()
        assert abs(loss.item() - ref.item()) <= TOL * ref.item()
        assert rel_err(fg.grad, ref_fg.grad) <= TOL
        values[name] = loss.item()
    # Across the colour edge W is ~0, so a boundary on the edge costs less than one inside a region.
    assert values["aligned"] < 0.8 * values["shifted"]


def test_mask_excludes_black_pixels_and_normalises():
    image, prob = smooth_case(3, n=2)
    image[0, :, :6] = 0  # black padding rows, as left by rotation/affine augmentation
    image[1, :, :, -9:] = 0
    mask = nonblack_mask(image)
    assert int(mask[0].sum()) == 26 * 32 and int(mask[1].sum()) == 32 * 23
    fg = prob.clone().requires_grad_(True)
    loss = dense_crf_loss(fg, image, mask)
    loss.backward()
    ref_fg = prob.double().requires_grad_(True)
    ref = brute_loss(ref_fg, image, mask)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= TOL * ref.item()
    assert rel_err(fg.grad, ref_fg.grad) <= TOL
    assert float(fg.grad[~mask].abs().max()) == 0.0
    # Changing probabilities at masked pixels changes nothing.
    other = prob.clone()
    other[~mask] = 1 - other[~mask]
    assert dense_crf_loss(other, image, mask).item() == pytest.approx(loss.item(), rel=1e-5)


def test_empty_mask_image_counts_as_zero():
    image, prob = smooth_case(4, n=2)
    mask = torch.ones(2, 32, 32, dtype=torch.bool)
    mask[1] = False
    both = dense_crf_loss(prob, image, mask)
    first = dense_crf_loss(prob[:1], image[:1], mask[:1])
    assert float(both) == pytest.approx(float(first) / 2, rel=1e-5)


def test_two_channel_softmax_gradient():
    image, prob = smooth_case(5, n=1)
    logits = torch.stack([torch.zeros_like(prob), torch.logit(prob, eps=1e-4)], 1)
    ref_logits = logits.double().requires_grad_(True)
    brute_loss(torch.softmax(ref_logits, 1)[:, 1], image).backward()
    grads = {}
    for sym in (False, True):
        lg = logits.clone().requires_grad_(True)
        dense_crf_loss(torch.softmax(lg, 1), image, symmetric_grad=sym).backward()
        grads[sym] = lg.grad
    assert rel_err(grads[False], ref_logits.grad) <= TOL
    # The authors' +g / -g channel gradients double the gradient of the logits.
    torch.testing.assert_close(grads[True], 2 * grads[False], rtol=1e-3, atol=1e-7)


def test_weight_and_shapes():
    image, prob = smooth_case(6, n=2)
    base = dense_crf_loss(prob, image)
    assert base.dim() == 0 and base.dtype == torch.float32
    assert float(dense_crf_loss(prob, image, weight=0.005)) == pytest.approx(0.005 * float(base))
    assert float(dense_crf_loss(prob[:, None], image)) == pytest.approx(float(base))


def test_grid_operator_is_symmetric():
    """splat^T . blur . splat must be symmetric: the backward relies on it."""
    image, _ = smooth_case(7, n=2)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 2, 32, 32, generator=gen)
    grid = BilateralGrid(image, SXY, SRGB)
    lhs = (a * grid.filter(b)).sum()
    rhs = (grid.filter(a) * b).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prob": torch.rand(2, 32, 30)}, "sizes differ"),
        ({"image": torch.rand(2, 4, 32, 32)}, "3, H, W"),
        ({"prob": torch.rand(2, 3, 32, 32)}, "prob must be"),
        ({"sigma_xy": float("nan")}, "sigma_xy"),
        ({"sigma_rgb": 0.0}, "sigma_rgb"),
        ({"sigma_rgb": float("inf")}, "sigma_rgb"),
        ({"mask": torch.ones(2, 16, 16, dtype=torch.bool)}, "mask"),
        ({"image": torch.full((2, 3, 32, 32), float("nan"))}, "non-finite"),
        ({"color_step": 2.0}, "color_step"),
    ],
)
def test_bad_input_raises(kwargs, message):
    args = {"prob": torch.rand(2, 32, 32), "image": torch.rand(2, 3, 32, 32)}
    args.update(kwargs)
    prob, image = args.pop("prob"), args.pop("image")
    with pytest.raises(ValueError, match=message):
        dense_crf_loss(prob, image, **args)


def test_bilateral_filter_rejects_mismatched_values():
    with pytest.raises(ValueError, match="values must have shape"):
        bilateral_filter(torch.rand(1, 2, 16, 16), torch.rand(1, 3, 32, 32), SXY, SRGB)


def test_postprocess_with_pydensecrf():
    pytest.importorskip("pydensecrf.densecrf")
    image, prob = two_region_case(shift=3)
    rgb = (image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    noisy = prob[0].numpy() * 0.6 + 0.2
    marginals = dense_crf_postprocess(noisy, rgb)
    assert marginals.shape == (2, 32, 32)
    assert np.allclose(marginals.sum(0), 1, atol=1e-4)
    with pytest.raises(ValueError):
        dense_crf_postprocess(noisy[:16], rgb)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    image, prob = smooth_case(8, n=2)
    mask = nonblack_mask(image)
    results = []
    for device in ("cpu", "cuda"):
        # a leaf of its own on each device (prob.to("cpu") is prob itself: marking it would make
        # the CUDA copy a non-leaf without .grad, the error of this test's first CUDA run)
        fg = prob.detach().to(device, copy=True).requires_grad_(True)
        loss = dense_crf_loss(fg, image.to(device), mask.to(device))
        loss.backward()
        assert loss.device.type == device and fg.grad.device.type == device
        results.append((float(loss.detach()), fg.grad.cpu()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    assert rel_err(results[1][1], results[0][1]) <= 1e-4
