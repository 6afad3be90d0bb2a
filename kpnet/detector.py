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
from .types import Keypoints, TorchKeypoints

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
        distribution: str = _UNSET,
        grid: tuple[int, int] = _UNSET,
        min_distance: float = _UNSET,
        device: str | None = None,
        providers: Sequence[Any] | None = None,
        threads: int | None = None,
        warmup: int = 1,
    ) -> None:
        requested = {
            k: v
            for k, v in dict(
                max_keypoints=max_keypoints, nms_radius=nms_radius, threshold=threshold, border=border,
                subpixel=subpixel, distribution=distribution, grid=grid, min_distance=min_distance,
            ).items()
            if v is not _UNSET
        }
        DecodeConfig(**requested)  # validate early, before loading anything
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0 (runs at construction), got {warmup!r}")
        backend = create_backend(model_path, device=device, providers=providers, threads=threads)
        try:
            self._attach(backend, requested)
            for _ in range(warmup):
                # First runs allocate memory and pick kernels; keep that out of the first frame.
                self.backend.run(np.zeros((1, 1, *self.input_size), np.float32))
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
            if requested.get("distribution", "topk") != "topk" or requested.get("min_distance", 0) > 0:
                raise ValueError(
                    f"{model_path} decodes inside the graph (plain NMS + top-k); distribution='grid'/'anms' "
                    "and min_distance need the heatmap: use a model exported without --with-postprocess"
                )
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

    def detect(self, image: np.ndarray, mask: np.ndarray | None = None) -> Keypoints:
        """Detect keypoints in one image (see the class docstring for accepted images).

        mask: optional uint8/bool HxW at the image's size; keypoints only where it is non-zero
        (``cv2.goodFeaturesToTrack`` semantics).
        """
        x, rs = prepare(image, self.input_size)
        out = self.backend.run(x[None, None])
        return self._decode(out, 0, rs, mask)

    def detect_batch(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None) -> list[Keypoints]:
        """Detect keypoints in several images, batched through the network when it allows."""
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("detect_batch expects a non-empty list of images")
        if masks is None:
            masks = [None] * len(images)
        if len(masks) != len(images):
            raise ValueError(f"detect_batch got {len(images)} images but {len(masks)} masks")
        prepared = [prepare(im, self.input_size) for im in images]
        if not self.backend.info.dynamic_batch:
            return [self._decode(self.backend.run(x[None, None]), 0, rs, m) for (x, rs), m in zip(prepared, masks)]
        batch = np.stack([x for x, _ in prepared])[:, None]
        out = self.backend.run(batch)
        return [self._decode(out, i, rs, m) for i, ((_, rs), m) in enumerate(zip(prepared, masks))]

    def detect_torch(self, image: Any) -> TorchKeypoints:
        """Detect with pre-processing, network and decoding on the model's device, returning
        torch tensors there (torch ``.pt`` and TensorRT ``.engine`` models).

        image: numpy array or torch tensor (ideally already on the device): HxW gray, HxWx3
        BGR or HxWx4 BGRA, uint8 or float in [0, 1]. Plain top-k decoding runs on the device;
        grid/ANMS/min-distance decoding runs on the host and the result is moved back.
        """
        x, rs = self._device_prepare(image)
        return self._device_decode(self.backend.run_device(x), rs)

    # The three stages of detect_torch, separately (the latency benchmark times each one).
    def _device_prepare(self, image: Any):
        run_device = getattr(self.backend, "run_device", None)
        if run_device is None:
            raise ValueError(
                f"detect_torch needs a backend that runs on torch tensors (.pt or .engine); "
                f"{self.info.name} returns host arrays: use detect()"
            )
        from .device import preprocess_device, to_device_image

        return preprocess_device(to_device_image(image, self.backend.device), self.input_size)

    def _device_decode(self, out: dict, rs: Any) -> TorchKeypoints:
        from .device import decode_on_device

        torch = __import__("torch")
        device = self.backend.device  # backends with run_device expose their torch device
        cfg = self.config
        if self.info.postprocess_in_graph:
            n = min(int(out["counts"][0]), cfg.max_keypoints)
            xy, sc = out["keypoints"][0, :n].float(), out["scores"][0, :n].float()
            keep = sc > cfg.threshold
            xy, sc = xy[keep], sc[keep]
        elif cfg.is_plain_topk:
            from .postprocess_torch import decode as torch_decode

            ((xy, sc),) = torch_decode(out["heatmap"].float(), cfg)
        else:
            radius = max(cfg.nms_radius, int(np.ceil(cfg.min_distance / min(rs.scale)))) if cfg.min_distance > 0 else None
            ((xy_np, sc_np),) = decode_on_device(out["heatmap"], cfg, None if radius is None else [radius])
            xy, sc = torch.from_numpy(xy_np).to(device), torch.from_numpy(sc_np).to(device)
        sx, sy = rs.scale
        scale = torch.tensor([sx, sy], dtype=torch.float32, device=xy.device)
        return TorchKeypoints(xy=(xy + 0.5) * scale - 0.5, scores=sc, image_size=rs.orig_size)

    def as_feature2d(self) -> "Feature2DAdapter":
        """An object with OpenCV's ``detect(image, mask=None) -> list[cv2.KeyPoint]``."""
        return Feature2DAdapter(self)

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
    def _decode(self, out, i: int, rs: Resize, mask: np.ndarray | None = None) -> Keypoints:
        cfg = self.config
        orig_mask = None if mask is None else _check_mask(mask, rs.orig_size)
        if out.heatmap is not None:
            allowed = None if orig_mask is None else _mask_to_model(orig_mask, rs.model_size)
            radius = cfg.nms_radius
            if cfg.min_distance > 0:
                # Chebyshev NMS radius r in model pixels keeps points > r * scale apart in
                # original pixels along the separating axis; pick r so that this is >= min_distance.
                radius = max(radius, int(np.ceil(cfg.min_distance / min(rs.scale))))
            xy, scores = decode(out.heatmap[i, 0], cfg, allowed=allowed, nms_radius=radius)
        else:
            n = min(int(out.counts[i]), cfg.max_keypoints)
            xy = out.keypoints[i, :n].astype(np.float32)
            scores = out.scores[i, :n].astype(np.float32)
            keep = scores > cfg.threshold
            xy, scores = xy[keep], scores[keep]
        xy = rs.to_original(xy)
        if orig_mask is not None and len(xy):
            # Exact check in original pixels (the model-resolution mask is conservative already).
            w, h = rs.orig_size
            xi = np.clip(np.rint(xy[:, 0]).astype(np.int64), 0, w - 1)
            yi = np.clip(np.rint(xy[:, 1]).astype(np.int64), 0, h - 1)
            ok = orig_mask[yi, xi]
            xy, scores = xy[ok], scores[ok]
        return Keypoints(xy=xy, scores=scores, image_size=rs.orig_size, meta={"size": float(2 * cfg.nms_radius + 1) * float(np.mean(rs.scale))})


def _check_mask(mask: object, size: tuple[int, int]) -> np.ndarray:
    """Validate a detection mask (HxW at the image size, non-zero = allowed) -> bool HxW."""
    w, h = size
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.shape != (h, w):
        got = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"mask must be a 2-D uint8 or bool array of the image's size {h}x{w}, got {got}")
    if mask.dtype not in (np.uint8, np.bool_):
        raise ValueError(f"mask dtype must be uint8 or bool (non-zero = allowed), got {mask.dtype}")
    return mask.astype(bool, copy=False)


def _mask_to_model(mask: np.ndarray, model_size: tuple[int, int]) -> np.ndarray:
    """Original-size bool mask -> model-size bool mask, allowed only where fully allowed."""
    import cv2

    if mask.shape[::-1] == model_size:
        return mask
    area = cv2.resize(mask.astype(np.float32), model_size, interpolation=cv2.INTER_AREA)
    return area >= 0.999


class Feature2DAdapter:
    """OpenCV-style front: ``detect(image, mask=None) -> list[cv2.KeyPoint]``."""

    def __init__(self, detector: KeypointDetector) -> None:
        self.detector = detector

    def detect(self, image: np.ndarray, mask: np.ndarray | None = None) -> list:
        return self.detector.detect(image, mask=mask).to_cv()

    def getDefaultName(self) -> str:  # noqa: N802 - OpenCV naming
        return "kpnet.KeypointDetector"
