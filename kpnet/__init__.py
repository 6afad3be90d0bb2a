"""kpnet: a fast learned keypoint detector.

>>> from kpnet import KeypointDetector
>>> kps = KeypointDetector("models/kpnet-small.onnx").detect(image)  # doctest: +SKIP

Only numpy, OpenCV and ONNX Runtime are needed for ``.onnx`` models; torch is imported
lazily, only when a ``.pt`` model or the network itself is used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import DecodeConfig, ModelConfig  # noqa: E402
from .errors import (  # noqa: E402
    BackendClosedError,
    BackendNotImplementedError,
    ConfigError,
    InvalidImageError,
    KpnetError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderUnavailableError,
    UnsupportedModelError,
)
from .sizing import WorkingSize, parse_hw  # noqa: E402
from .types import Keypoints  # noqa: E402

__all__ = [
    "__version__",
    "KeypointDetector",
    "Keypoints",
    "ModelConfig",
    "DecodeConfig",
    "WorkingSize",
    "parse_hw",
    "KpnetError",
    "ConfigError",
    "InvalidImageError",
    "BackendClosedError",
    "ModelLoadError",
    "ModelNotFoundError",
    "UnsupportedModelError",
    "MissingDependencyError",
    "ProviderUnavailableError",
    "BackendNotImplementedError",
]


def __getattr__(name: str):
    # KeypointDetector pulls in cv2 and the backend factory; keep `import kpnet` cheap.
    if name == "KeypointDetector":
        from .detector import KeypointDetector

        return KeypointDetector
    raise AttributeError(f"module 'kpnet' has no attribute {name!r}")
