"""Label masks built from keypoints (pure numpy).

* Phase 1: :func:`binary_mask`, 1 at the pixel nearest to each keypoint.
* Phase 2: :func:`blob_mask`, a Gaussian blob around each matched point with
  label smoothing: value ``floor + (peak - floor) * exp(-d^2 / (2 sigma^2))``,
  peak 0.9 at the point, floor 0.1 far away; overlapping blobs take the max.

Coordinates are (x, y) pixels with pixel centres at integers; sizes are
``(width, height)``.
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 0.9
FLOOR = 0.1


def _check_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be [N, 2] (x, y); got shape {pts.shape}")
    return pts


def binary_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Binary keypoint mask.

    Args:
        points: ``[N, 2]`` (x, y) pixels; points outside the image are ignored.
        size: ``(width, height)``.

    Returns:
        uint8 ``[height, width]``, 1 at the pixel nearest each point, else 0.
    """
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    pts = np.rint(_check_points(points)).astype(np.int64)
    ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    mask[pts[ok, 1], pts[ok, 0]] = 1
    return mask


def blob_mask(
    points: np.ndarray,
    size: tuple[int, int],
    sigma: float = 1.5,
    peak: float = PEAK,
    floor: float = FLOOR,
    truncate: float = 4.0,
) -> np.ndarray:
    """Soft keypoint mask: Gaussian blobs between ``floor`` and ``peak``.

    Args:
        points: ``[N, 2]`` (x, y) pixels, sub-pixel allowed.
        size: ``(width, height)``.
        sigma: Gaussian standard deviation in pixels, > 0.
        peak: value at a point (0.9).
        floor: value away from every point (0.1).
        truncate: blobs are cut at ``truncate * sigma`` pixels, beyond which
            the value is exactly ``floor``.

    Returns:
        float32 ``[height, width]`` in ``[floor, peak]``; the max over blobs.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    if not 0 <= floor < peak <= 1:
        raise ValueError(f"need 0 <= floor < peak <= 1; got floor={floor}, peak={peak}")
    w, h = size
    gauss = np.zeros((h, w), np.float64)
    radius = int(math.ceil(truncate * sigma))
    for x, y in _check_points(points):
        cx, cy = int(round(x)), int(round(y))
        x0, x1 = max(cx - radius, 0), min(cx + radius + 1, w)
        y0, y1 = max(cy - radius, 0), min(cy + radius + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(-((np.arange(x0, x1) - x) ** 2) / (2 * sigma**2))
        gy = np.exp(-((np.arange(y0, y1) - y) ** 2) / (2 * sigma**2))
        np.maximum(gauss[y0:y1, x0:x1], gy[:, None] * gx[None, :], out=gauss[y0:y1, x0:x1])
    out = (floor + (peak - floor) * gauss).astype(np.float32)
    out[gauss == 0] = np.float32(floor)
    return out
