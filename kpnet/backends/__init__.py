"""Backend factory: picks the backend from the model file's suffix.

| suffix          | backend                       | extra needed        |
|-----------------|-------------------------------|---------------------|
| .onnx           | ONNX Runtime                  | (core)              |
| .pt, .pth       | PyTorch (CPU or CUDA)         | kpnet[torch]        |
| .engine, .plan  | TensorRT (+ sidecar .json)    | kpnet[gpu] + torch  |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, ModelNotFoundError, UnsupportedModelError
from .base import Backend, BackendInfo, BackendOutput, BaseBackend


def _onnx(path: Path, *, device: str | None, providers: Any, threads: int | None) -> Backend:
    if device is not None:
        raise ConfigError(
            f"device={device!r} does not apply to ONNX models; choose execution providers instead, "
            "e.g. providers=['cuda'] or ['cpu']"
        )
    from .onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, providers=providers, threads=threads)


def _torch(path: Path, *, device: str | None, providers: Any, threads: int | None) -> Backend:
    if providers is not None:
        raise ConfigError(
            f"providers={providers!r} only apply to .onnx models; for a PyTorch checkpoint use device='cpu' or 'cuda'"
        )
    from .torch_backend import TorchBackend

    return TorchBackend(path, device=device, threads=threads)


def _tensorrt(path: Path, **kw: Any) -> Backend:
    from .tensorrt import load_tensorrt

    return load_tensorrt(path, **kw)


_HOW_TO_MAKE = {
    ".onnx": "Shipped models are in the repository's models/ folder; export one with `python -m export.onnx CHECKPOINT.pt`",
    ".pt": "Shipped checkpoints are in the repository's models/ folder; training writes runs/*/best.pt",
    ".engine": "Build a TensorRT engine on the GPU that will run it: `python -m export.trt MODEL.onnx -o ENGINE.engine`",
}
_HOW_TO_MAKE[".pth"] = _HOW_TO_MAKE[".pt"]
_HOW_TO_MAKE[".plan"] = _HOW_TO_MAKE[".engine"]

_BY_SUFFIX: dict[str, Callable[..., Backend]] = {
    ".onnx": _onnx,
    ".pt": _torch,
    ".pth": _torch,
    ".engine": _tensorrt,
    ".plan": _tensorrt,
}


def create_backend(
    model_path: str | os.PathLike,
    *,
    device: str | None = None,
    providers: Any = None,
    threads: int | None = None,
) -> Backend:
    """Load ``model_path`` with the backend its suffix names (see the module table)."""
    if model_path is None or not isinstance(model_path, (str, os.PathLike)):
        raise ConfigError(
            f"model_path must be the path of a model file ({', '.join(sorted(_BY_SUFFIX))}), got "
            f"{type(model_path).__name__} {model_path!r}; e.g. KeypointDetector('models/kpnet-small.onnx')"
        )
    path = Path(model_path)
    suffix = path.suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise UnsupportedModelError(
            f"unknown model file type {suffix or '(no suffix)'!r} for {path}; supported: "
            f"{', '.join(sorted(_BY_SUFFIX))}"
        )
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}. {_HOW_TO_MAKE[suffix]}")
    return _BY_SUFFIX[suffix](path, device=device, providers=providers, threads=threads)


__all__ = ["Backend", "BackendInfo", "BackendOutput", "BaseBackend", "create_backend"]
