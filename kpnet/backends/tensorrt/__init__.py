"""TensorRT engines: the backend (``backend``) and the engine metadata sidecar (``metadata``);
device-side pre/post-processing is shared with the PyTorch backend in :mod:`kpnet.device`. Importing this package needs neither TensorRT
nor torch; they are imported when an engine is loaded."""

from __future__ import annotations

from .metadata import (
    EngineIncompatibleError,
    EngineMetadata,
    ShapeProfile,
    check_engine_compatible,
    read_engine_metadata,
    sidecar_path,
    write_engine_metadata,
)


def load_tensorrt(path, **kw):
    from .backend import load_tensorrt as _load

    return _load(path, **kw)


def __getattr__(name: str):
    if name == "TensorRTBackend":
        from .backend import TensorRTBackend

        return TensorRTBackend
    raise AttributeError(name)


__all__ = [
    "EngineIncompatibleError",
    "EngineMetadata",
    "ShapeProfile",
    "TensorRTBackend",
    "check_engine_compatible",
    "load_tensorrt",
    "read_engine_metadata",
    "sidecar_path",
    "write_engine_metadata",
]
