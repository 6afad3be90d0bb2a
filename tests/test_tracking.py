"""The tracking front end (examples/track.py) and the stability benchmark on synthetic frames."""

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from kpnet.tracking import FrontEnd, TrackerConfig, make_detector, redetection_rate

ROOT = Path(__file__).resolve().parent.parent
SHIFTS = [(0.0, 0.0), (2.5, 1.0), (5.0, 2.0), (7.0, 3.5), (9.5, 4.0), (12.0, 6.0)]


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def frames(sample_bgr):
    """A textured image translated by known sub-pixel shifts (cropped, so no borders show)."""
    big = cv2.resize(sample_bgr, (400, 400))
    out = []
    for dx, dy in SHIFTS:
        M = np.float32([[1, 0, dx], [0, 1, dy]])
        out.append(
            cv2.warpAffine(big, M, (400, 400), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)[40:280, 40:360]
        )
    return out


@pytest.mark.parametrize("detector", ["gftt", "kpnet"])
def test_front_end_follows_known_motion(frames, tiny_onnx, detector):
    det = make_detector(str(tiny_onnx) if detector == "kpnet" else detector, nms_radius=3, grid=(4, 5))
    fe = FrontEnd(det, TrackerConfig(max_tracks=150, min_tracks=100))
    errors = []
    for i, f in enumerate(frames):
        before = dict(zip(fe.ids.tolist(), fe.pts.copy()))
        s = fe.process(f)
        if i == 0:
            assert s.new > 20
            continue
        motion = np.subtract(SHIFTS[i], SHIFTS[i - 1])
        for tid, p in zip(fe.ids.tolist(), fe.pts):
            if tid in before:
                errors.append(np.linalg.norm(p - before[tid] - motion))
    assert len(errors) > 50
    assert np.median(errors) < 1.0
    assert fe.track_lengths().max() == len(frames)


def test_mask_keeps_new_detections_away_from_tracks(frames):
    fe = FrontEnd(make_detector("gftt", nms_radius=3), TrackerConfig(max_tracks=300, min_tracks=300, mask_radius=8))
    fe.process(frames[0])
    s = fe.process(frames[1])
    tracked, new = fe.pts[: s.tracked], fe.pts[s.tracked :]
    assert s.tracked > 20 and s.new > 0
    d = np.linalg.norm(new[:, None] - tracked[None], axis=-1).min(axis=1)
    assert d.min() >= 8 - 1.0  # radius of the masked circles, less rasterisation


def test_redetection_rate_identity(frames):
    g = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    pts = cv2.goodFeaturesToTrack(g, 100, 0.01, 5).reshape(-1, 2)
    assert redetection_rate(g, g, pts, pts) > 0.95
    assert redetection_rate(g, g, pts, np.zeros((0, 2), np.float32)) == 0.0


@pytest.fixture
def frames_dir(frames, tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(d / f"{i:03d}.png"), f)
    return d


def test_track_example_end_to_end(frames, frames_dir, tmp_path, capsys):
    d = frames_dir
    track = _load(ROOT / "examples" / "track.py", "track")
    out = tmp_path / "t.mp4"
    assert (
        track.main([str(d), "--detector", "fast", "--out", str(out), "--max-tracks", "100", "--min-tracks", "50"]) == 0
    )
    text = capsys.readouterr().out
    assert "tracks:" in text and "median track" in text
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(frames)
    assert track.main([str(tmp_path / "nope")]) == 2


def test_stability_benchmark(frames, frames_dir, tmp_path, tiny_onnx):
    d = frames_dir
    stab = _load(ROOT / "benchmarks" / "stability.py", "stability")
    out = tmp_path / "s"
    assert (
        stab.main(
            [str(d), "--model", str(tiny_onnx), "--baselines", "gftt", "-k", "100", "--out", str(out), "--threads", "1"]
        )
        == 0
    )
    res = json.loads((out / "stability.json").read_text())["results"]
    assert set(res) == {"tiny.onnx", "gftt"}
    g = res["gftt"]
    assert len(g["survival"]) == len(frames) and g["survival"][0] == 1.0
    assert g["redetection_rate"] > 0.5  # pure translation: corners persist
