"""Rotated validation (``--val-rotation-deg``): exact rotation homographies, the rotated pairs,
the logged ``val/rep_rotN`` and ``val/rep_combined`` scalars, ``best.pt`` chosen by the
combined score, and exact resume with the flag."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kornia")
pytest.importorskip("tqdm")
pytest.importorskip("yaml")
cv2 = pytest.importorskip("cv2")

from test_training_loop_smoke import make_cache, read_log, tiny_args  # noqa: E402

from training.data import EvalPair, rotate_image, rotated_val_pairs  # noqa: E402
from training.homography import rotation_homography, warp_points  # noqa: E402
from training.train_config import TrainConfig, parse_angles, resolve_config  # noqa: E402

W, H_ = 128, 96  # a non-square image: the rotations keep the canvas


def _dot_image(x: int, y: int) -> np.ndarray:
    img = np.zeros((H_, W), np.uint8)
    img[y, x] = 255
    blob = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.5)
    return np.rint(blob / blob.max() * 250).astype(np.uint8)  # peak 250: no saturated plateau


def _peak(img: np.ndarray) -> np.ndarray:
    """Sub-pixel peak (centroid of the 5x5 window around the maximum), (x, y)."""
    y, x = np.unravel_index(np.argmax(img), img.shape)
    win = img[y - 2 : y + 3, x - 2 : x + 3].astype(np.float64)
    yy, xx = np.mgrid[-2:3, -2:3]
    return np.array([x + (win * xx).sum() / win.sum(), y + (win * yy).sum() / win.sum()])


def test_rotation_homography_is_exact_about_the_centre():
    cx, cy = (W - 1) / 2, (H_ - 1) / 2
    for a in (0, 90, 180, 270, -90, 45, 22.5):
        Hr = rotation_homography((W, H_), a)
        np.testing.assert_allclose(warp_points(Hr, np.array([[cx, cy]])), [[cx, cy]], atol=1e-12)  # the centre stays
        np.testing.assert_allclose(np.linalg.det(Hr[:2, :2]), 1.0, atol=1e-12)
    np.testing.assert_array_equal(rotation_homography((W, H_), 0), np.eye(3))
    # 180: (x, y) -> (w-1-x, h-1-y), exactly; 90 counter-clockwise as displayed: right -> up
    p = np.array([[10.0, 20.0], [cx + 5, cy]])
    np.testing.assert_array_equal(
        warp_points(rotation_homography((W, H_), 180), p), np.c_[W - 1 - p[:, 0], H_ - 1 - p[:, 1]]
    )
    np.testing.assert_allclose(warp_points(rotation_homography((W, H_), 90), p[1:]), [[cx, cy - 5]], atol=1e-12)
    np.testing.assert_array_equal(rotation_homography((W, H_), 90), rotation_homography((W, H_), -270))
    np.testing.assert_allclose(
        rotation_homography((W, H_), 30) @ rotation_homography((W, H_), 15),
        rotation_homography((W, H_), 45),
        atol=1e-12,
    )


@pytest.mark.parametrize("angle", [90, 180, 45, -30])
def test_rotated_image_content_lands_where_the_homography_says(angle):
    for x, y in [(64, 48), (50, 40), (75, 58)]:
        img = _dot_image(x, y)
        rotated, Hr = rotate_image(img, angle)
        assert rotated.shape == img.shape and rotated.dtype == np.uint8
        want = warp_points(Hr, np.array([[x, y]], np.float64))[0]
        assert np.linalg.norm(_peak(rotated) - want) < 0.25, (angle, x, y, _peak(rotated), want)
    textured = np.random.default_rng(0).integers(0, 256, (H_, W)).astype(np.uint8)
    if angle == 180:
        rotated, _ = rotate_image(textured, 180)
        np.testing.assert_array_equal(rotated, textured[::-1, ::-1])  # exact for multiples of 90


def test_rotated_pairs_score_a_perfect_rotation_as_fully_repeatable():
    from kpnet.metrics import repeatability

    img = np.random.default_rng(1).integers(0, 256, (H_, W)).astype(np.uint8)
    base = [EvalPair("a.png", img, img[::-1].copy(), np.eye(3))]
    (pair,) = rotated_val_pairs(base, 90)
    assert pair.name == "a.png@rot90" and pair.image1 is img
    pts = np.array([[60.0, 40.0], [70.0, 50.0], [64.0, 30.0]])
    r = repeatability(pts, warp_points(pair.H, pts), pair.H, (W, H_), (W, H_))
    assert r.repeatability == 1.0 and r.loc_error < 1e-9


def test_flag_parsing_and_validation():
    assert TrainConfig(cache="c").val_rotation_deg == ()  # default: off
    assert parse_angles("0,90,180") == (0.0, 90.0, 180.0) and parse_angles("") == () and parse_angles([45]) == (45.0,)
    cfg = resolve_config(1, {"cache": "c", "val_rotation_deg": "0, 90,22.5"})
    assert cfg.val_rotation_deg == (0.0, 90.0, 22.5) and cfg.to_dict()["val_rotation_deg"] == [0.0, 90.0, 22.5]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="comma-separated angles in degrees, e.g. 0,90,180; got 'ninety'"):
        TrainConfig(cache="c", val_rotation_deg="ninety")
    with pytest.raises(ValueError, match="lists an angle twice"):
        TrainConfig(cache="c", val_rotation_deg="90,90")
    with pytest.raises(ValueError, match="comma-separated angles"):
        TrainConfig(cache="c", val_rotation_deg="nan")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("valrot") / "c", n=8)


def test_tiny_run_logs_rotated_scalars_picks_best_by_the_combined_score_and_resumes_exactly(
    cache_dir, tmp_path, capsys
):
    from training import phase1
    from training.trainer import BEST_COMBINED

    out = tmp_path / "run"
    # 6 training images of 8 (val fraction 0.2 holds out >= 1), batch 2: 3 steps an epoch, 4 epochs
    args = tiny_args(
        cache_dir,
        out,
        "--max-steps",
        "12",
        "--ckpt-every",
        "6",
        "--log-every",
        "1",
        "--val-rotation-deg",
        "0,90,180",
        "--overlay-every",
        "0",
    )
    assert phase1.main(args) == 0
    reps = {
        t: read_log(out, t)
        for t in ("val/repeatability", "val/rep_rot0", "val/rep_rot90", "val/rep_rot180", BEST_COMBINED)
    }
    steps = sorted(reps["val/repeatability"])
    assert len(steps) >= 2 and all(sorted(v) == steps for v in reps.values())
    for s in steps:
        parts = [float(reps[t][s]) for t in ("val/repeatability", "val/rep_rot0", "val/rep_rot90", "val/rep_rot180")]
        assert all(0 <= v <= 1 for v in parts)
        assert math.isclose(float(reps[BEST_COMBINED][s]), np.mean(parts), rel_tol=1e-6)
        assert float(reps["val/rep_rot0"][s]) > 0.99  # the image against itself
    best = torch.load(out / "best.pt", weights_only=True)["extra"]["metrics"]
    assert math.isclose(best[BEST_COMBINED], max(float(v) for v in reps[BEST_COMBINED].values()), rel_tol=1e-6)
    last = torch.load(out / "last.pt", weights_only=True)["training"]
    assert last["best_by"] == "val/rep_combined(0,90,180)" and last["train_config"]["val_rotation_deg"] == [
        0.0,
        90.0,
        180.0,
    ]

    # resume from the middle: the same losses and the same validation scores
    resumed = tmp_path / "resumed"
    assert phase1.main(["--resume", str(out / "step_0000006.pt"), "--out", str(resumed), "--no-progress"]) == 0
    for tag in ("train/loss", BEST_COMBINED, "val/rep_rot90"):
        a, b = read_log(out, tag), read_log(resumed, tag)
        assert b and all(b[s] == a[s] for s in b), tag
    wa = torch.load(out / "last.pt", weights_only=True)["state_dict"]
    wb = torch.load(resumed / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # resuming with another selection score restarts the best tracking, and says so
    capsys.readouterr()
    other = tmp_path / "other"
    assert (
        phase1.main(
            ["--resume", str(out / "step_0000006.pt"), "--out", str(other), "--no-progress", "--val-rotation-deg", ""]
        )
        == 0
    )
    assert "chose best.pt by val/rep_combined(0,90,180), this one by val/repeatability" in capsys.readouterr().err
    assert not read_log(other, BEST_COMBINED) and read_log(other, "val/repeatability")


def test_default_run_logs_no_rotated_scalars(cache_dir, tmp_path):
    from training import phase1

    out = tmp_path / "plain"
    assert phase1.main(tiny_args(cache_dir, out, "--max-steps", "3", "--overlay-every", "0")) == 0
    tags = {r.split(",")[2] for r in (out / "log.csv").read_text().splitlines()[1:]}
    assert "val/repeatability" in tags and not any(t.startswith("val/rep_") for t in tags)
    assert torch.load(out / "last.pt", weights_only=True)["training"]["best_by"] == "val/repeatability"
