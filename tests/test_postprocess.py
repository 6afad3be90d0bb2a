"""Decoding against a brute-force reference, numpy and torch, including ties."""

import numpy as np
import pytest

from kpnet.config import DecodeConfig
from kpnet.postprocess import decode, nms_mask, refine_subpixel, sigmoid, topk_indices


def reference_decode(heat: np.ndarray, cfg: DecodeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-by-pixel loops: the definition, not an implementation. ``heat`` holds probabilities."""
    h, w = heat.shape
    r = cfg.nms_radius
    cands = []
    for y in range(h):
        for x in range(w):
            v = heat[y, x]
            if not (cfg.border <= y < h - cfg.border and cfg.border <= x < w - cfg.border):
                continue
            if v <= cfg.threshold:
                continue
            win = heat[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
            if v < win.max():
                continue
            cands.append((-float(v), y * w + x, x, y))
    cands.sort()  # score descending, then row-major index ascending
    cands = cands[: cfg.max_keypoints]
    xy = np.array([[c[2], c[3]] for c in cands], np.float32).reshape(-1, 2)
    sc = np.array([-c[0] for c in cands], np.float32)
    return xy, sc


def random_heatmaps():
    rng = np.random.default_rng(0)
    for i in range(6):
        h, w = rng.integers(8, 30, size=2)
        heat = rng.random((h, w)).astype(np.float32)
        if i % 2:  # quantised: many ties and plateaus
            heat = (np.round(heat * 6) / 6).astype(np.float32)
        yield heat


CONFIGS = [
    DecodeConfig(max_keypoints=10, nms_radius=1, border=0),
    DecodeConfig(max_keypoints=25, nms_radius=2, border=2, threshold=0.3),
    DecodeConfig(max_keypoints=1000, nms_radius=0, border=1),  # K larger than the candidates
    DecodeConfig(max_keypoints=7, nms_radius=4, border=3),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_numpy_matches_reference(cfg):
    for heat in random_heatmaps():
        xy, sc = decode(heat, cfg, logits=False)
        rxy, rsc = reference_decode(heat, cfg)
        np.testing.assert_array_equal(xy, rxy)
        np.testing.assert_array_equal(sc, rsc)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_torch_matches_reference(cfg):
    torch = pytest.importorskip("torch")
    from kpnet import postprocess_torch as pt

    for heat in random_heatmaps():
        ((xy, sc),) = pt.decode(torch.from_numpy(heat)[None, None], cfg, is_logits=False)
        rxy, rsc = reference_decode(heat, cfg)
        np.testing.assert_array_equal(xy.numpy(), rxy)
        np.testing.assert_array_equal(sc.numpy(), rsc)


def test_logits_path_equals_probability_path():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 50)).astype(np.float32) * 3
    cfg = DecodeConfig(max_keypoints=30, nms_radius=2, threshold=0.4, border=2)
    xy1, s1 = decode(logits, cfg, logits=True)
    rxy, rsc = reference_decode(sigmoid(logits), cfg)
    np.testing.assert_array_equal(xy1, rxy)
    np.testing.assert_allclose(s1, rsc, rtol=1e-6)
    assert (s1 > 0.4).all()


def test_fixed_k_decoder_matches_host():
    torch = pytest.importorskip("torch")
    from kpnet import postprocess_torch as pt

    torch.manual_seed(0)
    logits = torch.randn(3, 1, 48, 64) * 2
    cfg = DecodeConfig(max_keypoints=64, nms_radius=2, border=3, threshold=0.2)
    kp, sc, n = pt.FixedKDecoder(cfg)(logits)
    assert kp.shape == (3, 64, 2) and sc.shape == (3, 64) and n.shape == (3,)
    for b in range(3):
        hxy, hs = decode(logits[b, 0].numpy(), cfg)
        k = int(n[b])
        assert k == len(hxy)
        np.testing.assert_array_equal(kp[b, :k].numpy(), hxy)
        np.testing.assert_allclose(sc[b, :k].numpy(), hs, rtol=1e-6)
        assert (sc[b, k:] == 0).all() and (kp[b, k:] == 0).all()


def test_fixed_k_padding_when_few_candidates():
    torch = pytest.importorskip("torch")
    from kpnet import postprocess_torch as pt

    logits = torch.full((1, 1, 32, 32), -10.0)
    logits[0, 0, 10, 12] = 5.0
    kp, sc, n = pt.FixedKDecoder(DecodeConfig(max_keypoints=8, threshold=0.5))(logits)
    assert int(n[0]) == 1
    assert kp[0, 0].tolist() == [12.0, 10.0]
    assert (sc[0, 1:] == 0).all()


def test_all_zero_heatmap():
    cfg = DecodeConfig(max_keypoints=5, nms_radius=2, border=1)
    # Probabilities all zero: nothing beats the threshold.
    xy, sc = decode(np.zeros((20, 20), np.float32), cfg, logits=False)
    assert xy.shape == (0, 2) and sc.shape == (0,)
    # Logits all zero (p = 0.5 everywhere): a plateau; ties go to the lowest row-major index.
    xy, sc = decode(np.zeros((20, 20), np.float32), cfg)
    np.testing.assert_array_equal(xy, [[1, 1], [2, 1], [3, 1], [4, 1], [5, 1]])
    np.testing.assert_allclose(sc, 0.5)


def test_border_removal():
    heat = np.random.default_rng(2).random((30, 40)).astype(np.float32)
    xy, _ = decode(heat, DecodeConfig(max_keypoints=1000, nms_radius=0, border=5), logits=False)
    assert len(xy) == (30 - 10) * (40 - 10)
    assert xy[:, 0].min() >= 5 and xy[:, 0].max() <= 40 - 6
    assert xy[:, 1].min() >= 5 and xy[:, 1].max() <= 30 - 6


def test_topk_ties_deterministic():
    s = np.array([1, 3, 3, 2, 3, 0], np.float32)
    np.testing.assert_array_equal(topk_indices(s, 2), [1, 2])
    np.testing.assert_array_equal(topk_indices(s, 4), [1, 2, 4, 3])


def test_nms_plateau_keeps_all_maxima():
    heat = np.zeros((5, 5), np.float32)
    heat[2, 1:3] = 1.0
    assert nms_mask(heat, 1)[2, 1] and nms_mask(heat, 1)[2, 2]


def test_subpixel_within_one_pixel_and_accurate():
    yy, xx = np.mgrid[0:40, 0:50].astype(np.float32)
    cx, cy = 21.3, 17.8
    logits = -((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5**2)  # log of a Gaussian: exactly quadratic
    cfg = DecodeConfig(max_keypoints=1, nms_radius=3, subpixel=True)
    xy, _ = decode(logits.astype(np.float32), cfg)
    np.testing.assert_allclose(xy[0], [cx, cy], atol=1e-3)
    # On random heatmaps, refinement never moves a point more than 0.5 px per axis.
    rng = np.random.default_rng(3)
    heat = rng.random((30, 30)).astype(np.float32)
    ixy, _ = decode(heat, DecodeConfig(max_keypoints=50, nms_radius=1), logits=False)
    rxy = refine_subpixel(heat, ixy.astype(np.int64))
    assert np.abs(rxy - ixy).max() <= 0.5


def test_subpixel_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    from kpnet import postprocess_torch as pt

    rng = np.random.default_rng(4)
    heat = rng.normal(size=(30, 40)).astype(np.float32)
    cfg = DecodeConfig(max_keypoints=40, nms_radius=2, subpixel=True)
    xy, _ = decode(heat, cfg)
    ((txy, _),) = pt.decode(torch.from_numpy(heat)[None, None], cfg)
    np.testing.assert_allclose(txy.numpy(), xy, atol=1e-5)


def test_decode_config_validation():
    with pytest.raises(ValueError, match="max_keypoints must be >= 1"):
        DecodeConfig(max_keypoints=0)
    with pytest.raises(ValueError, match=r"threshold must be a probability in \[0, 1\)"):
        DecodeConfig(threshold=1.5)
    with pytest.raises(ValueError, match="nms_radius must be an int"):
        DecodeConfig(nms_radius=2.5)
