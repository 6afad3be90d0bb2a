"""TensorRT engines (.engine/.plan): planned, not implemented yet."""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendNotImplementedError


def load_tensorrt(path: str | Path, **_: object):
    raise BackendNotImplementedError(
        f"cannot run {path}: the TensorRT engine backend (.engine/.plan, built by "
        "`python -m export.trt`) is not implemented in this version of kpnet. Run the .onnx model "
        "instead, on GPU with KeypointDetector(model.onnx, providers=['tensorrt']) or ['cuda']."
    )
