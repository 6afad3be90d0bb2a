"""KeypointDetector: images in, keypoints out, over any backend."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from .backends import Backend, create_backend
from .config import DecodeConfig
from .postprocess import decode, sigmoid
from .preprocess import Resize, prepare
from .types import Keypoints

_UNSET: Any = object()


class KeypointDetector:
    """Detect keypoints with a kpnet model.

    >>> det = KeypointDetector("models/kpnet-small.onnx", max_keypoints=1000)  # doctest: +SKIP
    >>> kps = det.detect(cv2.imread("frame.png"))  # BGR uint8, any size        # doctest: +SKIP
    >>> kps.xy.shape, kps.scores.shape                                          # doctest: +SKIP
    ((1000, 2), (1000,))

    The backend is picked by the file suffix: ``.onnx`` (ONNX Runtime), ``.pt``/``.pth``
    (PyTorch), ``.engine``/``.plan`` (TensorRT). Images of any size are resized to the model's
    input size (VGA, 480x640, unless the model says otherwise) and keypoints are mapped back
    to the original pixels.

    Args:
        model_path: model file.
        max_keypoints: at most this many keypoints per image (top-k by score).
        nms_radius: non-maximum-suppression radius in model pixels.
        threshold: minimum probability, exclusive.
        border: ignore this many model pixels at each edge.
        subpixel: quadratic sub-pixel refinement (host decoding only).
        device: for .pt models: "cpu" (default), "cuda" or "cuda:N".
        providers: for .onnx models: ONNX Runtime providers, e.g. ["cpu"] (default), ["cuda"],
            ["tensorrt"]; an unavailable one raises, it is never dropped silently.
        threads: intra-op CPU threads (default: the runtime's choice, the physical cores).

    For models exported with post-processing in the graph, NMS radius, border and threshold
    are fixed at export; passing different values raises. ``max_keypoints`` may be lower.

    Thread safety: ``detect`` keeps no per-call state on the instance and ONNX Runtime and
    PyTorch inference are re-entrant, so one detector may serve concurrent ``detect`` calls.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        max_keypoints: int = _UNSET,
        nms_radius: int = _UNSET,
        threshold: float = _UNSET,
        border: int = _UNSET,
        subpixel: bool = _UNSET,
        device: str | None = None,
        providers: Sequence[Any] | None = None,
        threads: int | None = None,
    ) -> None:
        requested = {
            k: v
            for k, v in dict(
                max_keypoints=max_keypoints, nms_radius=nms_radius, threshold=threshold, border=border, subpixel=subpixel
            ).items()
            if v is not _UNSET
        }
        DecodeConfig(**requested)  # validate early, before loading anything
        backend = create_backend(model_path, device=device, providers=providers, threads=threads)
        try:
            self._attach(backend, requested)
        except Exception:
            backend.close()
            raise

    @classmethod
    def from_backend(cls, backend: Backend, **decode: Any) -> "KeypointDetector":
        """Wrap an already-created backend (anything following the Backend contract)."""
        DecodeConfig(**decode)
        self = cls.__new__(cls)
        self._attach(backend, decode)
        return self

    def _attach(self, backend: Backend, requested: dict[str, Any]) -> None:
        self.backend = backend
        info = backend.info
        model_path = info.model_path
        if info.postprocess_in_graph:
            baked = DecodeConfig(**(info.decode or {}))
            for key in ("nms_radius", "border", "threshold"):
                if key in requested and requested[key] != getattr(baked, key):
                    raise ValueError(
                        f"{model_path} has post-processing inside the graph with {key}={getattr(baked, key)}; "
                        f"got {key}={requested[key]}. Re-export with the value you need or use a model "
                        "without --with-postprocess"
                    )
            if requested.get("subpixel"):
                raise ValueError(f"{model_path} decodes inside the graph, which has no sub-pixel refinement")
            k = requested.get("max_keypoints", baked.max_keypoints)
            if k > baked.max_keypoints:
                raise ValueError(
                    f"max_keypoints={k} exceeds the K={baked.max_keypoints} baked into {model_path}; "
                    "re-export with a larger --max-keypoints"
                )
            self.config = replace(baked, max_keypoints=k)
        else:
            self.config = DecodeConfig(**requested)
        self.input_size: tuple[int, int] = info.input_size

    # ------------------------------------------------------------------ public API
    @property
    def info(self):
        """The backend's :class:`kpnet.backends.BackendInfo`."""
        return self.backend.info

    def detect(self, image: np.ndarray) -> Keypoints:
        """Detect keypoints in one image (see the class docstring for accepted images)."""
        x, rs = prepare(image, self.input_size)
        out = self.backend.run(x[None, None])
        return self._decode(out, 0, rs)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Keypoints]:
        """Detect keypoints in several images, batched through the network when it allows."""
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("detect_batch expects a non-empty list of images")
        prepared = [prepare(im, self.input_size) for im in images]
        if not self.backend.info.dynamic_batch:
            return [self._decode(self.backend.run(x[None, None]), 0, rs) for x, rs in prepared]
        batch = np.stack([x for x, _ in prepared])[:, None]
        out = self.backend.run(batch)
        return [self._decode(out, i, rs) for i, (_, rs) in enumerate(prepared)]

    def heatmap(self, image: np.ndarray) -> np.ndarray:
        """Keypoint probability map float32 [H, W] at the model's input size (not the image's)."""
        if self.backend.info.postprocess_in_graph:
            raise ValueError(
                f"{self.backend.info.model_path} outputs keypoints, not a heatmap; use a model "
                "exported without --with-postprocess"
            )
        x, _ = prepare(image, self.input_size)
        return sigmoid(self.backend.run(x[None, None]).heatmap[0, 0])

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "KeypointDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _decode(self, out, i: int, rs: Resize) -> Keypoints:
        if out.heatmap is not None:
            xy, scores = decode(out.heatmap[i, 0], self.config)
        else:
            n = min(int(out.counts[i]), self.config.max_keypoints)
            xy = out.keypoints[i, :n].astype(np.float32)
            scores = out.scores[i, :n].astype(np.float32)
            keep = scores > self.config.threshold
            xy, scores = xy[keep], scores[keep]
        return Keypoints(xy=rs.to_original(xy), scores=scores, image_size=rs.orig_size)
