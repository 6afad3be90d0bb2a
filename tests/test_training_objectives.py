"""Teacher-free repeatability (R2D2-style cosine + peakiness) and the sub-pixel soft-argmax
term: reference values on hand-made maps, gradients, and both in tiny training runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kornia")

from training.losses import (  # noqa: E402
    local_cosine_loss,
    peakiness_loss,
    repeatability_loss,
    soft_argmax_windows,
    subpixel_loss,
)


def _blobs(h=48, w=64, shift=(0.0, 0.0), seed=0, n=12, sigma=1.2, integer=False) -> torch.Tensor:
    """Probability map [1, 1, h, w] of Gaussian blobs at random points, shifted by (dx, dy)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform([6, 6], [w - 6, h - 6], (n, 2)) + np.array(shift)
    if integer:
        pts = np.rint(pts)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    m = np.zeros((h, w))
    for x, y in pts:
        m = np.maximum(m, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    return torch.from_numpy(m).float()[None, None]


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


# ---------------------------------------------------------------------- cosine
def test_local_cosine_identical_zero_shifted_larger():
    a = 0.01 + _blobs()  # probabilities have a floor
    assert float(local_cosine_loss(a, a, None, 16)) == pytest.approx(0.0, abs=1e-6)
    assert float(local_cosine_loss(a, 3 * a, None, 16)) == pytest.approx(0.0, abs=1e-6)  # scale-invariant
    l1 = float(local_cosine_loss(a, 0.01 + _blobs(shift=(1, 0)), None, 16))
    l3 = float(local_cosine_loss(a, 0.01 + _blobs(shift=(3, 2)), None, 16))
    other = float(local_cosine_loss(a, 0.01 + _blobs(seed=5), None, 16))
    assert 0 < l1 < l3 < other <= 1


def test_local_cosine_reference_value_and_valid_patches():
    # one 8x8 patch (patch 8 on an 8x8 map): cosine of two vectors computed by hand
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 1, 8, 8, generator=g), torch.rand(1, 1, 8, 8, generator=g)
    ref = 1 - float((a * b).sum() / (a.norm() * b.norm()))
    assert float(local_cosine_loss(a, b, None, 8)) == pytest.approx(ref, rel=1e-5)
    # invalid pixels are left out of the cosine; a mostly invalid patch is left out altogether
    valid = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    valid[..., :, 6:] = False
    av, bv = a[..., :, :6], b[..., :, :6]
    ref_v = 1 - float((av * bv).sum() / (av.norm() * bv.norm()))
    assert float(local_cosine_loss(a, b, valid, 8)) == pytest.approx(ref_v, rel=1e-5)
    assert float(local_cosine_loss(a, b, torch.zeros_like(valid), 8)) == 0.0


# ---------------------------------------------------------------------- peakiness
def test_peakiness_reference_values():
    flat = torch.full((1, 1, 32, 32), 0.3)
    assert float(peakiness_loss(flat, None, 8)) == pytest.approx(1.0, abs=1e-6)
    # isolated peaks of 1 on 0, one in every 9x9 window (spacing 4): max - mean is large everywhere
    grid = torch.zeros(1, 1, 32, 32)
    grid[..., 2::4, 2::4] = 1.0
    peaky = float(peakiness_loss(grid, None, 8))
    assert peaky < 0.1
    # sharper peaks score better than the same peaks blurred
    sharp, blurred = (float(peakiness_loss(_blobs(sigma=s, integer=True), None, 16)) for s in (0.8, 3.0))
    assert sharp < blurred < 1


# ---------------------------------------------------------------------- full term with warps
def _rotation_H(angle_deg: float, w: int, h: int, scale: float = 1.0) -> torch.Tensor:
    a = math.radians(angle_deg)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    cx, cy = (w - 1) / 2, (h - 1) / 2
    H = np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0, 0, 1]])
    return torch.from_numpy(H).float()[None]


def test_repeatability_loss_with_warps():
    from training.losses import warp

    p0 = _blobs(h=64, w=64, sigma=1.5)
    valid = torch.ones(1, 1, 64, 64, dtype=torch.bool)
    ident = torch.eye(3)[None]
    cos, peaky = repeatability_loss(_logit(p0), _logit(p0), ident, valid, valid, 16)
    assert float(cos) == pytest.approx(0.0, abs=1e-4)
    assert 0 < float(peaky) < 1
    # view 1 is view 0 rotated by 90 degrees: consistent maps score ~0, a wrong map far more
    H = _rotation_H(90.0, 64, 64)
    p1 = warp(p0, H)
    good, _ = repeatability_loss(_logit(p0), _logit(p1), H, valid, valid, 16)
    bad, _ = repeatability_loss(_logit(p0), _logit(p0), H, valid, valid, 16)
    assert float(good) < 0.02 < 0.2 < float(bad)
    # the gradient makes view 1 consistent: a few steps lower the loss
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)  # a flat start (p = 0.5)
    opt = torch.optim.Adam([x], lr=0.3)
    first = None
    for _ in range(30):
        c, _ = repeatability_loss(_logit(p0), x, H, valid, valid, 16)
        first = float(c.detach()) if first is None else first
        opt.zero_grad()
        c.backward()
        opt.step()
    assert first > 0.3 and float(c.detach()) < 0.3 * first


# ---------------------------------------------------------------------- sub-pixel soft-argmax
def _peak_logits(points, h=32, w=40, sharp=2.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    m = torch.full((h, w), -8.0)
    for x, y in points:
        m = torch.maximum(m, -sharp * ((xx - x) ** 2 + (yy - y) ** 2))
    return m[None, None]


def test_soft_argmax_recovers_symmetric_peaks():
    pts = torch.tensor([[[10.0, 12.0], [25.0, 7.0], [30.0, 20.0]]])
    xy, inside, _ = soft_argmax_windows(_peak_logits(pts[0]), pts, radius=2)
    assert inside.all()
    torch.testing.assert_close(xy, pts, atol=1e-4, rtol=0)
    # a window crossing the border is flagged
    _, inside, _ = soft_argmax_windows(_peak_logits(pts[0]), torch.tensor([[[1.0, 5.0]]]), radius=2)
    assert not inside.any()


def test_subpixel_loss_reference_values_and_gradient():
    pts = torch.tensor([[[10.0, 12.0], [25.0, 7.0], [30.0, 20.0]]])
    ok = torch.ones(1, 3, dtype=torch.bool)
    logits = _peak_logits(pts[0])
    assert float(subpixel_loss(logits, pts, ok)) < 1e-3
    # a target 0.3 px off the symmetric peak costs 0.3 px
    off = pts + torch.tensor([0.3, 0.0])
    assert float(subpixel_loss(logits, off, ok)) == pytest.approx(0.3, abs=1e-3)
    # padding rows and points whose window touches invalid pixels do not count
    assert float(subpixel_loss(logits, off, torch.tensor([[True, False, False]]))) == pytest.approx(0.3, abs=1e-3)
    valid = torch.ones_like(logits, dtype=torch.bool)
    valid[..., 5:10, 23:28] = False  # covers the second point's window
    far = pts.clone()
    far[0, 1] += torch.tensor([0.4, 0.4])
    assert float(subpixel_loss(logits, far, ok, valid)) == pytest.approx(0.0, abs=1e-3)
    assert float(subpixel_loss(logits, far, torch.zeros_like(ok))) == 0.0
    # training the logits moves the soft-argmax onto sub-pixel targets
    x = logits.clone().requires_grad_(True)
    target = pts + torch.tensor([[0.35, -0.25], [-0.4, 0.2], [0.1, 0.45]])
    opt = torch.optim.Adam([x], lr=0.1)
    start = float(subpixel_loss(x, target, ok).detach())
    for _ in range(60):
        loss = subpixel_loss(x, target, ok)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert start > 0.3 and float(loss) < 0.05


def test_objective_flags_validate():
    from training.train_config import TrainConfig

    d = TrainConfig(cache="c")
    assert (d.repeat_weight, d.subpixel_weight) == (0.0, 0.0)
    with pytest.raises(ValueError, match="repeat_weight must be >= 0"):
        TrainConfig(cache="c", repeat_weight=-1)
    with pytest.raises(ValueError, match="repeat_patch must be an int >= 4"):
        TrainConfig(cache="c", repeat_patch=2)
    with pytest.raises(ValueError, match="subpixel_temperature must be > 0"):
        TrainConfig(cache="c", subpixel_temperature=0)
    with pytest.raises(ValueError, match="subpixel_radius must be a positive int"):
        TrainConfig(cache="c", subpixel_radius=0)


# ---------------------------------------------------------------------- in training runs
def test_phase1_and_phase2_runs_log_the_new_terms(tmp_path):
    pytest.importorskip("tqdm")
    pytest.importorskip("yaml")
    from test_training_loop_smoke import make_cache, read_log, tiny_args

    from kpnet.config import ModelConfig
    from kpnet.model import KpNet
    from training import phase1, phase2

    cache = make_cache(tmp_path / "cache", n=6)
    out1 = tmp_path / "p1"
    # three logged steps with the sub-pixel term, full rotations and mean padding, in both phases
    common = "--max-steps 3 --log-every 1 --overlay-every 0 --subpixel-weight 0.1 --max-rotation-deg 180".split()
    common += "--pad-fill mean --valid-erode 2".split()
    rc = phase1.main(tiny_args(cache, out1, *common))
    assert rc == 0
    sp = read_log(out1, "train/subpixel")
    assert len(sp) == 3 and all(0 <= float(v) < 3 for v in sp.values())
    assert len(read_log(out1, "train/direct")) == 3
    init = tmp_path / "init.pt"
    KpNet(ModelConfig(backbone="small", fpn_width=8, input_size=(96, 128))).save_pretrained(init)
    out2 = tmp_path / "p2"
    rc = phase2.main(
        tiny_args(cache, out2, "--init", str(init), "--repeat-weight", "1", "--repeat-patch", "8", *common)
    )
    assert rc == 0
    for tag in ("repeat", "repeat_cosim", "repeat_peaky", "subpixel", "consistency", "direct"):
        vals = read_log(out2, f"train/{tag}")
        assert len(vals) == 3 and all(np.isfinite(float(v)) for v in vals.values()), tag
    assert all(0 <= float(v) <= 1 for v in read_log(out2, "train/repeat_cosim").values())
    cfg = (out2 / "config.yaml").read_text()
    assert "repeat_weight: 1.0" in cfg and "pad_fill: mean" in cfg
