"""Training losses on tiny tensors: against torchvision and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kornia")
from torchvision.ops import sigmoid_focal_loss  # noqa: E402

from training.homography import HomographyConfig, sample_homography  # noqa: E402
from training.losses import (  # noqa: E402
    bce_loss,
    direct_loss,
    focal_loss,
    huber_consistency,
    kl_consistency,
    spatial_kl,
    warp,
    warped_valid,
)


def _homography(w=64, h=48, seed=0) -> torch.Tensor:
    H = sample_homography((w, h), HomographyConfig(max_angle_deg=20.0), np.random.default_rng(seed))
    return torch.from_numpy(H).float()[None]


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.9, 3.0), (-1.0, 2.0)])
def test_focal_matches_torchvision(alpha, gamma):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 12, generator=g) * 3
    target = (torch.rand(2, 1, 8, 12, generator=g) < 0.2).float()
    ref = sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="mean")
    assert torch.allclose(focal_loss(logits, target, None, alpha, gamma), ref, rtol=1e-5, atol=1e-7)
    # with a valid mask: the mean over the valid pixels only
    valid = torch.rand(2, 1, 8, 12, generator=g) < 0.5
    ref_m = sigmoid_focal_loss(logits[valid], target[valid], alpha=alpha, gamma=gamma, reduction="mean")
    assert torch.allclose(focal_loss(logits, target, valid, alpha, gamma), ref_m, rtol=1e-5, atol=1e-7)


def test_focal_soft_targets_and_bce():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 0.5]]]])
    soft = torch.tensor([[[[0.3, 0.9], [0.1, 0.5]]]])
    # gamma 0 and no alpha: plain BCE, also with soft targets
    assert torch.allclose(focal_loss(logits, soft, None, alpha=-1, gamma=0.0), bce_loss(logits, soft))
    # hand-computed: one pixel, x = 0 (p = 0.5), t = 0.3: p_t = 0.5, BCE = ln 2
    one = focal_loss(logits[..., :1, :1], soft[..., :1, :1], None, alpha=0.25, gamma=2.0)
    alpha_t = 0.25 * 0.3 + 0.75 * 0.7
    assert one.item() == pytest.approx(alpha_t * math.log(2) * 0.25, rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'l3'; choose from: focal, bce"):
        direct_loss("l3", logits, soft, None)


def test_huber_consistency_zero_when_predictions_equal_warped_masks():
    g = torch.Generator().manual_seed(1)
    H = _homography()
    Hinv = torch.linalg.inv(H.double()).float()
    p0 = torch.randn(1, 1, 48, 64, generator=g)
    p1 = torch.randn(1, 1, 48, 64, generator=g)
    # masks equal to the predictions warped into the other frame (in logit space)
    m1 = torch.sigmoid(warp(p0, H))
    m0 = torch.sigmoid(warp(p1, Hinv))
    ones = torch.ones(1, 1, 48, 64, dtype=torch.bool)
    assert huber_consistency(p0, p1, m0, m1, H, ones, ones, delta=0.1).item() == pytest.approx(0.0, abs=1e-7)
    # any change of the predictions makes it positive
    assert huber_consistency(p0 + 0.5, p1, m0, m1, H, ones, ones, delta=0.1).item() > 1e-4
    assert huber_consistency(p0, p1 * 0.5, m0, m1, H, ones, ones, delta=0.1).item() > 1e-4


def test_huber_consistency_hand_computed_and_masked():
    eye = torch.eye(3)[None]
    logits = torch.zeros(1, 1, 4, 4)  # sigmoid = 0.5
    mask = torch.full((1, 1, 4, 4), 0.9)  # |0.5 - 0.9| = 0.4 > delta
    ones = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    per_term = 0.1 * (0.4 - 0.5 * 0.1)  # delta (|d| - delta / 2)
    assert huber_consistency(logits, logits, mask, mask, eye, ones, ones, delta=0.1).item() == pytest.approx(
        2 * per_term, rel=1e-5
    )
    small = torch.full((1, 1, 4, 4), 0.55)  # |d| = 0.05 < delta: 0.5 d^2
    assert huber_consistency(logits, logits, small, small, eye, ones, ones, delta=0.1).item() == pytest.approx(
        2 * 0.5 * 0.05**2, rel=1e-4
    )
    # only pixels valid in the warped frame count: disagreement confined to invalid pixels costs nothing
    valid = ones.clone()
    valid[..., :, 2:] = False
    bad = mask.clone()
    bad[..., :, :2] = 0.5
    assert huber_consistency(logits, logits, bad, bad, eye, valid, valid, delta=0.1).item() == pytest.approx(
        0.0, abs=1e-7
    )


def test_kl_zero_for_identical_distributions_and_hand_value():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 6, 7, generator=g)
    ones = torch.ones(2, 1, 6, 7, dtype=torch.bool)
    assert spatial_kl(x, x, ones).item() == pytest.approx(0.0, abs=1e-6)
    assert spatial_kl(x + 3.0, x, ones).item() == pytest.approx(0.0, abs=1e-6)  # softmax ignores a shift
    assert spatial_kl(x * 2, x, ones).item() > 1e-3
    # hand value: target uniform over 4 pixels, prediction softmax(0, 0, 0, ln 5) = (1, 1, 1, 5) / 8
    pred = torch.tensor([[[[0.0, 0.0], [0.0, math.log(5.0)]]]])
    ones4 = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    expected = 0.75 * math.log(2.0) + 0.25 * math.log(0.4)
    assert spatial_kl(pred, torch.zeros(1, 1, 2, 2), ones4).item() == pytest.approx(expected, rel=1e-5)
    # the consistency form: zero when the warped predictions equal the masks
    H = _homography(seed=3)
    Hinv = torch.linalg.inv(H.double()).float()
    p0, p1 = torch.randn(1, 1, 48, 64, generator=g), torch.randn(1, 1, 48, 64, generator=g)
    m1, m0 = warp(p0, H), warp(p1, Hinv)
    v = torch.ones(1, 1, 48, 64, dtype=torch.bool)
    assert kl_consistency(p0, p1, m0, m1, H, v, v).item() == pytest.approx(0.0, abs=1e-5)
    assert kl_consistency(p0, p1, m0, m1 * 2, H, v, v).item() > 1e-3
    # a temperature sharpens the target; identical distributions then need logits / T
    assert kl_consistency(p0 / 0.5, p1 / 0.5, m0, m1, H, v, v, temperature=0.5).item() == pytest.approx(0.0, abs=1e-5)


def test_warp_then_inverse_is_identity_on_interior_pixels():
    H = _homography(seed=4)
    Hinv = torch.linalg.inv(H.double()).float()
    # bilinear interpolation of an affine ramp is exact, so the round trip must be exact inside
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    img = (0.3 * xs - 0.2 * ys + 5.0)[None, None]
    back = warp(warp(img, H), Hinv)
    ones = torch.ones(1, 1, 48, 64, dtype=torch.bool)
    inside = warped_valid(warped_valid(ones, H, ones), Hinv, ones)
    assert inside.sum() > 0.5 * inside.numel()
    assert (back - img)[inside].abs().max().item() < 1e-3
    # a textured image (not exact under bilinear resampling) still comes back closely
    tex = torch.sin(xs / 3.0)[None, None] * torch.cos(ys / 4.0)[None, None]
    err = (warp(warp(tex, H), Hinv) - tex)[inside].abs().mean().item()
    assert err < 0.05
    # pixels whose source lies outside the other view are not counted as valid
    assert not inside.all()
