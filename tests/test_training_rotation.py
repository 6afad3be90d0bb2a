"""Rotation and scale augmentation: full-circle rotations in phase 1 and phase 2, labels and
valid masks warped with the image, mean padding and the eroded valid band."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kornia")
cv2 = pytest.importorskip("cv2")

from test_training_loop_smoke import make_cache  # noqa: E402

from training.augment import GeometricAug, erode_valid, render_view, sample_view_transform  # noqa: E402
from training.cache import CacheEntry, load_cache  # noqa: E402
from training.data import Phase1Dataset, Phase2Dataset, view_target  # noqa: E402
from training.train_config import TrainConfig  # noqa: E402

SRC = (128, 96)  # (width, height)
CROP = (64, 96)  # (height, width)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return load_cache(make_cache(tmp_path_factory.mktemp("rot") / "c", n=4))


def _beyond_support(valid: np.ndarray) -> np.ndarray:
    """Invalid pixels more than 2 px from a valid one (out of reach of the bilinear blend)."""
    return cv2.dilate(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0


def _angle_deg(M: np.ndarray) -> float:
    return math.degrees(math.atan2(M[1, 0], M[0, 0]))


def _textured(seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0 : SRC[1], 0 : SRC[0]].astype(np.float32)
    img = 128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 4.0) + 30 * np.sin((xx + yy) / 11.0 + seed)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_rotation_is_uniform_over_the_circle():
    aug = GeometricAug(scale_range=(1.0, 1.0), max_rotation_deg=180.0, perspective=0.0)
    angles = np.array([_angle_deg(sample_view_transform(SRC, CROP, aug, np.random.default_rng(s))) for s in range(400)])
    assert angles.min() < -170 and angles.max() > 170
    counts = np.histogram(angles, bins=4, range=(-180, 180))[0]
    assert counts.min() > 0.18 * len(angles), counts  # every quadrant, about a quarter each


def test_upright_share():
    aug = GeometricAug(scale_range=(1.0, 1.0), max_rotation_deg=180.0, perspective=0.0, upright_prob=0.25)
    angles = np.array([_angle_deg(sample_view_transform(SRC, CROP, aug, np.random.default_rng(s))) for s in range(400)])
    upright = np.abs(angles) < 1e-9
    assert 0.17 < upright.mean() < 0.33
    assert np.abs(angles[~upright]).max() > 150
    # the option draws nothing when off: the default stream is unchanged
    a = sample_view_transform(SRC, CROP, GeometricAug(upright_prob=0.0), np.random.default_rng(3))
    rng = np.random.default_rng(3)
    b = sample_view_transform(SRC, CROP, GeometricAug(), rng)
    assert np.array_equal(a, b)


def test_dense_target_and_valid_mask_move_with_the_rotated_image():
    img = _textured()
    entry = CacheEntry(
        "x",
        img,
        np.zeros((0, 2), np.float32),
        np.zeros(0, np.float32),
        np.zeros((0, 3, 3)),
        [],
        dense=img.astype(np.float32) / 255.0,
    )
    aug = GeometricAug(scale_range=(0.6, 1.6), max_rotation_deg=180.0, perspective=0.05)
    for seed in range(6):
        M = sample_view_transform(SRC, CROP, aug, np.random.default_rng(seed))
        view, valid = render_view(img, M, CROP)
        target = view_target("dense", entry, M, CROP, 1.5)
        assert valid.sum() > 0.2 * valid.size
        # the target is the same warp of the same map: equal on valid pixels
        np.testing.assert_allclose(target[valid], view[valid], atol=1.5 / 255)
        far = _beyond_support(valid)
        assert (view[far] == 0).all() and (target[far] < 1e-6).all()


def test_mean_fill_and_eroded_valid_band():
    img = _textured()
    M = cv2.getRotationMatrix2D(((SRC[0] - 1) / 2, (SRC[1] - 1) / 2), 45.0, 1.0)
    M = np.vstack([M, [0, 0, 1]])
    M[0, 2] -= (SRC[0] - CROP[1]) / 2  # crop the centre
    M[1, 2] -= (SRC[1] - CROP[0]) / 2
    view0, valid0 = render_view(img, M, CROP)
    view, valid = render_view(img, M, CROP, fill="mean")
    assert (~valid0).sum() > 100  # a 45-degree view has empty corners
    far = _beyond_support(valid0)
    assert far.sum() > 50
    np.testing.assert_allclose(view[far], img.mean() / 255.0, atol=1 / 255)
    np.testing.assert_array_equal(view[valid0], view0[valid0])  # the image itself is unchanged (inside its support)
    for e in (1, 3, 5):
        _, eroded = render_view(img, M, CROP, fill="mean", erode=e)
        assert not (eroded & ~valid0).any()
        # distance (chessboard) of every valid pixel to the nearest invalid one
        dist = cv2.distanceTransform(valid0.astype(np.uint8), cv2.DIST_C, 3)
        np.testing.assert_array_equal(eroded, dist > e)
    # the crop's own frame is not a padding edge: a view inside the image stays fully valid
    inside = np.array([[1.0, 0, -10], [0, 1, -10], [0, 0, 1]])
    assert render_view(img, inside, CROP, erode=4)[1].all()
    assert erode_valid(np.ones((5, 5), bool), 2).all()
    with pytest.raises(ValueError, match="unknown fill 'black'; choose from: zero, mean"):
        render_view(img, M, CROP, fill="black")


def test_phase1_sample_full_rotation_mean_fill_erosion(cache):
    cfg = TrainConfig(cache="c", crop=CROP, max_rotation_deg=180.0, photometric=False, pad_fill="mean", valid_erode=3)
    plain = TrainConfig(cache="c", crop=CROP, max_rotation_deg=180.0, photometric=False)
    seen_invalid = 0
    for index in range(len(cache)):
        for epoch in range(3):
            s = Phase1Dataset(cache, cfg)[(epoch, index)]
            p = Phase1Dataset(cache, plain)[(epoch, index)]
            # same draw, so the same geometry: the eroded mask lies inside the plain one
            assert not (s["valid"] & ~p["valid"]).any()
            np.testing.assert_array_equal(s["target"], p["target"])
            bad = _beyond_support(p["valid"][0])
            seen_invalid += int(bad.sum())
            if bad.any():
                mean = cache[index].image.mean() / 255.0
                np.testing.assert_allclose(s["image"][0][bad], mean, atol=1 / 255)
                assert s["valid"].sum() < p["valid"].sum()
    assert seen_invalid > 0


def _similarity(H: np.ndarray, crop) -> tuple[float, float]:
    """Rotation (degrees) and scale of H's local affine map at the crop centre."""
    h, w = crop
    c = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    z = H[2] @ c
    J = (H[:2, :2] * z - np.outer(H[:2] @ c, H[2, :2])) / z**2
    return math.degrees(math.atan2(J[1, 0] - J[0, 1], J[0, 0] + J[1, 1])), math.sqrt(abs(np.linalg.det(J)))


def test_phase2_pairs_any_rotation_and_scale_half_to_double(cache):
    cfg = TrainConfig(
        phase=2,
        cache="c",
        crop=CROP,
        photometric=False,
        max_rotation_deg=180.0,
        scale_range=(0.71, 1.41),
        pad_fill="mean",
        valid_erode=2,
        direct_weight=1.0,
    )
    ds = Phase2Dataset(cache, cfg)
    rots, scales = [], []
    for index in range(len(cache)):
        for epoch in range(12):
            s = ds[(epoch, index)]
            r, sc = _similarity(s["H"], CROP)
            rots.append(r)
            scales.append(sc)
            if epoch < 2:  # view 1 is view 0 warped by H where both are valid
                H = s["H"]
                warped = cv2.warpPerspective(s["image0"][0], H, (CROP[1], CROP[0]), flags=cv2.INTER_LINEAR)
                both = s["valid1"][0] & (
                    cv2.warpPerspective(s["valid0"][0].astype(np.uint8), H, (CROP[1], CROP[0]), flags=cv2.INTER_NEAREST)
                    > 0
                )
                both = cv2.erode(both.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
                if both.sum() > 200:
                    assert np.abs(warped - s["image1"][0])[both].mean() < 0.04
                # the direct targets are warped with their views
                t0 = cv2.warpPerspective(s["target0"][0], H, (CROP[1], CROP[0]), flags=cv2.INTER_LINEAR)
                if both.sum() > 200:
                    assert np.abs(t0 - s["target1"][0])[both].mean() < 0.05
    rots, scales = np.array(rots), np.array(scales)
    assert rots.min() < -120 and rots.max() > 120  # pairs differ by large angles of both signs
    assert (np.abs(rots) > 90).mean() > 0.25
    # view scales in [0.71, 1.41] give relative scales in [0.5, 2], times the cached pair's own
    # (SuperPoint-style, +-20%) scaling
    assert scales.min() > 0.5 * 0.75 and scales.max() < 2.0 / 0.75
    assert scales.min() < 0.75 and scales.max() > 1.33


def test_new_flags_validate():
    with pytest.raises(ValueError, match="unknown pad_fill 'black'; choose from: zero, mean"):
        TrainConfig(cache="c", pad_fill="black")
    with pytest.raises(ValueError, match="valid_erode must be an int >= 0"):
        TrainConfig(cache="c", valid_erode=-1)
    with pytest.raises(ValueError, match=r"upright_prob must be a probability in \[0, 1\]"):
        TrainConfig(cache="c", upright_prob=1.5)
    with pytest.raises(ValueError, match=r"max_rotation_deg must be in \[0, 180\]"):
        TrainConfig(cache="c", max_rotation_deg=270)
    d = TrainConfig(cache="c")
    assert (d.pad_fill, d.valid_erode, d.upright_prob, d.max_rotation_deg) == ("zero", 0, 0.0, 10.0)
