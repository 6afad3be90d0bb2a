"""Point-set selection over arbitrary keypoints (numpy only): suppression, top-k, grid bucketing.

These work on keypoints from any detector (kpnet, OpenCV, ALIKED), so every detector in a
benchmark passes exactly the same selection. Conventions: ``xy`` is float [N, 2] (x, y) in
pixels, ``scores`` float [N] (higher is better); every function returns int64 indices into
the input, sorted by (score descending, index ascending) unless stated otherwise. Ties in
score are broken by the lower index, so results are deterministic.
"""

from __future__ import annotations

import numpy as np

__all__ = ["score_order", "topk", "greedy_suppress", "grid_select", "duplicate_fraction", "neighbour_pairs"]

#: Rounds of the parallel suppression before the exact sequential finish takes over.
_PARALLEL_ROUNDS = 12


def _check(xy: np.ndarray, scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    xy = np.asarray(xy, np.float64)
    if xy.size == 0:
        xy = xy.reshape(0, 2)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must be [N, 2] (x, y), got shape {xy.shape}")
    if scores is not None:
        scores = np.asarray(scores, np.float64).reshape(-1)
        if scores.shape[0] != xy.shape[0]:
            raise ValueError(f"scores must be [N] with N = len(xy) = {xy.shape[0]}, got shape {scores.shape}")
    return xy, scores


def score_order(scores: np.ndarray) -> np.ndarray:
    """int64 [N]: indices sorting ``scores`` descending, ties by ascending index."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    return np.lexsort((np.arange(scores.size), -scores)).astype(np.int64)


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """int64 [min(k, N)]: indices of the ``k`` highest scores, best first (ties: lower index)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return score_order(scores)[:k]


def neighbour_pairs(xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs (i, j), i != j, with distance strictly below ``radius`` px.

    Grid hashing with cells of ``radius`` px: only a cell and its neighbours are compared, so
    the cost is linear in N for spread-out points. Returns two int64 arrays [P] (each pair
    once, in no particular order)."""
    xy, _ = _check(xy)
    n = len(xy)
    empty = np.zeros(0, np.int64)
    if n < 2 or radius <= 0:
        return empty, empty
    cell = np.floor(xy / radius).astype(np.int64)
    cell -= cell.min(axis=0) - 1  # >= 1, so the -1 offset below stays in range
    stride = int(cell[:, 1].max()) + 2
    key = cell[:, 0] * stride + cell[:, 1]
    order = np.argsort(key, kind="stable")
    skey = key[order]
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    ii, jj = [], []
    # The own cell (pairs later in sorted order) and four of the eight neighbours: each pair once.
    for dx, dy in ((0, 0), (1, -1), (1, 0), (1, 1), (0, 1)):
        target = key + dx * stride + dy
        lo = np.searchsorted(skey, target, side="left")
        hi = np.searchsorted(skey, target, side="right")
        if dx == 0 and dy == 0:
            lo = np.maximum(lo, pos + 1)
        cnt = np.maximum(hi - lo, 0)
        total = int(cnt.sum())
        if total == 0:
            continue
        src = np.repeat(np.arange(n), cnt)
        # Position of each pair inside its source's run: 0..cnt-1.
        starts = np.repeat(np.cumsum(cnt) - cnt, cnt)
        dst = order[np.repeat(lo, cnt) + np.arange(total) - starts]
        ii.append(src)
        jj.append(dst)
    if not ii:
        return empty, empty
    i = np.concatenate(ii)
    j = np.concatenate(jj)
    d2 = ((xy[i] - xy[j]) ** 2).sum(axis=1)
    near = d2 < radius * radius
    return i[near], j[near]


def greedy_suppress(xy: np.ndarray, scores: np.ndarray, radius: float) -> np.ndarray:
    """Greedy spatial suppression by score, as ``cv2.goodFeaturesToTrack``'s ``minDistance``.

    Points are visited by descending score (ties: lower index first); a point is kept unless a
    point kept before it lies strictly closer than ``radius`` px. ``radius <= 0`` keeps all.

    Args:
        xy: float [N, 2] (x, y) in pixels.
        scores: float [N], higher is better.
        radius: suppression radius in pixels of ``xy``'s image.

    Returns:
        int64 [M] indices of the kept points, sorted by (score desc, index asc).

    Exact and vectorised: a point with no undecided stronger neighbour is kept for sure, and
    its neighbours are then suppressed; a few such rounds decide almost everything, and the
    rest (long chains of decreasing scores) is finished sequentially.
    """
    xy, scores = _check(xy, scores)
    n = len(xy)
    order = score_order(scores)
    if n == 0 or radius <= 0:
        return order
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    i, j = neighbour_pairs(xy, radius)
    if i.size == 0:
        return order
    # Orient each pair stronger -> weaker.
    swap = rank[i] > rank[j]
    hi = np.where(swap, j, i)
    lo = np.where(swap, i, j)
    UNDECIDED, KEPT, GONE = 0, 1, 2
    state = np.zeros(n, np.int8)
    for _ in range(_PARALLEL_ROUNDS):
        live = (state[hi] == UNDECIDED) & (state[lo] == UNDECIDED)
        if not live.any():
            break
        blocked = np.zeros(n, bool)
        blocked[lo[live]] = True
        newly = (state == UNDECIDED) & ~blocked
        state[newly] = KEPT
        hit = newly[hi] & (state[lo] == UNDECIDED)
        state[lo[hit]] = GONE
    rest = order[state[order] == UNDECIDED]
    if rest.size:
        # Sequential finish over a CSR adjacency (stronger -> weaker pairs only).
        by = np.argsort(hi, kind="stable")
        nb = lo[by]
        indptr = np.searchsorted(hi[by], np.arange(n + 1))
        for p in rest.tolist():
            if state[p] == UNDECIDED:
                state[p] = KEPT
                w = nb[indptr[p] : indptr[p + 1]]
                state[w[state[w] == UNDECIDED]] = GONE
    return order[state[order] != GONE]


def grid_select(
    xy: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    k: int,
    grid: tuple[int, int] = (12, 16),
) -> np.ndarray:
    """At most ``k`` points spread over a rows x cols grid of the image, best first per cell.

    Bucketing as ORB-SLAM's and OpenVINS's: every cell gets the same quota q, the smallest
    that fills the budget given how many points each cell holds, so cells with fewer points
    give their slack to the others; the points at rank q-1 of their cell fill the remainder
    by score.

    Args:
        xy: float [N, 2] (x, y) pixels; points outside the image go to the nearest edge cell.
        scores: float [N], higher is better.
        image_size: (width, height) of the image in pixels.
        k: budget (>= 0).
        grid: (rows, cols), positive ints.

    Returns:
        int64 [min(k, N)] indices sorted by (score desc, index asc).
    """
    xy, scores = _check(xy, scores)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if len(grid) != 2 or int(grid[0]) < 1 or int(grid[1]) < 1:
        raise ValueError(f"grid must be (rows, cols) with two positive ints, got {grid!r}")
    w, h = image_size
    if w <= 0 or h <= 0:
        raise ValueError(f"image_size must be (width, height) > 0, got {image_size!r}")
    n = len(xy)
    if n <= k:
        return score_order(scores)
    if k == 0:
        return np.zeros(0, np.int64)
    rows, cols = int(grid[0]), int(grid[1])
    cx = np.clip(np.floor((xy[:, 0] + 0.5) * cols / w), 0, cols - 1).astype(np.int64)
    cy = np.clip(np.floor((xy[:, 1] + 0.5) * rows / h), 0, rows - 1).astype(np.int64)
    cell = cy * cols + cx
    by_cell = np.lexsort((np.arange(n), -scores, cell))
    sc = cell[by_cell]
    rank = np.empty(n, np.int64)
    rank[by_cell] = np.arange(n) - np.searchsorted(sc, sc, side="left")
    counts = np.bincount(cell, minlength=rows * cols)
    lo, hi = 1, int(counts.max())
    while lo < hi:  # smallest q with sum(min(count, q)) >= k; monotone in q
        mid = (lo + hi) // 2
        if np.minimum(counts, mid).sum() >= k:
            hi = mid
        else:
            lo = mid + 1
    sure = np.flatnonzero(rank < lo - 1)
    edge = np.flatnonzero(rank == lo - 1)
    edge = edge[topk(scores[edge], k - sure.size)]
    sel = np.concatenate([sure, edge])
    return sel[score_order(scores[sel])]


def duplicate_fraction(xy: np.ndarray, radius: float = 2.0) -> float:
    """Fraction of points that have another point strictly closer than ``radius`` px, in [0, 1].

    Measures duplicates in a raw detector output (e.g. ORB's same corner at several pyramid
    levels). 0.0 for fewer than two points."""
    xy, _ = _check(xy)
    if len(xy) < 2:
        return 0.0
    i, j = neighbour_pairs(xy, radius)
    has = np.zeros(len(xy), bool)
    has[i] = True
    has[j] = True
    return float(has.mean())
