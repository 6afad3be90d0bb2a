"""Random homographies and warping of images, points, heatmaps and masks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kornia")

from training.homography import (  # noqa: E402
    HomographyConfig,
    points_inside,
    sample_homography,
    valid_mask,
    warp_heatmap,
    warp_image,
    warp_mask,
    warp_points,
)

SIZE = (80, 64)  # (width, height)


def _homographies(n: int, config: HomographyConfig | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sample_homography(SIZE, config or HomographyConfig(), rng) for _ in range(n)]


def test_h_then_inverse_is_identity_on_points():
    rng = np.random.default_rng(1)
    pts = rng.uniform([0, 0], [SIZE[0] - 1, SIZE[1] - 1], size=(50, 2))
    for H in _homographies(10):
        assert not np.allclose(H, np.eye(3), atol=1e-3)
        back = warp_points(np.linalg.inv(H), warp_points(H, pts))
        np.testing.assert_allclose(back, pts, atol=1e-6)
        # torch path agrees with numpy
        t = warp_points(H, torch.from_numpy(pts).float())
        np.testing.assert_allclose(t.numpy(), warp_points(H, pts), atol=1e-3)


def test_sampled_warp_stays_inside_the_frame_without_artifacts():
    for H in _homographies(20):
        assert valid_mask(H, SIZE).all()
    # with artifacts allowed and overflow, some pixels come from outside
    cfg = HomographyConfig(patch_ratio=1.0, allow_artifacts=True, translation_overflow=0.3, max_angle_deg=90)
    fractions = [valid_mask(H, SIZE).mean() for H in _homographies(20, cfg)]
    assert min(fractions) < 1.0


def test_warped_points_land_on_warped_image_content():
    """A bright dot at a sub-pixel position ends where warp_points puts it."""
    w, h = SIZE
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    for i, H in enumerate(_homographies(5, seed=3)):
        dot = np.array([25.3 + 3 * i, 30.6 - 2 * i])
        img = np.exp(-((xs - dot[0]) ** 2 + (ys - dot[1]) ** 2) / (2 * 1.5**2)).astype(np.float32)
        out = warp_image(torch.from_numpy(img)[None, None], H)[0, 0].numpy().astype(np.float64)
        centroid = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
        expected = warp_points(H, dot[None])[0]
        assert np.linalg.norm(centroid - expected) < 0.3, (centroid, expected)


def test_heatmap_and_mask_warps_and_validity():
    w, h = SIZE
    H = np.array([[1.0, 0, 10.0], [0, 1.0, -5.0], [0, 0, 1]])  # shift by (+10, -5)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[20, 30] = True
    warped = warp_mask(mask, H)
    assert warped.dtype == torch.bool and torch.nonzero(warped).tolist() == [[15, 40]]
    heat = torch.rand(h, w)
    wh = warp_heatmap(heat, H)
    assert torch.allclose(wh[15, 40], heat[20, 30], atol=1e-5)
    valid = valid_mask(H, SIZE)
    assert not valid[:, :10].any() and not valid[h - 5 :, :].any()
    assert valid[: h - 5, 10:].all()
    assert np.abs(wh.numpy()[~valid]).max() < 1e-4


def test_points_inside():
    pts = np.array([[0, 0], [79, 63], [79.5, 10], [-0.1, 5]])
    assert points_inside(pts, SIZE).tolist() == [True, True, False, False]


def test_config_validation_message():
    with pytest.raises(ValueError, match="patch_ratio must be in"):
        HomographyConfig(patch_ratio=1.5)
    with pytest.raises(ValueError, match="unknown warp mode 'cubic'; choose from: bilinear, nearest"):
        warp_image(torch.zeros(1, 1, 4, 4), np.eye(3), mode="cubic")
