"""benchmarks/pose.py: readers, AUC, pose errors and recovery on a rendered synthetic scene."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


POSE = _load("pose")
K = np.array([[250.0, 0, 159.5], [0, 250.0, 119.5], [0, 0, 1]])


# --------------------------------------------------------------------------- AUC and errors
def test_pose_auc_against_hand_computed_values():
    # Sorted errors 1, 3, 7, inf: the curve passes (0,0) (1,.25) (3,.5) (7,.75), flat after the last point below t.
    errs = [7.0, 1.0, float("inf"), 3.0]
    a5, a10, a2 = POSE.pose_auc(errs, (5.0, 10.0, 2.0))
    assert a5 == pytest.approx((0.125 + 0.75 + 0.5 * 2) / 5)  # 0.375
    assert a10 == pytest.approx((0.125 + 0.75 + 2.5 + 0.75 * 3) / 10)  # 0.5625
    assert a2 == pytest.approx((0.125 + 0.25) / 2)  # 0.1875: held flat at 0.25 from 1 to 2
    assert POSE.pose_auc([0.0, 0.0], (5.0,)) == [pytest.approx(1.0)]
    assert POSE.pose_auc([float("inf")] * 3, (5.0,)) == [0.0]
    assert POSE.pose_auc([], (5.0,)) == [0.0]
    assert POSE.pose_auc([5.0], (5.0, 10.0)) == [pytest.approx(0.0), pytest.approx(0.5 * 5 / 10 + 5 / 10)]


def _rot(axis, deg):
    return cv2.Rodrigues(np.asarray(axis, np.float64) * math.radians(deg) / np.linalg.norm(axis))[0]


def test_pose_errors():
    R = _rot([0, 1, 0], 10.0)
    assert POSE.rotation_error(R, np.eye(3)) == pytest.approx(10.0)
    assert POSE.translation_error(np.array([1.0, 0, 0]), np.array([1.0, 1.0, 0])) == pytest.approx(45.0)
    assert POSE.translation_error(np.array([-1.0, 0, 0]), np.array([1.0, 0.0, 0])) == pytest.approx(0.0)  # sign folded
    assert POSE.pose_error(R, np.array([1.0, 0, 0]), np.eye(3), np.array([1.0, 1.0, 0])) == pytest.approx(45.0)
    assert POSE.make_pairs(6, [1, 3], 2) == [(0, 1), (2, 3), (4, 5), (0, 3), (2, 5)]


# --------------------------------------------------------------------------- synthetic scene
def _scene_points(n=1200, seed=0):
    """Points on a smooth surface (depth 1.6 to 8.4 m), so an LK window sees one motion."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-3.6, 3.6, n), rng.uniform(-2.5, 2.5, n)
    z = 5.0 + 2.0 * np.sin(0.8 * x) + 1.4 * np.cos(0.9 * y)
    return np.stack([x, y, z], 1), rng.uniform(90, 255, n)


def _c2w(R_wc, C):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R_wc, C
    return T


def _project(X, T_c2w):
    T = np.linalg.inv(T_c2w)
    Xc = X @ T[:3, :3].T + T[:3, 3]
    uv = Xc @ K.T
    return uv[:, :2] / uv[:, 2:3], Xc[:, 2]


def _render(X, amp, T_c2w, h=240, w=320):
    """Gaussian blobs (sigma 1.3 px) at the projections of the 3D points, nearest drawn last."""
    uv, z = _project(X, T_c2w)
    img = np.full((h, w), 30.0)
    ys, xs = np.mgrid[0:h, 0:w]
    for k in np.argsort(-z):
        u, v = uv[k]
        if not (4 <= u < w - 4 and 4 <= v < h - 4) or z[k] <= 0:
            continue
        x0, y0 = int(u) - 4, int(v) - 4
        patch = np.exp(
            -((xs[y0 : y0 + 10, x0 : x0 + 10] - u) ** 2 + (ys[y0 : y0 + 10, x0 : x0 + 10] - v) ** 2) / (2 * 1.3**2)
        )
        img[y0 : y0 + 10, x0 : x0 + 10] = img[y0 : y0 + 10, x0 : x0 + 10] * (1 - patch) + amp[k] * patch
    return np.clip(img, 0, 255).astype(np.uint8)


POSES = [
    _c2w(np.eye(3), [0, 0, 0]),
    _c2w(_rot([0.3, 1, 0.2], 3.0), [0.45, 0.15, 0.4]),
    _c2w(_rot([0.2, 1, 0.3], 5.0), [0.8, 0.1, 0.6]),
]


def test_estimate_pose_on_exact_projections():
    X, _ = _scene_points()
    p1, _ = _project(X, POSES[0])
    p2, _ = _project(X, POSES[1])
    T = np.linalg.inv(POSES[1]) @ POSES[0]
    for est in POSE.ESTIMATORS:
        res = POSE.estimate_pose(p1, p2, K, 1.0, estimator=est)
        assert POSE.pose_error(res.R, res.t, T[:3, :3], T[:3, 3]) < 0.1, est
        assert res.inliers == len(X)
    assert POSE.estimate_pose(p1[:4], p2[:4], K).R is None


def _write_generic(root, n=3):
    (root / "images").mkdir(parents=True)
    X, amp = _scene_points()
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"{i:05d}.png"), _render(X, amp, POSES[i]))
    np.savetxt(root / "K.txt", K)
    np.savetxt(root / "poses.txt", np.stack([p.reshape(-1) for p in POSES[:n]]))


def test_pose_recovered_on_rendered_sequence(tmp_path):
    seq = tmp_path / "seq"
    _write_generic(seq)
    out = tmp_path / "out"
    args = [str(seq), "--baselines", "gftt", "--gaps", "1", "-k", "1000", "--workers", "1", "--out", str(out)]
    assert POSE.main(args + ["--estimator", "ransac"]) == 0
    res = json.loads((out / "pose.json").read_text())
    assert res["settings"]["layout"] == "generic" and res["settings"]["pairs"] == 2
    for fe in ("klt", "desc"):
        rows = res["detectors"]["gftt"]["pairs"][fe]
        assert len(rows) == 2
        # Plain RANSAC keeps the best minimal sample without refinement: with almost all matches
        # inliers it stops after a few samples, and sub-pixel noise leaves degrees of translation error.
        assert max(r["err_R"] for r in rows) < 2.0 and max(r["error"] for r in rows) < 20.0, (fe, rows)
        assert all(r["inlier_ratio"] > 0.5 for r in rows)
    klt = res["detectors"]["gftt"]["all"]["klt"]
    assert klt["survival"] > 0.5 and klt["auc@20"] > 0.5
    md = (out / "pose.md").read_text()
    assert "| gftt | klt |" in md and "AUC@10 per frame gap" in md
    # with local optimisation and a final fit on the inliers the same matches give the motion closely
    assert POSE.main(args) == 0  # default: usac-accurate
    assert json.loads((out / "pose.json").read_text())["settings"]["estimator"] == "usac-accurate"
    res = json.loads((out / "pose.json").read_text())
    for fe in ("klt", "desc"):
        assert max(r["error"] for r in res["detectors"]["gftt"]["pairs"][fe]) < 1.5, fe
    assert POSE.main(args[:4] + ["1,2"] + args[5:]) == 0
    assert json.loads((out / "pose.json").read_text())["settings"]["pairs"] == 3


def test_pose_cli_workers_and_models(tmp_path, tiny_onnx):
    seq = tmp_path / "seq"
    _write_generic(seq, n=2)
    out = tmp_path / "out"
    assert (
        POSE.main(
            [
                str(seq),
                "--models",
                str(tiny_onnx),
                "--baselines",
                "orb",
                "--gaps",
                "1",
                "-k",
                "100",
                "--workers",
                "2",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "pose.json").read_text())
    assert set(res["detectors"]) == {"tiny.onnx", "orb"}
    with pytest.raises(SystemExit):
        POSE.main([str(seq), "--gaps", "0"])
    with pytest.raises(SystemExit):
        POSE.main([str(seq), "--baselines", "surf"])
    with pytest.raises(SystemExit):
        POSE.main([str(seq), "--front-ends", "flow"])


# --------------------------------------------------------------------------- readers
def _tiny_frames(folder, n=3, ext=".png"):
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:06d}{ext}"), np.full((24, 32), 10 * i, np.uint8))


def test_generic_reader(tmp_path):
    _tiny_frames(tmp_path / "images")
    np.savetxt(tmp_path / "K.txt", K)
    np.savetxt(tmp_path / "poses.txt", np.stack([p.reshape(-1) for p in POSES]))
    seq = POSE.load_sequence(tmp_path)
    assert seq.layout == "generic" and len(seq.images) == 3
    np.testing.assert_allclose(seq.K, K)
    R, t = seq.relative(0, 1)
    T = np.linalg.inv(POSES[1]) @ POSES[0]
    np.testing.assert_allclose(R, T[:3, :3], atol=1e-12)
    np.testing.assert_allclose(t, T[:3, 3], atol=1e-12)
    assert np.allclose(POSE.load_sequence(tmp_path, intrinsics="100,100,16,12").K[0, 0], 100)
    np.savetxt(tmp_path / "poses.txt", np.stack([p.reshape(-1) for p in POSES[:2]]))
    with pytest.raises(ValueError, match="3 images but 2 poses"):
        POSE.load_sequence(tmp_path)


def test_kitti_reader(tmp_path):
    _tiny_frames(tmp_path / "image_0")
    P0 = np.hstack([K, np.zeros((3, 1))])
    P1 = np.hstack([K, [[-100.0], [0], [0]]])
    (tmp_path / "calib.txt").write_text(
        "".join(f"{n}: " + " ".join(f"{v:.6e}" for v in P.ravel()) + "\n" for n, P in (("P0", P0), ("P1", P1)))
    )
    with pytest.raises(ValueError, match="--poses FILE"):
        POSE.load_sequence(tmp_path)
    np.savetxt(tmp_path / "00.txt", np.stack([p[:3].reshape(-1) for p in POSES]))
    seq = POSE.load_sequence(tmp_path, poses=str(tmp_path / "00.txt"))
    assert seq.layout == "kitti" and len(seq.images) == 3
    np.testing.assert_allclose(seq.K, K, atol=1e-4)
    np.testing.assert_allclose(seq.poses[2], POSES[2], atol=1e-12)
    np.savetxt(tmp_path / "poses.txt", np.stack([p[:3].reshape(-1) for p in POSES]))
    assert POSE.load_sequence(tmp_path).layout == "kitti"  # default poses.txt in the folder


def test_tum_reader(tmp_path):
    _tiny_frames(tmp_path / "rgb")
    stamps = [100.0, 100.1, 100.2]
    (tmp_path / "rgb.txt").write_text(
        "# color images\n# timestamp filename\n" + "".join(f"{t:.6f} rgb/{i:06d}.png\n" for i, t in enumerate(stamps))
    )
    # ground truth at other times; the middle image has no pose within 0.02 s
    q = (0.0, 0.0, math.sin(math.radians(45)), math.cos(math.radians(45)))  # 90 degrees about z
    gt = [(99.995, 1, 2, 3, *q), (100.05, 0, 0, 0, 0, 0, 0, 1), (100.21, 4, 5, 6, 0, 0, 0, 1)]
    (tmp_path / "groundtruth.txt").write_text(
        "# timestamp tx ty tz qx qy qz qw\n" + "".join(" ".join(f"{v:.4f}" for v in row) + "\n" for row in gt)
    )
    with pytest.raises(ValueError, match="--intrinsics"):
        POSE.load_sequence(tmp_path)
    seq = POSE.load_sequence(tmp_path, intrinsics="fr1")
    assert seq.layout == "tum" and [p.name for p in seq.images] == ["000000.png", "000002.png"]
    assert seq.K[0, 0] == pytest.approx(517.3)
    np.testing.assert_allclose(seq.poses[0][:3, :3], _rot([0, 0, 1], 90.0), atol=1e-4)
    np.testing.assert_allclose(seq.poses[0][:3, 3], [1, 2, 3])
    np.testing.assert_allclose(seq.poses[1][:3, 3], [4, 5, 6])
    assert len(POSE.load_sequence(tmp_path, intrinsics="fr1", max_dt=0.06).images) == 3
    with pytest.raises(ValueError, match="fx,fy,cx,cy"):
        POSE.load_sequence(tmp_path, intrinsics="fr9")


def test_wrong_layout_names_each_layouts_files(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError) as e:
        POSE.load_sequence(tmp_path)
    msg = str(e.value)
    for need in (
        "generic: images/",
        "K.txt",
        "poses.txt",
        "kitti: image_0/",
        "calib.txt",
        "tum: rgb.txt",
        "groundtruth.txt",
        "found: frames/, notes.txt",
    ):
        assert need in msg, need
    with pytest.raises(FileNotFoundError):
        POSE.load_sequence(tmp_path / "missing")
    assert POSE.main([str(tmp_path), "--baselines", "gftt"]) == 2
