"""Lazy imports of optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module name -> (pip extra, what it is needed for)
_EXTRAS = {
    "torch": ("torch", "the PyTorch backend and .pt checkpoints"),
    "torchvision": ("torch", "the student network's MobileNetV3 backbone"),
    "onnxruntime": ("", "the ONNX Runtime backend"),
    "onnx": ("export", "ONNX export and model metadata"),
    "onnxscript": ("export", "ONNX export"),
    "tensorrt": ("gpu", "TensorRT engines"),
    "kornia": ("train", "training"),
    "cv2": ("", "image I/O and resizing"),
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the pip extra that provides it
    (``extra`` overrides the module's usual extra, e.g. "train" inside the training code)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        usual, purpose = _EXTRAS.get(module.split(".")[0], ("", "this feature"))
        extra = usual if extra is None else extra
        target = f"kpnet[{extra}]" if extra else "kpnet"
        raise MissingDependencyError(
            f"'{module}' is required for {purpose} but is not installed ({exc}); "
            f"install it with: pip install '{target}'"
        ) from exc
