import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from kpnet.upsample import BicubicUpsample, bicubic_phase_kernel  # noqa: E402


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (5, 7), (30, 40), (120, 160)])
def test_matches_interpolate(scale, hw):
    torch.manual_seed(hw[0] * 100 + hw[1])
    x = torch.randn(2, 3, *hw) * 5
    ref = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    got = BicubicUpsample(scale)(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_borders_and_interior_separately():
    # A ramp plus a spike at the corner exercises the clamped (replicated) border taps.
    x = torch.arange(48.0).reshape(1, 1, 6, 8)
    x[..., 0, 0] = 100.0
    ref = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    got = BicubicUpsample(4)(x)
    b = 6
    torch.testing.assert_close(got[..., :b, :], ref[..., :b, :], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[..., :, -b:], ref[..., :, -b:], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-4, rtol=0)


def test_phase_weights_sum_to_one():
    w, lo, hi = bicubic_phase_kernel(4)
    assert (lo, hi) == (2, 2)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(4, dtype=torch.float64))


def test_gradients_match_interpolate():
    x = torch.randn(1, 1, 9, 11, requires_grad=True)
    g = torch.randn(1, 1, 36, 44)
    (BicubicUpsample(4)(x) * g).sum().backward()
    g1 = x.grad.clone()
    x.grad = None
    (F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False) * g).sum().backward()
    torch.testing.assert_close(g1, x.grad, atol=1e-4, rtol=1e-4)
