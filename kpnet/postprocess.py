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

from typing import Callable

import cv2
import numpy as np

from .config import DecodeConfig
from .selection import grid_select


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


def anms_levels(work: np.ndarray, idx: np.ndarray, base_radius: int, k: int | None = None) -> np.ndarray:
    """Suppression level of each candidate: how many times the NMS radius can be doubled
    (base, 2x, 4x, ... up to a quarter of the image) with the point still the maximum of
    its window. Radius-based ANMS quantised to octaves, by chained max filters.

    With ``k``, stop once at most k candidates survive a level: all of them are selected
    whatever their higher levels, so the top-k set by (level, score) is unchanged."""
    level = np.zeros(idx.size, np.int64)
    flat = work.reshape(-1)
    r = max(1, base_radius)
    cur = work
    step = r
    limit = max(work.shape) // 4
    lvl = 0
    while r <= limit:
        cur = cv2.dilate(cur, np.ones((2 * step + 1, 2 * step + 1), np.uint8))
        still = flat[idx] >= cur.reshape(-1)[idx]
        level[still] = lvl + 1
        if not still.any() or (k is not None and still.sum() <= k):
            break
        lvl += 1
        step = r  # the next window doubles the radius: (r) + (r) by chaining
        r *= 2
    return level


#: Cell size (pixels) of the local-contrast measure behind ``DecodeConfig.min_contrast``.
CONTRAST_CELL = 4


def cell_contrast(image: np.ndarray, cell: int = CONTRAST_CELL) -> np.ndarray:
    """Local contrast in grey levels (0-255 scale), float32 [H // cell, W // cell].

    ``image`` float32 [H, W] in [0, 1]. The image is averaged over ``cell`` x ``cell`` blocks
    (sensor noise averages out, structure does not) and each block gets the standard deviation
    of the 3x3 blocks around it (a 12x12-pixel neighbourhood for cells of 4)."""
    h, w = image.shape
    hc, wc = max(1, h // cell), max(1, w // cell)
    img = np.asarray(image, np.float32)
    if cell == 4 and h % 4 == 0 and w % 4 == 0:
        # Two exact 2x2 averages are the 4x4 average, and OpenCV's factor-2 path is 2.5x faster.
        small = cv2.resize(
            cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (wc, hc), interpolation=cv2.INTER_AREA
        )
    else:
        small = cv2.resize(img, (wc, hc), interpolation=cv2.INTER_AREA)
    small *= 255.0
    m = cv2.blur(small, (3, 3))
    m2 = cv2.blur(small * small, (3, 3))
    np.subtract(m2, m * m, out=m2)
    np.maximum(m2, 0.0, out=m2)
    return np.sqrt(m2, out=m2)


def decode(
    heatmap: np.ndarray,
    config: DecodeConfig,
    *,
    logits: bool = True,
    allowed: np.ndarray | None = None,
    nms_radius: int | None = None,
    contrast: np.ndarray | None = None,
    suppress: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one heatmap into keypoints (all settings in heatmap pixels).

    Args:
        heatmap: float [H, W] logits (``logits=True``) or probabilities.
        config: decoding settings (distribution, grid, budget, ...). ``min_distance`` is not
            applied here (it is in original pixels): pass ``suppress``.
        allowed: optional bool [H, W]; False pixels can neither be keypoints nor suppress others.
        nms_radius: overrides ``config.nms_radius``.
        contrast: optional :func:`cell_contrast` map of the image; with ``config.min_contrast``
            > 0, candidates in cells of contrast <= min_contrast are dropped.
        suppress: optional ``fn(xy float [M, 2] heatmap pixels, rank key float [M]) -> kept
            indices``, applied to the ranked candidates before the budget is taken (the
            detector's greedy ``min_distance`` in original pixels).
    Returns:
        xy float32 [N, 2] in heatmap pixels and scores float32 [N] (probabilities), sorted by
        score descending, N <= config.max_keypoints.
    """
    if heatmap.ndim != 2:
        raise ValueError(f"decode expects a heatmap [H, W], got shape {heatmap.shape}")
    work = np.asarray(heatmap, dtype=np.float32)
    if allowed is not None:
        if allowed.shape != work.shape:
            raise ValueError(f"allowed mask has shape {allowed.shape}, the heatmap {work.shape}")
        work = np.where(allowed, work, np.float32(-np.inf))
    radius = config.nms_radius if nms_radius is None else nms_radius
    thr = logit(config.threshold) if logits else config.threshold
    # Threshold first: it is one comparison and usually removes most pixels.
    keep = work > thr
    keep &= nms_mask(work, radius)
    b = config.border
    if b:
        h, w_ = work.shape
        if 2 * b >= h or 2 * b >= w_:
            keep[:] = False
        else:
            keep[:b] = False
            keep[h - b :] = False
            keep[:, :b] = False
            keep[:, w_ - b :] = False
    idx = np.flatnonzero(keep)
    w = work.shape[1]
    if contrast is not None and config.min_contrast > 0 and idx.size:
        c = CONTRAST_CELL
        cy = np.minimum(idx // w // c, contrast.shape[0] - 1)
        cx = np.minimum(idx % w // c, contrast.shape[1] - 1)
        idx = idx[contrast[cy, cx] > config.min_contrast]
    vals = work.reshape(-1)[idx]
    k = config.max_keypoints
    level = None
    if config.distribution == "anms" and idx.size > k:
        level = anms_levels(work, idx, radius, None if suppress is not None else k)
    if suppress is not None and idx.size > 1:
        # Rank key: the order the budget is taken in (ANMS level first, then score).
        order = np.lexsort((idx, -vals)) if level is None else np.lexsort((idx, -vals, -level))
        key = np.empty(idx.size, np.float64)
        key[order] = -np.arange(idx.size, dtype=np.float64)
        xy_c = np.stack([idx % w, idx // w], axis=1).astype(np.float32)
        kept = np.sort(suppress(xy_c, key))
        idx, vals = idx[kept], vals[kept]
        level = None if level is None else level[kept]
    if config.distribution == "grid":
        # Cells hold the heatmap pixels whose index falls in them (pixel x spans [x, x + 1));
        # kpnet.selection buckets a point by x + 0.5, hence the half-pixel shift.
        xy_all = np.stack([idx % w, idx // w], axis=1) - 0.5
        order = grid_select(xy_all, vals, (w, work.shape[0]), k, config.grid)
    elif level is not None and idx.size > k:
        best = np.lexsort((idx, -vals, -level))[:k]
        order = best[topk_indices(vals[best], best.size)]
    else:
        order = topk_indices(vals, k)
    idx, vals = idx[order], vals[order]
    xy = np.stack([idx % w, idx // w], axis=1)
    if config.subpixel:
        xy = refine_subpixel(np.where(np.isfinite(work), work, np.float32(-1e4)), xy)
    scores = sigmoid(vals) if logits else vals
    return xy.astype(np.float32), scores.astype(np.float32)
