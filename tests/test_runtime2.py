"""Runtime 2 (issue #16): native aspect, safe defaults, OpenCV-grade interfaces, error messages."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from kpnet import KeypointDetector, WorkingSize, parse_hw
from kpnet.backends.base import BackendInfo, BackendOutput, BaseBackend
from kpnet.config import DecodeConfig
from kpnet.errors import ConfigError, InvalidImageError, KpnetError, ModelNotFoundError, ProviderUnavailableError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "models").glob("*.onnx"))


class MapBackend(BaseBackend):
    """Fake backend: logits are the input image itself (any size), so a synthetic score map
    goes straight to decoding."""

    def __init__(self):
        super().__init__()
        self.info = BackendInfo(
            name="fake", model_path="fake", input_shape=(None, 1, None, None), input_size=(96, 128), device="cpu"
        )

    def _run_impl(self, batch):
        return BackendOutput(heatmap=(batch * 20.0 - 10.0).astype(np.float32))


# ---------------------------------------------------------------------------- sizes
def test_size_strings_are_hxw_and_the_other_order_is_refused():
    assert parse_hw("480x640") == (480, 640) and parse_hw(" 376 x 1248 ") == (376, 1248)
    assert parse_hw("h640,w480") == (640, 480)
    with pytest.raises(
        ConfigError, match=r"'640x480' looks like WIDTHxHEIGHT; kpnet sizes are HEIGHTxWIDTH: use 480x640"
    ):
        parse_hw("640x480")
    with pytest.raises(ConfigError, match=r"size must be HEIGHTxWIDTH, e.g. 480x640, got '640,480'"):
        parse_hw("640,480")


def test_working_size_policy():
    native = WorkingSize()
    assert native.resolve((480, 640), 32, (480, 640)) == (480, 640)  # VGA runs exactly as before
    assert native.resolve((480, 640), 64, (448, 640)) == (448, 640)  # the fast model: its own budget
    assert native.resolve((376, 1241), 32, (480, 640)) == (320, 992)  # KITTI keeps its aspect
    assert native.resolve((480, 752), 32, (480, 640)) == (448, 704)  # EuRoC
    assert native.resolve((720, 1280), 32, (480, 640)) == (416, 736)
    assert native.resolve((120, 160), 32, (480, 640)) == (128, 160)  # never enlarged beyond the frame
    assert WorkingSize(long_side=1280).resolve((376, 1241), 32, (480, 640)) == (384, 1280)
    assert WorkingSize(pixels=100_000).resolve((480, 640), 32, (480, 640)) == (288, 352)
    assert WorkingSize.coerce("480x640").resolve((10, 10), 32, (1, 1)) == (480, 640)
    with pytest.raises(ConfigError, match="one of fixed, long_side or pixels"):
        WorkingSize(long_side=10, pixels=10)
    with pytest.raises(ConfigError, match="must be multiples of the model's stride 64"):
        WorkingSize(fixed=(480, 640)).resolve((480, 640), 64, (448, 640))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_kitti_frame_runs_at_native_aspect_and_matches_a_direct_run(path, sample_bgr):
    """A 1241x376 frame runs at its own aspect (320x992 for kpnet-small), and its keypoints
    are exactly those of the network run directly at that size and decoded by hand."""
    import onnxruntime as ort

    from kpnet.decoding import to_model_units
    from kpnet.postprocess import cell_contrast, decode
    from kpnet.preprocess import Resize

    frame = cv2.resize(sample_bgr, (1241, 376), interpolation=cv2.INTER_AREA)
    det = KeypointDetector(path, max_keypoints=500, threads=1)
    wh, ww = det.working_size((376, 1241))
    assert abs((ww / wh) / (1241 / 376) - 1) < 0.1 and wh % det.stride == 0 and ww % det.stride == 0
    kps = det.detect(frame)
    assert kps.meta["working_size"] == (wh, ww) and len(kps) > 300
    gray = (
        cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (ww, wh), interpolation=cv2.INTER_AREA).astype(np.float32)
        / 255.0
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # as the detector, so the float sums (and score ties) are the same
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    (heat,) = sess.run(None, {"image": gray[None, None]})
    rs = Resize((1241, 376), (ww, wh))
    xy, sc = decode(heat[0, 0], to_model_units(det.config, rs), contrast=cell_contrast(gray))
    np.testing.assert_allclose(kps.scores, sc, atol=1e-5)
    # the same points; equal scores may swap places (float sums differ in the last bit)
    d = np.linalg.norm(kps.xy[:, None] - rs.to_original(xy)[None], axis=-1).min(axis=1)
    assert len(kps) == len(xy) and (d < 1e-3).mean() > 0.99


# ---------------------------------------------------------------------------- safe defaults
def _null_frames(hw, seed):
    rng = np.random.default_rng(seed)
    h, w = hw
    out = {f"uniform {v}": np.full((h, w), v, np.uint8) for v in (0, 128, 255)}
    for level in (15, 100, 240):
        out[f"+/-4 noise at {level}"] = np.clip(level + rng.integers(-4, 5, (h, w)), 0, 255).astype(np.uint8)
    out["BGR +/-4 noise"] = np.clip(128 + rng.integers(-4, 5, (h, w, 3)), 0, 255).astype(np.uint8)
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_blank_uniform_and_sensor_noise_frames_give_no_keypoints(path):
    det = KeypointDetector(path, threads=1)
    for hw, seed in (((480, 640), 11), ((376, 1241), 12), ((720, 1280), 13)):
        for name, img in _null_frames(hw, seed).items():
            assert len(det.detect(img)) == 0, (path.name, hw, name)
    # FAST and ORB find nothing there either (the bar the defaults are set to)
    noise = _null_frames((480, 640), 14)["+/-4 noise at 100"]
    assert len(cv2.FastFeatureDetector_create(threshold=10).detect(noise)) == 0
    assert len(cv2.ORB_create().detect(noise)) == 0


def test_export_calibrates_the_defaults_into_the_metadata(tiny_ckpt, tmp_path):
    from export.onnx import ExportOptions, export_onnx

    out = tmp_path / "cal.onnx"
    logs = []
    export_onnx(tiny_ckpt, out, ExportOptions(exporter="torchscript"), log=logs.append)
    det = KeypointDetector(out)
    d = det.info.defaults
    assert set(d) == {"threshold", "min_contrast"} and d["min_contrast"] > 0
    assert det.config.threshold == d["threshold"] and det.config.min_contrast == d["min_contrast"]
    figures = json.loads(det.info.metadata["kpnet_calibration"])
    assert sum(figures["keypoints_on_null_frames"].values()) == 0
    assert "calibrated defaults" in logs[0] and "0 in all (OK)" in logs[0]
    for img in _null_frames((128, 160), 3).values():
        assert len(det.detect(img)) == 0
    # the threshold comes from flat regions inside textured frames (1.25x, rounded up), not
    # from whole flat frames, which the contrast floor removes
    assert d["threshold"] == min(0.5, math.ceil(1.25 * figures["max_score_flat_region"] * 1000) / 1000)
    assert "max_score_blank_uniform" in figures


def test_flat_middle_rectangle_and_its_inner_box():
    from export.calibrate import FLAT_MARGIN, with_flat_middle

    img = np.random.default_rng(0).integers(0, 256, (96, 128)).astype(np.uint8)
    out, (x0, y0, x1, y1) = with_flat_middle(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.all(out[24:72, 32:96] == int(round(float(img.mean()))))
    assert np.array_equal(out[:24], img[:24]) and np.array_equal(out[:, :32], img[:, :32])
    assert (x0, y0, x1, y1) == (32 + FLAT_MARGIN, 24 + FLAT_MARGIN, 96 - FLAT_MARGIN, 72 - FLAT_MARGIN)


def test_vo_preset_and_grid_implies_grid(tiny_onnx, sample_bgr):
    det = KeypointDetector(tiny_onnx, preset="vo")
    assert (det.config.max_keypoints, det.config.distribution, det.config.grid, det.config.nms_radius) == (
        1000,
        "grid",
        (12, 16),
        4,
    )
    assert KeypointDetector(tiny_onnx, grid=(3, 4)).config.distribution == "grid"
    with pytest.raises(
        ConfigError, match=r"grid=\(3, 4\) only applies to distribution='grid', but distribution is 'anms'"
    ):
        KeypointDetector(tiny_onnx, grid=(3, 4), distribution="anms")
    with pytest.raises(ConfigError, match="unknown preset 'slam'; choose from: vo"):
        KeypointDetector(tiny_onnx, preset="slam")


# ---------------------------------------------------------------------------- interfaces
def _greedy_reference(xy, scores, min_distance):
    """goodFeaturesToTrack's rule, literally: strongest first, keep unless a kept point is closer."""
    kept = []
    for i in sorted(range(len(xy)), key=lambda i: (-scores[i], i)):
        if all(np.hypot(*(xy[i] - xy[j])) >= min_distance for j in kept):
            kept.append(i)
    return kept


def test_min_distance_is_greedy_like_good_features_to_track():
    rng = np.random.default_rng(7)
    h, w = 96, 128
    heat = np.zeros((h, w), np.float32)
    ys, xs = rng.integers(2, h - 2, 300), rng.integers(2, w - 2, 300)
    heat[ys, xs] = rng.uniform(0.2, 1.0, 300).astype(np.float32)
    det = KeypointDetector.from_backend(
        MapBackend(), max_keypoints=1000, nms_radius=0, border=0, min_distance=10.0, threshold=0.001
    )
    kps = det.detect(heat)
    cand = np.flatnonzero(heat.reshape(-1) > 0)
    cxy = np.stack([cand % w, cand // w], 1).astype(np.float64)
    ref = _greedy_reference(cxy, heat.reshape(-1)[cand], 10.0)
    np.testing.assert_allclose(kps.xy, cxy[ref], atol=1e-4)
    # widening the NMS window instead (the old rule) keeps far fewer
    old = KeypointDetector.from_backend(
        MapBackend(), max_keypoints=1000, nms_radius=10, border=0, threshold=0.001
    ).detect(heat)
    assert len(kps) > 1.3 * len(old)


def test_as_feature2d_round_trips_through_orb(tiny_onnx, sample_bgr):
    orb = cv2.ORB_create()
    f2d = KeypointDetector(tiny_onnx, max_keypoints=200).as_feature2d(descriptor=orb)
    kps, desc = f2d.detectAndCompute(sample_bgr, None)
    assert len(kps) > 100 and desc.shape == (len(kps), 32) and f2d.descriptorSize() == 32
    gray = cv2.cvtColor(sample_bgr, cv2.COLOR_BGR2GRAY)
    kps2, desc2 = cv2.ORB_create().compute(gray, f2d.detect(sample_bgr))
    np.testing.assert_array_equal(desc, desc2)
    kps3, desc3 = f2d.compute(sample_bgr, kps)
    np.testing.assert_array_equal(desc, desc3)
    matches = cv2.BFMatcher(f2d.defaultNorm(), crossCheck=True).match(desc, desc3)
    assert len(matches) >= 0.97 * len(kps) and np.mean([m.queryIdx == m.trainIdx for m in matches]) > 0.97
    with pytest.raises(
        ConfigError, match=r"needs a descriptor extractor: det.as_feature2d\(descriptor=cv2.ORB_create\(\)\)"
    ):
        KeypointDetector(tiny_onnx).as_feature2d().detectAndCompute(sample_bgr, None)


def test_keypoint_size_is_fixed_in_image_pixels(tiny_onnx, sample_bgr):
    det = KeypointDetector(tiny_onnx, max_keypoints=50)
    sizes = {
        k.size
        for im in (cv2.resize(sample_bgr, (256, 256)), cv2.resize(sample_bgr, (1024, 1024)))
        for k in det.detect(im).to_cv()
    }
    assert sizes == {31.0}


def test_public_stages_and_per_call_overrides(tiny_onnx, sample_bgr):
    det = KeypointDetector(tiny_onnx, max_keypoints=100)
    p = det.prepare(sample_bgr)
    staged = det.decode(det.infer(p), p)
    np.testing.assert_array_equal(staged.xy, det.detect(sample_bgr).xy)
    assert len(det.detect(sample_bgr, max_keypoints=7)) == 7 and det.config.max_keypoints == 100
    assert len(det.detect(sample_bgr, distribution="grid", grid=(2, 2), max_keypoints=20)) == 20
    with pytest.raises(ConfigError, match="unknown decoding settings"):
        det.detect(sample_bgr, radius=3)


def test_radius_and_border_are_in_image_pixels():
    # A 192x256 frame runs at the fake model's 96x128 budget: 2 image pixels per model pixel.
    heat = np.zeros((192, 256), np.float32)
    heat[100:102, 120:122], heat[100:102, 132:134] = 1.0, 0.9  # 12 image px (6 model px) apart
    det = KeypointDetector.from_backend(MapBackend(), max_keypoints=10, border=0, threshold=0.001)
    assert det.working_size((192, 256)) == (96, 128)
    assert len(det.detect(heat, nms_radius=12)) == 1  # 6 model px: one window holds both
    assert len(det.detect(heat, nms_radius=10)) == 2  # 5 model px
    kps = det.detect(heat, nms_radius=2)
    np.testing.assert_allclose(kps.xy, [[120.5, 100.5], [132.5, 100.5]])  # image pixels
    assert len(det.detect(heat, border=121, nms_radius=2)) == 0 and len(det.detect(heat, border=90, nms_radius=2)) == 2


# ---------------------------------------------------------------------------- errors
def test_every_error_derives_from_kpnet_error(tiny_onnx):
    with pytest.raises(
        ConfigError,
        match=r"model_path must be the path of a model file \(.engine, .onnx, .plan, .pt, .pth\), got NoneType None",
    ):
        KeypointDetector(None)
    for exc in (pytest.raises(KpnetError), pytest.raises(ValueError)):
        with exc:
            DecodeConfig(max_keypoints=0)
        with exc:
            KeypointDetector(tiny_onnx).detect(np.zeros((10, 10), np.uint16))
    assert issubclass(InvalidImageError, KpnetError) and issubclass(InvalidImageError, ValueError)
    from kpnet.preprocess import InvalidImageError as legacy

    assert legacy is InvalidImageError


def test_image_errors_name_the_problem_and_fix(tiny_onnx):
    det = KeypointDetector(tiny_onnx)
    with pytest.raises(
        InvalidImageError,
        match=r"image has 80 channels \(shape \(3, 64, 80\)\).*looks channels-first .*transpose\(1, 2, 0\)",
    ):
        det.detect(np.zeros((3, 64, 80), np.uint8))
    with pytest.raises(
        InvalidImageError, match=r"image is 1x1 \(HxW\), smaller than the network's stride of 32 pixels"
    ):
        det.detect(np.zeros((1, 1), np.uint8))
    with pytest.raises(InvalidImageError, match=r"image must be a numpy array .* got list"):
        det.detect([[0]])


def test_missing_engine_suggests_the_trt_builder(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"python -m export.trt MODEL.onnx -o ENGINE.engine"):
        KeypointDetector(tmp_path / "x.engine")


def test_cuda_device_without_a_gpu_says_so(tiny_ckpt, monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; the no-GPU messages cannot be exercised")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(ProviderUnavailableError, match=r"is a CUDA 12.4 build, but it sees no usable GPU .*nvidia-smi"):
        KeypointDetector(tiny_ckpt, device="cuda")
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ProviderUnavailableError, match=r"is a CPU-only build; install a CUDA build of torch"):
        KeypointDetector(tiny_ckpt, device="cuda")


def test_every_cli_refuses_abbreviations(tiny_onnx, capsys):
    from export import trt as trt_cli

    with pytest.raises(SystemExit) as e:
        trt_cli.main([str(tiny_onnx), "--onnx", "--fp16"])  # once read as --onnx-only
    assert e.value.code == 2 and "unrecognized arguments: --onnx" in capsys.readouterr().err
    from export.onnx import main as onnx_main
    from kpnet.cli import main as kp_main

    for fn, args in (
        (onnx_main, ["x.pt", "--static"]),
        (kp_main, ["detect", "a.png", "--model", "m.onnx", "--max-key", "3"]),
    ):
        with pytest.raises(SystemExit) as e:
            fn(args)
        assert e.value.code == 2


# ---------------------------------------------------------------------------- CLI
def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def test_cli_folders_globs_bad_files_and_unique_names(tiny_onnx, sample_bgr, tmp_path, capsys):
    from kpnet.cli import main

    small = cv2.resize(sample_bgr, (160, 128))
    d = tmp_path / "in"
    _write(d / "a.jpg", small)
    _write(d / "sub" / "a.png", small)
    (d / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "o"
    rc = main(["detect", str(d), "--model", str(tiny_onnx), "--out", str(out), "-k", "20", "--grid", "2x2"])
    text = capsys.readouterr()
    assert (
        rc == 1 and "2 of 3 images done; 1 failed" in text.out and "broken.png: cannot read it as an image" in text.err
    )
    assert sorted(p.name for p in out.glob("*.json")) == ["a_kpnet.json", "sub__a_kpnet.json"]
    assert main(["detect", str(d / "*.jpg"), "--model", str(tiny_onnx), "--out", str(out / "g")]) == 0
    assert (out / "g" / "a_kpnet.png").is_file()
    assert main(["detect", str(tmp_path / "nothing-*.png"), "--model", str(tiny_onnx)]) == 2
    assert "a pattern that matches no image" in capsys.readouterr().err


def test_cli_unwritable_out_and_version(tiny_onnx, sample_bgr, tmp_path, capsys):
    from kpnet.cli import main

    img = _write(tmp_path / "a.png", cv2.resize(sample_bgr, (160, 128)))
    assert main(["detect", str(img), "--model", str(tiny_onnx), "--out", "/dev/null/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot create the output folder /dev/null/x") and "Traceback" not in err
    r = subprocess.run([sys.executable, "-m", "kpnet", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("kpnet ")
    r = subprocess.run([sys.executable, "-m", "kpnet", "detect", "--help"], capture_output=True, text=True, timeout=60)
    for flag in (
        "--distribution",
        "--grid",
        "--min-distance",
        "--mask",
        "--video",
        "--min-contrast",
        "--preset",
        "--long-side",
        "(default: out)",
    ):
        assert flag in r.stdout, flag


def test_cli_mask_and_legend(tiny_onnx, sample_bgr, tmp_path):
    from kpnet.cli import main

    img = cv2.resize(sample_bgr, (160, 128))
    _write(tmp_path / "f.png", img)
    mask = np.zeros((128, 160), np.uint8)
    mask[:, 80:] = 255
    _write(tmp_path / "m.png", mask)
    assert (
        main(
            [
                "detect",
                str(tmp_path / "f.png"),
                "--model",
                str(tiny_onnx),
                "--mask",
                str(tmp_path / "m.png"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "o" / "f_kpnet.json").read_text())
    assert doc["keypoints"] and min(x for x, _ in doc["keypoints"]) >= 79.5 and doc["image_size"] == [160, 128]
    drawn = cv2.imread(str(tmp_path / "o" / "f_kpnet.png"))
    bar = drawn[128 - 12 : 128 - 6, 6:46]  # the colour bar: blue on the left, red on the right
    assert bar[:, 0, 0].mean() > 100 and bar[:, -1, 2].mean() > 100


def test_cli_video_writes_mp4_and_json_lines(tiny_onnx, sample_bgr, tmp_path):
    from kpnet.cli import main

    video = tmp_path / "clip.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 128))
    for i in range(4):
        vw.write(np.roll(cv2.resize(sample_bgr, (160, 128)), 3 * i, axis=1))
    vw.release()
    assert (
        main(["detect", "--video", str(video), "--model", str(tiny_onnx), "--out", str(tmp_path / "o"), "-k", "10"])
        == 0
    )
    lines = (tmp_path / "o" / "clip_kpnet.jsonl").read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == [0, 1, 2, 3] and len(json.loads(lines[0])["keypoints"]) == 10
    cap = cv2.VideoCapture(str(tmp_path / "o" / "clip_kpnet.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 4


# ---------------------------------------------------------------------------- latency benchmark
def test_latency_reports_working_size_per_frame_size(tiny_onnx, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("kp_latency", ROOT / "benchmarks" / "latency.py")
    lat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lat)
    out = tmp_path / "lat"
    args = [
        "--models",
        str(tiny_onnx),
        "--baselines",
        "fast",
        "--sizes",
        "128x160,96x320",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert lat.main(args) == 0
    res = json.loads((out / "latency.json").read_text())["results"]
    assert [(r["name"], r["frame"]) for r in res] == [
        ("tiny.onnx [onnxruntime]", "128x160"),
        ("fast", "128x160"),
        ("tiny.onnx [onnxruntime]", "96x320"),
        ("fast", "96x320"),
    ]
    assert res[0]["working_size"] == [128, 160] and res[2]["working_size"] == [64, 256]
    assert "| working HxW |" in (out / "latency.md").read_text()
    with pytest.raises(SystemExit):
        lat.main(["--size", "640x480", "--out", str(out)])
