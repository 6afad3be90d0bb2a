import numpy as np

from kpnet.metrics import corner_error, mutual_nn_matches, repeatability, warp_points


def test_perfect_and_partial_repeatability():
    H = np.array([[1, 0, 10], [0, 1, 5], [0, 0, 1]], np.float64)
    xy1 = np.array([[20, 20], [50, 40], [95, 70]], np.float64)  # the last one leaves image 2
    xy2 = warp_points(xy1[:2], H) + [[1.0, 0.0], [0.0, 2.0]]
    r = repeatability(xy1, xy2, H, (100, 80), (100, 80), eps=3)
    assert (r.n1, r.n2, r.n_repeated) == (2, 2, 2)
    assert r.repeatability == 1.0
    assert abs(r.loc_error - 1.5) < 1e-9
    r = repeatability(xy1, xy2, H, (100, 80), (100, 80), eps=1.5)
    assert r.repeatability == 0.5  # only the 1-px point repeats, in both directions


def test_no_points():
    r = repeatability(np.zeros((0, 2)), np.zeros((0, 2)), np.eye(3), (10, 10), (10, 10))
    assert r.repeatability == 0.0 and np.isnan(r.loc_error)


def test_corner_error():
    H = np.eye(3)
    assert corner_error(H, H, (640, 480)) == 0.0
    T = np.array([[1, 0, 3], [0, 1, 4], [0, 0, 1]], np.float64)
    assert abs(corner_error(T, H, (640, 480)) - 5.0) < 1e-9
    assert corner_error(None, H, (640, 480)) == float("inf")


def test_mutual_nn():
    d1 = np.array([[0, 0], [1, 0], [5, 5]], np.float32)
    d2 = np.array([[1.1, 0], [0.1, 0]], np.float32)
    m = mutual_nn_matches(d1, d2)
    assert sorted(map(tuple, m.tolist())) == [(0, 1), (1, 0)]
