"""Shared fixtures: tiny random-weight models (built once per session) and a real image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "astronaut.jpg"
#: Small enough to be fast on two cores, large enough for real structure.
TINY_SIZE = (128, 160)


@pytest.fixture(scope="session")
def sample_bgr() -> np.ndarray:
    img = cv2.imread(str(SAMPLE), cv2.IMREAD_COLOR)
    assert img is not None, f"missing test image {SAMPLE}"
    return img


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from kpnet.config import ModelConfig
    from kpnet.model import KpNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    model = KpNet(ModelConfig(backbone="small", fpn_width=16, input_size=TINY_SIZE))
    with torch.no_grad():
        # A random head gives an almost flat heatmap; amplify it so that scores are well
        # separated and keypoint comparisons test decoding rather than float noise.
        model.head.weight.mul_(30.0)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_ckpt) -> Path:
    """Tiny model as shipped models are exported (dynamic batch, height and width), without
    calibrated defaults (threshold 0, no contrast floor), so that budgets are exact."""
    from export.onnx import ExportOptions, export_onnx

    out = tiny_ckpt.with_name("tiny.onnx")
    export_onnx(tiny_ckpt, out, ExportOptions(exporter="torchscript", calibrate=False))
    return out


@pytest.fixture(scope="session")
def tiny_onnx_fixed(tiny_ckpt) -> Path:
    """Tiny model with a fixed 128x160 input (the shape a TensorRT profile or an old export has)."""
    from export.onnx import ExportOptions, export_onnx

    out = tiny_ckpt.with_name("tiny_fixed.onnx")
    export_onnx(tiny_ckpt, out, ExportOptions(exporter="torchscript", dynamic_hw=False, calibrate=False))
    return out


@pytest.fixture(scope="session")
def tiny_onnx_pp(tiny_ckpt) -> Path:
    """Tiny model with NMS + top-k (K=200) inside the graph, exported with the dynamo exporter."""
    from export.onnx import ExportOptions, export_onnx
    from kpnet.config import DecodeConfig

    out = tiny_ckpt.with_name("tiny_pp.onnx")
    export_onnx(
        tiny_ckpt, out, ExportOptions(exporter="dynamo", decode=DecodeConfig(max_keypoints=200, nms_radius=3, border=4))
    )
    return out
