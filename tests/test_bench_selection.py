"""kpnet.selection (suppression, top-k, grid bucketing, duplicates) and kpnet.baselines."""

import cv2
import numpy as np
import pytest

from kpnet.baselines import CLASSICAL, SETTINGS, make_classical
from kpnet.selection import duplicate_fraction, greedy_suppress, grid_select, neighbour_pairs, topk


def _brute_suppress(xy, scores, radius):
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, np.float64)))
    kept = []
    for p in order:
        if all(((xy[p] - xy[q]) ** 2).sum() >= radius * radius for q in kept):
            kept.append(p)
    return np.array(kept, np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_suppress_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for trial in range(40):
        n = int(rng.integers(0, 250))
        xy = rng.uniform(0, rng.uniform(5, 80), (n, 2)).astype(np.float32)
        if trial % 3 == 0:
            xy = np.round(xy)  # exact duplicates and distances equal to the radius
        scores = rng.integers(0, 4, n).astype(np.float32) if trial % 2 else rng.random(n).astype(np.float32)
        radius = float(rng.choice([1.0, 2.0, 4.0, 6.5]))
        got = greedy_suppress(xy, scores, radius)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, _brute_suppress(xy.astype(np.float64), scores, radius))


def test_greedy_suppress_chain_and_edge_cases():
    # A long chain of decreasing scores 1 px apart needs the sequential finish: every other point.
    n = 3000
    xy = np.stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)], 1)
    np.testing.assert_array_equal(greedy_suppress(xy, -np.arange(n, dtype=np.float32), 1.5), np.arange(0, n, 2))
    # Strictly closer than the radius is suppressed; exactly at the radius is kept (as GFTT).
    np.testing.assert_array_equal(
        greedy_suppress(np.array([[0, 0], [4, 0]], np.float32), np.array([1, 0.5], np.float32), 4.0), [0, 1]
    )
    np.testing.assert_array_equal(
        greedy_suppress(np.array([[0, 0], [3.9, 0]], np.float32), np.array([0.5, 1], np.float32), 4.0), [1]
    )
    assert greedy_suppress(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), 4).shape == (0,)
    np.testing.assert_array_equal(
        greedy_suppress(np.zeros((3, 2)), np.array([0.1, 0.3, 0.2]), 0), [1, 2, 0]
    )  # radius 0 keeps all
    with pytest.raises(ValueError, match=r"xy must be \[N, 2\]"):
        greedy_suppress(np.zeros((3, 3)), np.zeros(3), 2)
    with pytest.raises(ValueError, match="scores must be"):
        greedy_suppress(np.zeros((3, 2)), np.zeros(2), 2)


def test_greedy_suppress_is_fast_for_many_points():
    import time

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 640, (40000, 2)).astype(np.float32)
    s = rng.random(40000).astype(np.float32)
    t0 = time.perf_counter()
    keep = greedy_suppress(xy, s, 4.0)
    assert time.perf_counter() - t0 < 2.0
    i, j = neighbour_pairs(xy[keep], 4.0)
    assert i.size == 0  # no two kept points closer than the radius


def test_topk_and_grid_select():
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.2], np.float32)
    np.testing.assert_array_equal(topk(s, 3), [1, 3, 2])  # ties: lower index first
    np.testing.assert_array_equal(topk(s, 10), [1, 3, 2, 4, 0])
    # 2x2 grid on 100x100: a crowded top-left cell and three sparse cells.
    rng = np.random.default_rng(1)
    crowd = rng.uniform(0, 49, (40, 2))
    sparse = np.array([[75, 10], [10, 75], [75, 75]], np.float64)
    xy = np.concatenate([crowd, sparse]).astype(np.float32)
    scores = np.concatenate([rng.uniform(0.5, 1, 40), [0.01, 0.02, 0.03]]).astype(np.float32)
    sel = grid_select(xy, scores, (100, 100), 8, grid=(2, 2))
    assert len(sel) == 8 and set([40, 41, 42]) <= set(sel.tolist())  # sparse cells all get in
    assert set(sel.tolist()) - {40, 41, 42} == set(topk(scores[:40], 5).tolist())  # slack goes to the crowded cell
    assert np.all(np.diff(scores[sel]) <= 0)
    # plain top-k would take only the crowded cell
    assert not set(topk(scores, 8).tolist()) & {40, 41, 42}
    np.testing.assert_array_equal(grid_select(xy[:3], scores[:3], (100, 100), 8), topk(scores[:3], 3))
    with pytest.raises(ValueError, match="grid must be"):
        grid_select(xy, scores, (100, 100), 8, grid=(0, 2))


def test_duplicate_fraction():
    xy = np.array([[0, 0], [1, 0], [10, 10], [20, 20], [20.5, 20]], np.float32)
    assert duplicate_fraction(xy, 2.0) == pytest.approx(4 / 5)
    assert duplicate_fraction(xy, 0.6) == pytest.approx(2 / 5)
    assert duplicate_fraction(xy[:1]) == 0.0


def _scene(h=240, w=320, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 60, np.uint8)
    for _ in range(30):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        cv2.rectangle(
            img, (x, y), (x + int(rng.integers(8, 40)), y + int(rng.integers(8, 40))), int(rng.integers(100, 255)), -1
        )
    return cv2.GaussianBlur(img, (3, 3), 0)


@pytest.mark.parametrize("name", CLASSICAL)
def test_classical_factory_raw_sorted_output(name):
    img = _scene()
    det = make_classical(name, 150)
    xy, scores = det(img)
    assert xy.dtype == np.float32 and scores.dtype == np.float32
    assert xy.shape == (len(scores), 2) and 0 < len(scores) <= 150
    assert np.all(np.diff(scores) <= 0)
    assert (xy >= 0).all() and (xy[:, 0] < 320).all() and (xy[:, 1] < 240).all()
    mask = np.zeros_like(img)
    mask[:, :160] = 255
    xy_m, _ = det(img, mask)
    assert len(xy_m) and (xy_m[:, 0] < 161).all()
    assert name in SETTINGS


def test_classical_factory_errors():
    with pytest.raises(
        ValueError, match="unknown classical detector 'surf'; choose from: orb, fast, gftt, harris, sift"
    ):
        make_classical("surf", 100)
    with pytest.raises(ValueError, match="max_keypoints must be an int >= 1"):
        make_classical("orb", 0)
    with pytest.raises(ValueError, match="gray uint8"):
        make_classical("fast", 10)(np.zeros((8, 8, 3), np.uint8))
