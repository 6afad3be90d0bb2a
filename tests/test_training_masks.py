"""Binary and blob label masks."""

from __future__ import annotations

import numpy as np
import pytest

from training.masks import binary_mask, blob_mask


def test_blob_peak_and_floor_are_exact():
    m = blob_mask(np.array([[20.0, 10.0]]), (40, 30), sigma=2.0)
    assert m.dtype == np.float32 and m.shape == (30, 40)
    assert m[10, 20] == np.float32(0.9)
    assert m.max() == np.float32(0.9)
    assert m[0, 0] == np.float32(0.1) and m.min() == np.float32(0.1)
    assert (m[:, :10] == np.float32(0.1)).all()


def test_blob_is_centred_on_subpixel_points():
    for x, y in [(15.0, 12.0), (15.3, 12.7), (20.5, 9.25)]:
        m = blob_mask(np.array([[x, y]]), (40, 30), sigma=1.5).astype(np.float64) - 0.1
        ys, xs = np.mgrid[0:30, 0:40]
        cx, cy = (m * xs).sum() / m.sum(), (m * ys).sum() / m.sum()
        assert abs(cx - x) < 0.02 and abs(cy - y) < 0.02
        # value at a pixel follows the Gaussian formula
        assert m[12, 15] + 0.1 == pytest.approx(
            0.1 + 0.8 * np.exp(-((15 - x) ** 2 + (12 - y) ** 2) / (2 * 1.5**2)), abs=1e-6
        )


def test_empty_points_give_constant_floor():
    m = blob_mask(np.zeros((0, 2)), (16, 8))
    assert m.shape == (8, 16) and (m == np.float32(0.1)).all()


def test_overlapping_blobs_take_the_max_and_sigma_scales():
    pts = np.array([[10.0, 10.0], [12.0, 10.0]])
    both = blob_mask(pts, (30, 20), sigma=2.0)
    a = blob_mask(pts[:1], (30, 20), sigma=2.0)
    b = blob_mask(pts[1:], (30, 20), sigma=2.0)
    np.testing.assert_array_equal(both, np.maximum(a, b))
    assert blob_mask(pts[:1], (30, 20), sigma=3.0)[10, 13] > a[10, 13]
    with pytest.raises(ValueError, match="sigma must be > 0"):
        blob_mask(pts, (30, 20), sigma=0)


def test_binary_mask_rounds_and_ignores_outside_points():
    m = binary_mask(np.array([[3.4, 2.6], [-3.0, 1.0], [9.0, 9.0]]), (8, 6))
    assert m.dtype == np.uint8 and m.shape == (6, 8)
    assert m.sum() == 1 and m[3, 3] == 1
