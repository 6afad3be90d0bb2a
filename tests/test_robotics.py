"""Masks, spread-out keypoints, minimum distance and OpenCV interop."""

import cv2
import numpy as np
import pytest

from kpnet import KeypointDetector, Keypoints
from kpnet.config import DecodeConfig
from kpnet.postprocess import decode
from kpnet.selection import grid_select


@pytest.fixture(scope="module")
def det_factory(tiny_onnx):
    return lambda **kw: KeypointDetector(tiny_onnx, **kw)


def _pairwise_min(xy):
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    d[np.arange(len(xy)), np.arange(len(xy))] = np.inf
    return d.min()


def test_mask_excludes_regions(det_factory, sample_bgr):
    det = det_factory(max_keypoints=300, nms_radius=2)
    mask = np.zeros(sample_bgr.shape[:2], np.uint8)
    mask[100:400, 50:300] = 255
    cv2.circle(mask, (200, 250), 60, 0, -1)  # a hole, like an existing track
    kps = det.detect(sample_bgr, mask=mask)
    assert len(kps) > 20
    xi, yi = np.rint(kps.xy[:, 0]).astype(int), np.rint(kps.xy[:, 1]).astype(int)
    assert (mask[yi, xi] > 0).all()
    with pytest.raises(
        ValueError, match="mask must be a 2-D uint8 or bool numpy array of the image's size 512x512, got \\(10, 10\\)"
    ):
        det.detect(sample_bgr, mask=np.ones((10, 10), np.uint8))
    with pytest.raises(ValueError, match="mask dtype must be uint8 or bool"):
        det.detect(sample_bgr, mask=np.ones(sample_bgr.shape[:2], np.float32))


def test_grid_quota_and_budget():
    rng = np.random.default_rng(0)
    h, w = 60, 80
    # Candidates concentrated in the top-left corner plus a few elsewhere.
    xy = np.concatenate([rng.uniform(0, 20, (300, 2)), rng.uniform(0, [w, h], (40, 2))]).astype(np.float32)
    vals = rng.random(len(xy)).astype(np.float32)
    rows, cols, k = 3, 4, 60
    sel = grid_select(xy, vals, (w, h), k, (rows, cols))
    assert len(sel) == k  # enough candidates: the budget is met
    # kpnet.selection's cells: pixel centres at integers, so a point is bucketed by x + 0.5
    c = xy.astype(np.float64) + 0.5
    cell = np.minimum((c[:, 1] * rows / h).astype(int), rows - 1) * cols + np.minimum(
        (c[:, 0] * cols / w).astype(int), cols - 1
    )
    counts = np.bincount(cell, minlength=rows * cols)
    got = np.bincount(cell[sel], minlength=rows * cols)
    # Sparse cells give all they have; dense cells share the rest at an equal quota.
    q = got.max()
    assert ((got == counts) | (got >= q - 1)).all()
    assert got.max() - got[counts > q].min() <= 1
    # Within a cell the best points win.
    for c in np.flatnonzero(got):
        taken = vals[sel][cell[sel] == c]
        left = np.setdiff1d(np.flatnonzero(cell == c), sel)
        if len(left):
            assert taken.min() >= vals[left].max()
    assert (np.diff(vals[sel]) <= 0).all()


def test_grid_and_anms_spread_more_than_topk():
    rng = np.random.default_rng(1)
    heat = rng.normal(size=(96, 128)).astype(np.float32)
    heat[:30, :40] += 3.0  # a very textured corner hogs the top-k

    def spread(cfg):
        xy, _ = decode(heat, cfg)
        return len(xy), np.unique((xy[:, 1] // 24) * 10 + xy[:, 0] // 32).size

    base = dict(max_keypoints=60, nms_radius=2, border=0)
    n_top, cells_top = spread(DecodeConfig(**base))
    n_grid, cells_grid = spread(DecodeConfig(**base, distribution="grid", grid=(4, 4)))
    n_anms, cells_anms = spread(DecodeConfig(**base, distribution="anms"))
    assert n_top == n_grid == n_anms == 60
    assert cells_grid == 16 and cells_grid > cells_top and cells_anms > cells_top


@pytest.mark.parametrize("distribution", ["topk", "grid", "anms"])
def test_min_distance_in_original_pixels(det_factory, sample_bgr, distribution):
    det = det_factory(max_keypoints=200, nms_radius=1, min_distance=15.0, distribution=distribution)
    kps = det.detect(sample_bgr)
    assert len(kps) > 10
    assert _pairwise_min(kps.xy) >= 15.0


def test_anms_radius_respected():
    rng = np.random.default_rng(2)
    heat = rng.normal(size=(64, 64)).astype(np.float32)
    xy, _ = decode(heat, DecodeConfig(max_keypoints=30, nms_radius=3, border=0, distribution="anms"))
    assert len(xy) == 30
    # Every kept point is a maximum of its Chebyshev-3 window, so none are within 3 px (L-inf).
    d = np.abs(xy[:, None] - xy[None]).max(-1) + np.eye(len(xy)) * 99
    assert d.min() > 3


def test_distribution_validation(tiny_onnx_pp):
    with pytest.raises(ValueError, match="unknown distribution 'even'; choose from: topk, grid, anms"):
        DecodeConfig(distribution="even")
    with pytest.raises(ValueError, match="grid must be"):
        DecodeConfig(grid=(0, 3))
    with pytest.raises(ValueError, match="need the heatmap"):
        KeypointDetector(tiny_onnx_pp, distribution="grid")


def test_to_cv_roundtrip_and_opencv_descriptors(det_factory, sample_bgr):
    kps = det_factory(max_keypoints=100).detect(sample_bgr)
    cv = kps.to_cv()
    assert len(cv) == len(kps) and isinstance(cv[0], cv2.KeyPoint)
    np.testing.assert_allclose([k.pt for k in cv], kps.xy, atol=1e-4)
    np.testing.assert_allclose([k.response for k in cv], kps.scores, atol=1e-6)
    back = Keypoints.from_cv(cv, kps.image_size)
    np.testing.assert_allclose(back.xy, kps.xy, atol=1e-4)
    # OpenCV descriptor extractors accept them directly.
    kp2, desc = cv2.ORB_create().compute(cv2.cvtColor(sample_bgr, cv2.COLOR_BGR2GRAY), cv)
    assert desc is not None and desc.shape[1] == 32 and len(kp2) > 50
    assert cv2.drawKeypoints(sample_bgr, cv, None).shape == sample_bgr.shape


def test_feature2d_adapter(det_factory, sample_bgr):
    f2d = det_factory(max_keypoints=50).as_feature2d()
    mask = np.zeros(sample_bgr.shape[:2], np.uint8)
    mask[:, 256:] = 1
    kps = f2d.detect(sample_bgr, mask)
    assert kps and all(k.pt[0] >= 255.5 for k in kps)


def test_detect_torch_matches_host_detect(tiny_ckpt, tiny_onnx, sample_bgr):
    torch = pytest.importorskip("torch")
    det = KeypointDetector(tiny_ckpt, max_keypoints=100)
    host = KeypointDetector(tiny_onnx, max_keypoints=100).detect(sample_bgr)
    tk = det.detect_torch(torch.from_numpy(sample_bgr))  # a tensor frame, as a GPU pipeline holds it
    assert isinstance(tk.xy, torch.Tensor) and str(tk.xy.device) == det.info.torch_device
    got = tk.numpy()
    assert got.image_size == host.image_size and len(got) == len(host)
    # Resizing runs in torch (area weights), not OpenCV: allow a few reordered points.
    d = np.linalg.norm(got.xy[:, None] - host.xy[None], axis=-1).min(axis=1)
    assert (d < 1.0).mean() > 0.9
    grid = KeypointDetector(tiny_ckpt, max_keypoints=50, distribution="grid", grid=(2, 2)).detect_torch(sample_bgr)
    assert len(grid) == 50 and isinstance(grid.scores, torch.Tensor)
    with pytest.raises(ValueError, match=r"use detect\(\) \(it also accepts torch tensors"):
        KeypointDetector(tiny_onnx).detect_torch(sample_bgr)


def test_anms_early_stop_keeps_the_same_selection():
    from kpnet.postprocess import anms_levels, nms_mask

    rng = np.random.default_rng(5)
    for _ in range(5):
        work = rng.normal(size=(120, 160)).astype(np.float32)
        idx = np.flatnonzero(nms_mask(work, 2))
        vals = work.reshape(-1)[idx]
        for k in (10, 50, 200):
            full = np.lexsort((idx, -vals, -anms_levels(work, idx, 2)))[:k]
            fast = np.lexsort((idx, -vals, -anms_levels(work, idx, 2, k)))[:k]
            assert set(full) == set(fast)
