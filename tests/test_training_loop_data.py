"""Training data: labels move with the image, phase-2 homographies are right, the split and
the data order are deterministic, shard over processes and can start mid-epoch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kornia")
cv2 = pytest.importorskip("cv2")

from test_training_loop_smoke import make_cache  # noqa: E402

from training.augment import GeometricAug, photometric, render_view, sample_view_transform, transform_points  # noqa: E402
from training.cache import load_cache  # noqa: E402
from training.data import Phase1Dataset, Phase2Dataset, StepBatchSampler, split_indices  # noqa: E402
from training.homography import warp_points  # noqa: E402
from training.train_config import TrainConfig  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return load_cache(make_cache(tmp_path_factory.mktemp("data") / "c", n=6))


def test_geometric_augmentation_moves_labels_with_the_image():
    # bright single pixels at known points; after a random view transform, each moved point
    # must sit on a bright pixel of the rendered crop
    img = np.zeros((96, 128), np.uint8)
    pts = np.array([[20, 30], [64, 48], [100, 70], [40, 80]], np.float32)
    for x, y in pts.astype(int):
        img[y - 1 : y + 2, x - 1 : x + 2] = 255
    aug = GeometricAug(scale_range=(0.7, 1.4), max_rotation_deg=30.0, perspective=0.08)
    for seed in range(5):
        M = sample_view_transform((128, 96), (64, 96), aug, np.random.default_rng(seed))
        view, valid = render_view(img, M, (64, 96))
        assert view.shape == (64, 96) and valid.dtype == bool
        moved = transform_points(M, pts, (64, 96))
        for x, y in np.rint(moved).astype(int):
            if 1 <= x < 95 and 1 <= y < 63:
                assert view[y - 1 : y + 2, x - 1 : x + 2].max() > 0.5
        # padding (pixels from outside the source) is marked invalid and black
        assert (view[~valid] == 0).all()


def test_phase1_sample_targets(cache):
    for target in ("sparse", "blob", "dense"):
        cfg = TrainConfig(cache="c", crop=(64, 96), target=target)
        s = Phase1Dataset(cache, cfg)[(0, 1)]
        assert s["image"].shape == s["target"].shape == s["valid"].shape == (1, 64, 96)
        assert s["image"].dtype == np.float32 and 0 <= s["image"].min() and s["image"].max() <= 1
        assert 0 <= s["target"].min() and s["target"].max() <= 1 and s["target"].max() > 0.5
        if target == "sparse":
            assert set(np.unique(s["target"])) == {0.0, 1.0}
        if target == "blob":
            assert s["target"].min() == pytest.approx(0.1) and s["target"].max() <= 0.9 + 1e-6
    # a sample is a pure function of (seed, epoch, index)
    cfg = TrainConfig(cache="c", crop=(64, 96))
    a, b = Phase1Dataset(cache, cfg)[(3, 2)], Phase1Dataset(cache, cfg)[(3, 2)]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["image"], Phase1Dataset(cache, cfg)[(4, 2)]["image"])


def test_phase2_homography_maps_view0_onto_view1(cache):
    cfg = TrainConfig(phase=2, cache="c", crop=(64, 96), photometric=False, direct_weight=1.0, target="dense")
    s = Phase2Dataset(cache, cfg)[(0, 0)]
    H = s["H"]
    # image 1 equals image 0 warped by H wherever both are valid (up to resampling)
    warped = cv2.warpPerspective(s["image0"][0], H, (96, 64), flags=cv2.INTER_LINEAR)
    inner = s["valid1"][0] & (
        cv2.warpPerspective(s["valid0"][0].astype(np.uint8), H, (96, 64), flags=cv2.INTER_NEAREST) > 0
    )
    inner = cv2.erode(inner.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert inner.sum() > 500
    assert np.abs(warped - s["image1"][0])[inner].mean() < 0.03
    # the blob masks of the matched keypoints agree through H: peaks of mask0 land on mask1 peaks
    ys, xs = np.nonzero(s["mask0"][0] > 0.85)
    p1 = np.rint(warp_points(H, np.stack([xs, ys], 1).astype(np.float64))).astype(int)
    ok = (p1[:, 0] >= 0) & (p1[:, 0] < 96) & (p1[:, 1] >= 0) & (p1[:, 1] < 64)
    assert ok.sum() > 3
    assert np.median(s["mask1"][0][p1[ok, 1], p1[ok, 0]]) > 0.5
    assert {"target0", "target1"} <= set(s)


def test_split_and_sampler_are_deterministic_sharded_and_resumable():
    sources = [f"img/{i}.png" for i in range(200)]
    train, val = split_indices(sources, 0.1)
    assert (train, val) == split_indices(list(sources), 0.1) and 8 <= len(val) <= 35
    assert sorted(train + val) == list(range(200))
    assert split_indices(sources[:3], 0.05)[1] != []  # small sets still hold one image out
    assert split_indices(sources, 0.0)[1] == []
    idx = list(range(20))
    # 20 items, 3 per process, 2 processes: 3 steps per epoch; steps 6..8 are epoch 2
    r0 = list(StepBatchSampler(idx, 3, seed=1, start=6, stop=9, rank=0, world=2))
    r1 = list(StepBatchSampler(idx, 3, seed=1, start=6, stop=9, rank=1, world=2))
    assert len(r0) == len(r1) == 3 and all(e == 2 for b in r0 for e, _ in b)
    flat = [i for b in r0 + r1 for _, i in b]
    assert len(set(flat)) == 18  # disjoint shards, no repeats within the epoch
    # starting later (resume) gives exactly the tail of the same stream
    assert list(StepBatchSampler(idx, 3, seed=1, start=7, stop=9, rank=0, world=2)) == r0[1:]
    full = list(StepBatchSampler(idx, 3, seed=1, start=0, stop=12, rank=0, world=2))
    assert full[6:9] == r0 and full[3:6] != r0  # another epoch, another order
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StepBatchSampler(idx[:5], 3, seed=1, start=0, stop=1, world=2)


def test_photometric_keeps_shape_and_range():
    img = (np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)
    for seed in range(4):
        out = photometric(img, np.random.default_rng(seed), p=1.0)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert not np.array_equal(out, img)


def test_extreme_exposure_squeezes_into_a_dark_or_bright_band():
    img = (np.random.default_rng(0).random((48, 64)) * 255).astype(np.uint8)
    levels = []
    for seed in range(40):
        out = photometric(img, np.random.default_rng(seed), p=0.0, extreme=1.0)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert 1.0 < out.std() < 0.4 * img.std()  # some signal left, far less contrast
        levels.append(out.mean())
    assert min(levels) < 70 and max(levels) > 170  # both under- and over-exposed frames
    # off by default: the seed's augmentation stream is unchanged
    assert np.array_equal(
        photometric(img, np.random.default_rng(3)), photometric(img, np.random.default_rng(3), extreme=0.0)
    )


def test_opencv_follows_the_torch_thread_count():
    from training._deps import match_opencv_threads

    before_torch, before_cv = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(1)
        assert match_opencv_threads() == 1 and cv2.getNumThreads() == 1
    finally:
        torch.set_num_threads(before_torch)
        cv2.setNumThreads(before_cv)
