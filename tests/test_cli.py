import json
import subprocess
import sys

import cv2
import numpy as np

from kpnet.cli import main


def test_detect_writes_png_and_json(tiny_onnx, sample_bgr, tmp_path, capsys):
    img = tmp_path / "tiny.png"
    cv2.imwrite(str(img), cv2.resize(sample_bgr, (80, 64)))
    assert (
        main(
            ["detect", str(img), "--model", str(tiny_onnx), "--out", str(tmp_path / "o"), "-k", "20", "--threads", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "tiny.png: " in out and " keypoints in " in out and "threads 1" in out
    doc = json.loads((tmp_path / "o" / "tiny_kpnet.json").read_text())
    assert doc["image_size"] == [80, 64] and len(doc["keypoints"]) == len(doc["scores"]) <= 20
    assert cv2.imread(str(tmp_path / "o" / "tiny_kpnet.png")).shape == (64, 80, 3)


def test_detect_npz(tiny_ckpt, sample_bgr, tmp_path):
    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), sample_bgr[:96, :128])
    assert (
        main(["detect", str(img), "--model", str(tiny_ckpt), "--out", str(tmp_path), "--format", "npz", "-k", "10"])
        == 0
    )
    z = np.load(tmp_path / "a_kpnet.npz")
    assert z["xy"].shape[1] == 2 and z["xy"].shape[0] == z["scores"].shape[0] <= 10


def test_info(tiny_onnx_pp, capsys):
    assert main(["info", str(tiny_onnx_pp)]) == 0
    out = capsys.readouterr().out
    assert (
        "backend:     onnxruntime" in out and "?x1x128x160" in out and "in graph" in out and "precision:   fp32" in out
    )


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "x.onnx")]) == 2
    assert "model file not found" in capsys.readouterr().err
    bad = tmp_path / "b.png"
    bad.write_bytes(b"nope")
    assert main(["detect", str(bad), "--model", str(tmp_path / "x.onnx")]) == 2


def test_module_entry_point(tiny_onnx):
    r = subprocess.run(
        [sys.executable, "-m", "kpnet", "info", str(tiny_onnx)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "onnxruntime" in r.stdout
