"""Detector evaluation metrics (numpy only).

Conventions: keypoints are float [N, 2] (x, y) pixels with pixel centres at integers; sizes are
(width, height); ``H`` is a 3x3 matrix mapping image-1 pixels to image-2 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def warp_points(xy: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Apply a homography to points [N, 2] -> [N, 2] (float64)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    p = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ np.asarray(H, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / p[:, 2:3]


def inside(xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [N]: point lies within the image of ``size`` = (w, h) (pixel-centre convention)."""
    w, h = size
    return (
        (xy[:, 0] >= -0.5)
        & (xy[:, 0] <= w - 0.5)
        & (xy[:, 1] >= -0.5)
        & (xy[:, 1] <= h - 0.5)
        & np.isfinite(xy).all(axis=1)
    )


def _min_dists(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of a, the distance to its nearest row of b and that row's index."""
    if len(a) == 0 or len(b) == 0:
        return np.full(len(a), np.inf), np.zeros(len(a), np.int64)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    j = d2.argmin(axis=1)
    return np.sqrt(d2[np.arange(len(a)), j]), j


@dataclass(frozen=True)
class RepeatabilityResult:
    """repeatability: (repeated in 1 + repeated in 2) / (visible in 1 + visible in 2), in [0, 1].
    loc_error: mean pixel distance of repeated image-1 points to their nearest image-2 point.
    n1, n2: points of each image visible in the other; n_repeated: repeated image-1 points."""

    repeatability: float
    loc_error: float
    n1: int
    n2: int
    n_repeated: int


def repeatability(
    xy1: np.ndarray, xy2: np.ndarray, H: np.ndarray, size1: tuple[int, int], size2: tuple[int, int], eps: float = 3.0
) -> RepeatabilityResult:
    """SuperPoint's repeatability: only points visible in both views count; a point is
    repeated when a detection of the other image lies within ``eps`` px after warping."""
    xy1 = np.asarray(xy1, np.float64).reshape(-1, 2)
    xy2 = np.asarray(xy2, np.float64).reshape(-1, 2)
    H = np.asarray(H, np.float64)
    w1 = warp_points(xy1, H)
    vis1 = inside(w1, size2)
    w2 = warp_points(xy2, np.linalg.inv(H))
    vis2 = inside(w2, size1)
    a, b = w1[vis1], xy2[vis2]  # both in image-2 coordinates
    d12, _ = _min_dists(a, b)
    d21, _ = _min_dists(b, a)
    r1, r2 = d12 <= eps, d21 <= eps
    n = len(a) + len(b)
    rep = float((r1.sum() + r2.sum()) / n) if n else 0.0
    loc = float(d12[r1].mean()) if r1.any() else float("nan")
    return RepeatabilityResult(rep, loc, int(len(a)), int(len(b)), int(r1.sum()))


def corner_error(H_est: np.ndarray | None, H_gt: np.ndarray, size1: tuple[int, int]) -> float:
    """Mean distance (px) between image-1 corners warped by the estimate and by the truth;
    inf when there is no estimate."""
    if H_est is None:
        return float("inf")
    w, h = size1
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    e = np.linalg.norm(warp_points(corners, H_est) - warp_points(corners, H_gt), axis=1)
    return float(e.mean()) if np.isfinite(e).all() else float("inf")


def mutual_nn_matches(desc1: np.ndarray, desc2: np.ndarray) -> np.ndarray:
    """Mutual nearest neighbours by L2 distance: int [M, 2] index pairs."""
    if len(desc1) == 0 or len(desc2) == 0:
        return np.zeros((0, 2), np.int64)
    d1 = desc1.astype(np.float32)
    d2 = desc2.astype(np.float32)
    dist = (d1**2).sum(1)[:, None] + (d2**2).sum(1)[None, :] - 2 * d1 @ d2.T
    nn12 = dist.argmin(axis=1)
    nn21 = dist.argmin(axis=0)
    i = np.arange(len(d1))
    keep = nn21[nn12] == i
    return np.stack([i[keep], nn12[keep]], axis=1)
