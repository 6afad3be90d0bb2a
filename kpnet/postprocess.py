"""Heatmap -> keypoints decoding in numpy (and OpenCV for the max filter).

Pure functions over a single heatmap [H, W]. Pipeline (see :func:`decode`):
NMS -> border removal -> threshold -> top-k -> optional sub-pixel refinement -> sigmoid.
Given logits, every step runs on the logits (the sigmoid is monotonic, so the result is the
same as on probabilities, but without float ties created by a saturating sigmoid); only the
returned scores are converted to probabilities.

Conventions: coordinates are (x, y) = (column, row) in heatmap pixels with pixel centres at
integer coordinates. Ties in score are broken by the lower row-major index, so results are
deterministic. A torch version with the same semantics, including a fixed-K variant that
exports into ONNX/TensorRT, is in :mod:`kpnet.postprocess_torch`.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import DecodeConfig


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32 out."""
    x = np.asarray(logits, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def logit(p: float) -> float:
    """Inverse sigmoid of a probability threshold; 0 maps to -inf."""
    if p <= 0.0:
        return float("-inf")
    return float(np.log(p) - np.log1p(-p))


def nms_mask(heat: np.ndarray, radius: int) -> np.ndarray:
    """bool [H, W]: True where a pixel equals the maximum of its (2r+1)x(2r+1) window.

    Equivalent to ``heat == max_pool2d(heat, 2r+1, stride=1, padding=r)`` with -inf padding.
    Plateaus keep every pixel at the maximum; top-k then breaks the tie by index.
    """
    heat = np.ascontiguousarray(heat, dtype=np.float32)
    if radius == 0:
        return np.ones(heat.shape, dtype=bool)
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    # Dilation with the default border value ignores out-of-image pixels, like -inf padding.
    dil = cv2.dilate(heat, kernel)
    return heat == dil


def border_mask(shape: tuple[int, int], border: int) -> np.ndarray:
    """bool [H, W]: False within ``border`` pixels of the edge."""
    h, w = shape
    m = np.zeros((h, w), dtype=bool)
    if 2 * border < h and 2 * border < w:
        m[border : h - border, border : w - border] = True
    return m


def topk_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values of a 1-D array, sorted by (score desc, index asc)."""
    n = scores.shape[0]
    if k >= n:
        sel = np.arange(n)
    else:
        kth = np.partition(scores, n - k)[n - k]  # k-th largest value
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)[: k - above.size]
        sel = np.concatenate([above, ties])
    order = np.lexsort((sel, -scores[sel]))
    return sel[order]


def refine_subpixel(heat: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Refine integer peaks with a separable quadratic fit on the 3x3 neighbourhood.

    heat: [H, W]; xy: int [N, 2] (x, y). Returns float32 [N, 2]; each offset is clipped to
    [-0.5, 0.5] so the refined point stays within the peak's pixel.
    """
    h, w = heat.shape
    x = xy[:, 0].astype(np.int64)
    y = xy[:, 1].astype(np.int64)
    c = heat[y, x].astype(np.float64)
    left = heat[y, np.clip(x - 1, 0, w - 1)].astype(np.float64)
    right = heat[y, np.clip(x + 1, 0, w - 1)].astype(np.float64)
    up = heat[np.clip(y - 1, 0, h - 1), x].astype(np.float64)
    down = heat[np.clip(y + 1, 0, h - 1), x].astype(np.float64)

    def offset(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        den = a - 2.0 * c + b
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(den < 0, 0.5 * (a - b) / den, 0.0)
        return np.clip(d, -0.5, 0.5)

    out = np.stack([x + offset(left, right), y + offset(up, down)], axis=1)
    return out.astype(np.float32)


def decode(heatmap: np.ndarray, config: DecodeConfig, *, logits: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode one heatmap into keypoints.

    Args:
        heatmap: float [H, W] logits (``logits=True``) or probabilities.
        config: decoding settings.
    Returns:
        xy float32 [N, 2] in heatmap pixels and scores float32 [N] (probabilities), sorted by
        score descending, N <= config.max_keypoints.
    """
    if heatmap.ndim != 2:
        raise ValueError(f"decode expects a heatmap [H, W], got shape {heatmap.shape}")
    work = np.asarray(heatmap, dtype=np.float32)
    thr = logit(config.threshold) if logits else config.threshold
    keep = nms_mask(work, config.nms_radius)
    keep &= border_mask(work.shape, config.border)
    keep &= work > thr
    idx = np.flatnonzero(keep)
    vals = work.reshape(-1)[idx]
    order = topk_indices(vals, config.max_keypoints)
    idx, vals = idx[order], vals[order]
    w = work.shape[1]
    xy = np.stack([idx % w, idx // w], axis=1)
    if config.subpixel:
        xy = refine_subpixel(work, xy)
    scores = sigmoid(vals) if logits else vals
    return xy.astype(np.float32), scores.astype(np.float32)
