"""The one backend contract: every backend turns a batch of images into heatmaps (or, when
post-processing is inside the model, into fixed-K keypoints)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Metadata keys written by ``export.onnx`` and read by the runtime.
META_KPNET_VERSION = "kpnet_version"
META_MODEL_CONFIG = "kpnet_model_config"
META_INPUT_SIZE = "kpnet_input_size"
META_POSTPROCESS = "kpnet_postprocess"
META_DECODE = "kpnet_decode_config"


@dataclass(frozen=True)
class BackendInfo:
    """Facts about a loaded model.

    Attributes:
        name: backend name ("torch", "onnxruntime", "tensorrt").
        model_path: the file the model came from.
        input_shape: (B, 1, H, W) of the input tensor; None marks a dynamic dimension.
        input_size: (H, W) images are resized to: the fixed shape, else the model's nominal size.
        device: where it runs, e.g. "cpu", "cuda:0", or the ONNX Runtime providers in use.
        precision: "fp32", "fp16" or "int8".
        postprocess_in_graph: True when the model itself outputs keypoints, scores and counts.
        decode: the decoding settings baked into the graph, when ``postprocess_in_graph``.
        threads: intra-op CPU threads, when the backend exposes them.
        metadata: raw metadata strings stored with the model.
    """

    name: str
    model_path: str
    input_shape: tuple[int | None, int, int | None, int | None]
    input_size: tuple[int, int]
    device: str
    precision: str = "fp32"
    postprocess_in_graph: bool = False
    decode: dict[str, Any] | None = None
    threads: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dynamic_batch(self) -> bool:
        return self.input_shape[0] is None


@dataclass(frozen=True)
class BackendOutput:
    """What a backend returns for a batch of B images.

    Either ``heatmap`` float32 [B, 1, H, W] logits, or (in-graph post-processing)
    ``keypoints`` float32 [B, K, 2] in model pixels, ``scores`` float32 [B, K] (0 = padding)
    and ``counts`` int64 [B].
    """

    heatmap: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    scores: np.ndarray | None = None
    counts: np.ndarray | None = None


@runtime_checkable
class Backend(Protocol):
    """Contract that :class:`kpnet.KeypointDetector` relies on."""

    info: BackendInfo

    def run(self, batch: np.ndarray) -> BackendOutput:
        """batch float32 [B, 1, H, W] in [0, 1] -> BackendOutput."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc: object) -> None: ...


class BaseBackend:
    """Shared input checks, context manager and close-once logic; subclasses implement
    ``_run_impl`` and ``_close_impl``."""

    info: BackendInfo

    def __init__(self) -> None:
        self._closed = False

    def run(self, batch: np.ndarray) -> BackendOutput:
        if self._closed:
            raise RuntimeError(f"{self.info.name} backend for {self.info.model_path} is closed")
        check_batch(batch, self.info.input_shape)
        return self._run_impl(batch)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_impl()

    def __enter__(self) -> "BaseBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_impl(self, batch: np.ndarray) -> BackendOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass


def check_batch(batch: np.ndarray, shape: tuple[int | None, ...], name: str = "image") -> None:
    """Raise ValueError naming the tensor when ``batch`` does not fit ``shape`` (None = any)."""
    if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
        got = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
        raise ValueError(f"input tensor '{name}' must be a float32 numpy array, got {got}")
    if batch.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, batch.shape)):
        want = "x".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"input tensor '{name}' has shape {tuple(batch.shape)}; the model expects {want}")


def parse_metadata(meta: dict[str, str]) -> tuple[tuple[int, int] | None, bool, dict[str, Any] | None]:
    """(nominal input size (H, W) or None, post-processing in graph, decode config or None)."""
    size = None
    if META_INPUT_SIZE in meta:
        h, w = (int(v) for v in json.loads(meta[META_INPUT_SIZE]))
        size = (h, w)
    in_graph = meta.get(META_POSTPROCESS, "false").lower() == "true"
    decode = json.loads(meta[META_DECODE]) if META_DECODE in meta else None
    return size, in_graph, decode
