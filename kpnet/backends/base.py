"""The one backend contract (Polygraphy-style runners): a backend turns a batch of images into
heatmaps (or, when post-processing is inside the model, into fixed-K keypoints), and nothing
else. Pre-processing, decoding and mapping to image pixels belong to
:mod:`kpnet.preprocess`, :mod:`kpnet.decoding` and :class:`kpnet.KeypointDetector`.

``run`` takes a numpy array or a torch tensor and returns the same kind: numpy in, numpy out;
torch in, torch tensors out on the backend's device (``BackendInfo.torch_device``), so a GPU
pipeline never copies frames or heatmaps through the host. Backends implement ``_run_impl``
for their native kind (``BackendInfo.native``); :class:`BaseBackend` converts the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import BackendClosedError, ConfigError

#: Metadata keys written by ``export.onnx`` and read by the runtime.
META_KPNET_VERSION = "kpnet_version"
META_MODEL_CONFIG = "kpnet_model_config"
META_INPUT_SIZE = "kpnet_input_size"
META_POSTPROCESS = "kpnet_postprocess"
META_DECODE = "kpnet_decode_config"
#: Calibrated decoding defaults ({"threshold": p, "min_contrast": grey levels}) and the figures.
META_DEFAULTS = "kpnet_decode_defaults"
META_CALIBRATION = "kpnet_calibration"


@dataclass(frozen=True)
class BackendInfo:
    """Facts about a loaded model.

    Attributes:
        name: backend name ("torch", "onnxruntime", "tensorrt").
        model_path: the file the model came from.
        input_shape: (B, 1, H, W) of the input tensor; None marks a dynamic dimension.
        input_size: nominal (H, W): the fixed shape, else the size the model was trained and
            exported at (its pixel budget for native-aspect working sizes).
        device: where it runs, in words, e.g. "cpu", "cuda:0", or the ONNX Runtime providers.
        precision: "fp32", "fp16", "int8" or "best".
        postprocess_in_graph: True when the model itself outputs keypoints, scores and counts.
        decode: the decoding settings baked into the graph, when ``postprocess_in_graph``.
        threads: intra-op CPU threads that run the network (None: not a CPU backend, or the
            runtime's default).
        metadata: raw metadata strings stored with the model.
        native: "numpy" or "torch": the array kind ``run`` computes on without conversion.
        torch_device: for torch-native backends, the torch device string ("cpu", "cuda:0").
        stride: input height and width must be multiples of this (32, 64 for the fast model).
        size_range: ((min_h, min_w), (max_h, max_w)) the model accepts when its height and
            width are dynamic but bounded (a TensorRT profile); None = unbounded or fixed.
        defaults: calibrated decoding defaults stored with the model (``threshold``,
            ``min_contrast``); empty for models exported before calibration existed.
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
    native: str = "numpy"
    torch_device: str | None = None
    stride: int = 32
    size_range: tuple[tuple[int, int], tuple[int, int]] | None = None
    defaults: dict[str, float] = field(default_factory=dict)

    @property
    def dynamic_batch(self) -> bool:
        return self.input_shape[0] is None

    @property
    def dynamic_hw(self) -> bool:
        """True when the model takes any height and width (multiples of ``stride``)."""
        return self.input_shape[2] is None and self.input_shape[3] is None


def _is_torch(x: object) -> bool:
    t = type(x)
    return t.__module__.startswith("torch") and t.__name__ in ("Tensor", "Parameter")


@dataclass(frozen=True)
class BackendOutput:
    """What a backend returns for a batch of B images: numpy arrays or torch tensors.

    Either ``heatmap`` float32 [B, 1, H, W] logits, or (in-graph post-processing)
    ``keypoints`` float32 [B, K, 2] in model pixels, ``scores`` float32 [B, K] (0 = padding)
    and ``counts`` int64 [B].
    """

    heatmap: Any = None
    keypoints: Any = None
    scores: Any = None
    counts: Any = None

    @property
    def is_torch(self) -> bool:
        return any(_is_torch(v) for v in (self.heatmap, self.keypoints, self.scores, self.counts))

    def _map(self, fn) -> "BackendOutput":
        return BackendOutput(
            *(None if v is None else fn(v) for v in (self.heatmap, self.keypoints, self.scores, self.counts))
        )

    def numpy(self) -> "BackendOutput":
        """Host copy (no-op for numpy outputs)."""
        if not self.is_torch:
            return self
        return self._map(lambda t: t.detach().cpu().numpy())

    def to_torch(self, device: Any) -> "BackendOutput":
        """As torch tensors on ``device``."""
        import torch

        return self._map(lambda a: (a if _is_torch(a) else torch.from_numpy(np.ascontiguousarray(a))).to(device))


@runtime_checkable
class Backend(Protocol):
    """Contract that :class:`kpnet.KeypointDetector` relies on."""

    info: BackendInfo

    def run(self, batch: Any) -> BackendOutput:
        """batch float32 [B, 1, H, W] in [0, 1], numpy or torch -> BackendOutput of the same kind."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc: object) -> None: ...


class BaseBackend:
    """Shared input checks, numpy/torch conversion, context manager and close-once logic;
    subclasses implement ``_run_impl`` (on ``info.native`` arrays) and ``_close_impl``."""

    info: BackendInfo

    def __init__(self) -> None:
        self._closed = False

    def run(self, batch: Any) -> BackendOutput:
        if self._closed:
            raise BackendClosedError(
                f"{self.info.name} backend for {self.info.model_path} is closed; create a new detector"
            )
        want_torch = _is_torch(batch)
        check_batch(batch, self.info.input_shape, stride=self.info.stride)
        if self.info.native == "torch":
            if not want_torch:
                import torch

                return self._run_impl(torch.from_numpy(batch)).numpy()
            return self._run_impl(batch)
        if want_torch:
            out = self._run_impl(np.ascontiguousarray(batch.detach().cpu().numpy()))
            return out.to_torch(batch.device)
        return self._run_impl(batch)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_impl()

    def __enter__(self) -> "BaseBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_impl(self, batch: Any) -> BackendOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close_impl(self) -> None:
        pass


def check_batch(batch: Any, shape: tuple[int | None, ...], name: str = "image", stride: int = 1) -> None:
    """Raise ConfigError naming the tensor when ``batch`` (numpy or torch) does not fit
    ``shape`` (None = any) or its height and width are not multiples of ``stride``."""
    if _is_torch(batch):
        import torch

        ok_type = batch.dtype == torch.float32
        got = f"torch {batch.dtype}"
    elif isinstance(batch, np.ndarray):
        ok_type = batch.dtype == np.float32
        got = str(batch.dtype)
    else:
        ok_type, got = False, type(batch).__name__
    if not ok_type:
        raise ConfigError(f"input tensor '{name}' must be a float32 numpy array or torch tensor, got {got}")
    dims = tuple(batch.shape)
    if len(dims) != len(shape) or any(s is not None and s != d for s, d in zip(shape, dims)):
        want = "x".join("?" if s is None else str(s) for s in shape)
        raise ConfigError(f"input tensor '{name}' has shape {dims}; the model expects {want}")
    if stride > 1 and len(dims) == 4 and (dims[2] % stride or dims[3] % stride):
        raise ConfigError(f"input tensor '{name}' is {dims[2]}x{dims[3]} (HxW); the model needs multiples of {stride}")


def parse_metadata(meta: dict[str, str]) -> tuple[tuple[int, int] | None, bool, dict[str, Any] | None]:
    """(nominal input size (H, W) or None, post-processing in graph, decode config or None)."""
    size = None
    if META_INPUT_SIZE in meta:
        h, w = (int(v) for v in json.loads(meta[META_INPUT_SIZE]))
        size = (h, w)
    in_graph = meta.get(META_POSTPROCESS, "false").lower() == "true"
    decode = json.loads(meta[META_DECODE]) if META_DECODE in meta else None
    return size, in_graph, decode


def model_stride(meta: dict[str, str]) -> int:
    """32 x the model config's ``downsample`` (from the metadata; 32 when absent)."""
    from ..config import STRIDE

    try:
        cfg = json.loads(meta.get(META_MODEL_CONFIG, "{}"))
    except ValueError:
        cfg = {}
    return STRIDE * int(cfg.get("downsample", 1) or 1)


def decode_defaults(meta: dict[str, str]) -> dict[str, float]:
    """The calibrated decoding defaults stored with a model ({} when there are none)."""
    raw = meta.get(META_DEFAULTS)
    if not raw:
        return {}
    d = json.loads(raw)
    return {k: float(v) for k, v in d.items() if k in ("threshold", "min_contrast")}
