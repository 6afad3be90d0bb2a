"""KeypointDetector: images in, keypoints out, over any backend.

A slim composition of public stages: :meth:`KeypointDetector.prepare` (validate, gray,
resize to the working size), :meth:`~KeypointDetector.infer` (the backend's ``run``) and
:meth:`~KeypointDetector.decode` (:func:`kpnet.decoding.decode_output`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .backends import Backend, create_backend
from .backends.base import BackendOutput, _is_torch
from .config import DecodeConfig
from .decoding import decode_output, resolve_config
from .errors import ConfigError, InvalidImageError
from .postprocess import sigmoid
from .preprocess import Resize, prepare
from .sizing import WorkingSize, check_frame_size
from .types import DEFAULT_KEYPOINT_SIZE, Keypoints

_UNSET: Any = object()
DECODE_KEYS = (
    "max_keypoints",
    "nms_radius",
    "threshold",
    "border",
    "subpixel",
    "distribution",
    "grid",
    "min_distance",
    "min_contrast",
)

#: Named settings. ``vo``: the visual-odometry defaults the README recommends (1000 keypoints
#: spread on a 12x16 grid, NMS radius 4 px).
PRESETS: dict[str, dict[str, Any]] = {
    "vo": {"max_keypoints": 1000, "distribution": "grid", "grid": (12, 16), "nms_radius": 4},
}


@dataclass(frozen=True)
class Prepared:
    """A frame ready for the network: ``batch`` float32 [1, 1, H, W] in [0, 1] (numpy, or
    torch on the backend's device) at the working size, and the Resize back to the frame."""

    batch: Any
    resize: Resize


class KeypointDetector:
    """Detect keypoints with a kpnet model.

    >>> det = KeypointDetector("models/kpnet-small.onnx", max_keypoints=1000)  # doctest: +SKIP
    >>> kps = det.detect(cv2.imread("frame.png"))  # BGR uint8, any size        # doctest: +SKIP
    >>> kps.xy.shape, kps.scores.shape                                          # doctest: +SKIP
    ((1000, 2), (1000,))

    The backend is picked by the file suffix: ``.onnx`` (ONNX Runtime), ``.pt``/``.pth``
    (PyTorch), ``.engine``/``.plan`` (TensorRT). Each frame runs at its own aspect ratio by
    default (``size``), and keypoints come back in the original frame's pixels.

    Args:
        model_path: model file.
        preset: named settings (:data:`PRESETS`, e.g. "vo"); explicit arguments override it.
        max_keypoints: at most this many keypoints per image (default 1024).
        nms_radius: non-maximum-suppression radius in original image pixels (default 4).
        threshold: minimum probability, exclusive (default: the model's calibrated one).
        border: ignore keypoints within this many original image pixels of the edge (default 4).
        subpixel: quadratic sub-pixel refinement.
        distribution: "topk", "grid" or "anms" (see :class:`kpnet.DecodeConfig`).
        grid: (rows, cols) for the grid distribution; implies ``distribution="grid"``.
        min_distance: greedy minimum distance in original pixels, as goodFeaturesToTrack.
        min_contrast: local-contrast floor in grey levels (default: the model's calibrated one).
        size: working size: None (the frame's aspect at the model's pixel budget, rounded to
            the stride), (H, W) or "HxW" (fixed), or a :class:`kpnet.sizing.WorkingSize`
            (``long_side=``, ``pixels=``).
        keypoint_size: ``cv2.KeyPoint.size`` given by ``to_cv``, original pixels (default 31).
        device: for .pt models: "cpu" (default), "cuda" or "cuda:N".
        providers: for .onnx models: ONNX Runtime providers, e.g. ["cpu"] (default), ["cuda"],
            ["tensorrt"]; an unavailable one raises, it is never dropped silently.
        threads: CPU threads that run the network (ONNX Runtime's intra-op pool, or torch's,
            which is process-wide); not for GPU engines. Default: the runtime's choice.
        warmup: network runs at construction, so the first frame is not slow.

    For models exported with post-processing in the graph, NMS radius and border are fixed at
    export (in model pixels); ``max_keypoints`` may be lower and ``threshold`` higher.

    Thread safety: ``detect`` keeps no per-call state on the instance and ONNX Runtime and
    PyTorch inference are re-entrant, so one detector may serve concurrent ``detect`` calls.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        preset: str | None = None,
        max_keypoints: int = _UNSET,
        nms_radius: int = _UNSET,
        threshold: float = _UNSET,
        border: int = _UNSET,
        subpixel: bool = _UNSET,
        distribution: str = _UNSET,
        grid: tuple[int, int] = _UNSET,
        min_distance: float = _UNSET,
        min_contrast: float = _UNSET,
        size: Any = None,
        keypoint_size: float = DEFAULT_KEYPOINT_SIZE,
        device: str | None = None,
        providers: Sequence[Any] | None = None,
        threads: int | None = None,
        warmup: int = 1,
    ) -> None:
        given = dict(
            max_keypoints=max_keypoints,
            nms_radius=nms_radius,
            threshold=threshold,
            border=border,
            subpixel=subpixel,
            distribution=distribution,
            grid=grid,
            min_distance=min_distance,
            min_contrast=min_contrast,
        )
        requested = _with_preset(preset, {k: v for k, v in given.items() if v is not _UNSET})
        resolve_config(requested, _NO_MODEL)  # validate early, before loading anything
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ConfigError(f"warmup must be an int >= 0 (runs at construction), got {warmup!r}")
        policy = WorkingSize.coerce(size)
        backend = create_backend(model_path, device=device, providers=providers, threads=threads)
        try:
            self._attach(backend, requested, policy, explicit_size=size is not None, keypoint_size=keypoint_size)
            for _ in range(warmup):
                # First runs allocate memory and pick kernels; keep that out of the first frame.
                self.backend.run(np.zeros((1, 1, *self.input_size), np.float32))
        except Exception:
            backend.close()
            raise

    @classmethod
    def from_backend(
        cls,
        backend: Backend,
        *,
        size: Any = None,
        keypoint_size: float = DEFAULT_KEYPOINT_SIZE,
        preset: str | None = None,
        **decode: Any,
    ) -> "KeypointDetector":
        """Wrap an already-created backend (anything following the Backend contract)."""
        unknown = sorted(set(decode) - set(DECODE_KEYS))
        if unknown:
            raise ConfigError(f"unknown decoding settings {unknown}; valid: {', '.join(DECODE_KEYS)}")
        self = cls.__new__(cls)
        self._attach(
            backend,
            _with_preset(preset, decode),
            WorkingSize.coerce(size),
            explicit_size=size is not None,
            keypoint_size=keypoint_size,
        )
        return self

    def _attach(
        self,
        backend: Backend,
        requested: dict[str, Any],
        policy: WorkingSize,
        *,
        explicit_size: bool,
        keypoint_size: float,
    ) -> None:
        self.backend = backend
        info = backend.info
        self._requested = dict(requested)
        self.config: DecodeConfig = resolve_config(requested, info)
        self._configs: dict[Any, DecodeConfig] = {}
        if not isinstance(keypoint_size, (int, float)) or isinstance(keypoint_size, bool) or keypoint_size <= 0:
            raise ConfigError(f"keypoint_size must be a positive number of pixels, got {keypoint_size!r}")
        self.keypoint_size = float(keypoint_size)
        #: Nominal (H, W) of the model: its fixed input, or its pixel budget for native aspect.
        self.input_size: tuple[int, int] = tuple(info.input_size)  # type: ignore[assignment]
        self.stride = int(info.stride)
        fixed_hw = (info.input_shape[2], info.input_shape[3])
        if fixed_hw[0] is not None and fixed_hw[1] is not None:
            if explicit_size and (not policy.is_fixed or tuple(policy.fixed) != tuple(fixed_hw)):
                raise ConfigError(
                    f"{info.model_path} has a fixed input of {fixed_hw[0]}x{fixed_hw[1]}; it cannot run at "
                    f"{policy.describe()}. Re-export it with dynamic height and width (python -m export.onnx, the default)"
                )
            policy = WorkingSize(fixed=fixed_hw)
        elif info.size_range is not None and not explicit_size:
            policy = WorkingSize(fixed=self.input_size)  # a TensorRT profile: its opt shape
        self.size_policy = policy

    # ------------------------------------------------------------------ public API
    @property
    def info(self):
        """The backend's :class:`kpnet.backends.BackendInfo`."""
        return self.backend.info

    def working_size(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) the network runs at for a frame of (H, W) pixels."""
        check_frame_size(frame_hw, self.stride)
        return self.size_policy.resolve(tuple(frame_hw), self.stride, self.input_size)

    def config_for(self, **overrides: Any) -> DecodeConfig:
        """The decoding settings of a call with these per-call overrides (validated)."""
        if not overrides:
            return self.config
        key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()))
        cfg = self._configs.get(key)
        if cfg is None:
            unknown = sorted(set(overrides) - set(DECODE_KEYS))
            if unknown:
                raise ConfigError(f"unknown decoding settings {unknown}; valid: {', '.join(DECODE_KEYS)}")
            merged = {**self._requested, **overrides}
            if "distribution" in overrides and "grid" not in overrides and overrides["distribution"] != "grid":
                merged.pop("grid", None)  # a per-call topk/anms drops the detector's grid
            cfg = resolve_config(merged, self.backend.info)
            if len(self._configs) < 64:
                self._configs[key] = cfg
        return cfg

    def prepare(self, image: Any) -> Prepared:
        """Stage 1: validate, convert to gray, resize to the working size, scale to [0, 1].
        numpy images stay on the host; torch tensors are prepared on the model's device
        (torch-native backends) or where they are."""
        if _is_torch(image):
            from .device import preprocess_device, to_device_image

            dev = self.backend.info.torch_device or image.device
            x, rs = preprocess_device(to_device_image(image, dev), self.working_size)
            return Prepared(x, rs)
        if not isinstance(image, np.ndarray):
            raise InvalidImageError(
                f"image must be a numpy array (HxW gray, HxWx3 BGR, HxWx4 BGRA) or a torch tensor; got {type(image).__name__}"
            )
        x, rs = prepare(image, self.working_size)
        return Prepared(x[None, None], rs)

    def infer(self, prepared: Prepared | Any) -> BackendOutput:
        """Stage 2: run the network on a Prepared frame (or a float32 [B, 1, H, W] batch)."""
        batch = prepared.batch if isinstance(prepared, Prepared) else prepared
        return self.backend.run(batch)

    def decode(
        self,
        output: BackendOutput,
        prepared: Prepared,
        index: int = 0,
        *,
        mask: np.ndarray | None = None,
        **overrides: Any,
    ) -> Keypoints:
        """Stage 3: one image of a network output -> Keypoints in the frame's pixels."""
        cfg = self.config_for(**overrides)
        img = prepared.batch[min(index, prepared.batch.shape[0] - 1), 0] if cfg.min_contrast > 0 else None
        return decode_output(
            output,
            index,
            cfg,
            prepared.resize,
            image=img,
            mask=mask,
            in_graph=self.backend.info.postprocess_in_graph,
            keypoint_size=self.keypoint_size,
        )

    def detect(self, image: Any, mask: np.ndarray | None = None, **overrides: Any) -> Keypoints:
        """Detect keypoints in one image (numpy: HxW gray, HxWx3 BGR, HxWx4 BGRA, uint8 or
        float in [0, 1]; or a torch tensor of the same layout, for results on the device).

        mask: optional uint8/bool HxW at the image's size; keypoints only where it is non-zero
        (``cv2.goodFeaturesToTrack`` semantics). ``overrides``: any decoding setting for this
        call only, e.g. ``detect(img, max_keypoints=200)``.
        """
        p = self.prepare(image)
        return self.decode(self.infer(p), p, mask=mask, **overrides)

    def detect_batch(
        self, images: Sequence[Any], masks: Sequence[np.ndarray | None] | None = None, **overrides: Any
    ) -> list[Keypoints]:
        """Detect keypoints in several images; images with the same working size run as one
        batch when the model allows it."""
        if not isinstance(images, (list, tuple)) or not images:
            raise InvalidImageError("detect_batch expects a non-empty list of images")
        if masks is None:
            masks = [None] * len(images)
        if len(masks) != len(images):
            raise ConfigError(f"detect_batch got {len(images)} images but {len(masks)} masks")
        prepared = [self.prepare(im) for im in images]
        results: list[Keypoints | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(prepared):
            key = (tuple(p.batch.shape), _is_torch(p.batch))
            groups.setdefault(key, []).append(i)
        for idx in groups.values():
            chunks = [idx] if self.backend.info.dynamic_batch else [[i] for i in idx]
            for chunk in chunks:
                parts = [prepared[i].batch for i in chunk]
                if _is_torch(parts[0]):
                    import torch

                    batch = torch.cat(parts, dim=0)
                else:
                    batch = np.concatenate(parts, axis=0)
                out = self.backend.run(batch)
                whole = Prepared(batch, prepared[chunk[0]].resize)
                for j, i in enumerate(chunk):
                    results[i] = self.decode(
                        out, Prepared(whole.batch, prepared[i].resize), j, mask=masks[i], **overrides
                    )
        return results  # type: ignore[return-value]

    def detect_torch(self, image: Any, mask: np.ndarray | None = None, **overrides: Any) -> Keypoints:
        """:meth:`detect` with the frame moved to the model's torch device first: results are
        torch tensors there (torch ``.pt`` and TensorRT ``.engine`` models)."""
        dev = self.backend.info.torch_device
        if dev is None:
            raise ConfigError(
                f"detect_torch needs a model that runs on torch tensors (.pt or .engine); {self.info.name} runs numpy "
                "arrays: use detect() (it also accepts torch tensors and returns them)"
            )
        if not _is_torch(image):
            from .device import to_device_image

            image = to_device_image(image, dev)
        return self.detect(image, mask=mask, **overrides)

    def as_feature2d(self, descriptor: Any = None) -> "Feature2DAdapter":
        """An object with OpenCV's Feature2D methods: ``detect``, and with a ``descriptor``
        (e.g. ``cv2.ORB_create()``) ``compute`` and ``detectAndCompute``, so it drops into
        code written for ``cv2.ORB``."""
        return Feature2DAdapter(self, descriptor)

    def heatmap(self, image: np.ndarray) -> np.ndarray:
        """Keypoint probability map float32 [H, W] at the working size (not the image's)."""
        if self.backend.info.postprocess_in_graph:
            raise ConfigError(
                f"{self.backend.info.model_path} outputs keypoints, not a heatmap; use a model "
                "exported without --with-postprocess"
            )
        out = self.infer(self.prepare(image)).numpy()
        return sigmoid(out.heatmap[0, 0])

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "KeypointDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoModel:
    """Stand-in BackendInfo for validating settings before a model is loaded."""

    postprocess_in_graph = False
    defaults: dict[str, float] = {}
    decode = None
    model_path = "(not loaded)"


_NO_MODEL: Any = _NoModel()


def _with_preset(preset: str | None, requested: dict[str, Any]) -> dict[str, Any]:
    if preset is None:
        return dict(requested)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from: {', '.join(PRESETS)}")
    base = dict(PRESETS[preset])
    if "distribution" in requested and requested["distribution"] != "grid" and "grid" not in requested:
        base.pop("grid", None)
    return {**base, **requested}


class Feature2DAdapter:
    """OpenCV-style front (duck-typed ``cv2.Feature2D``): ``detect``, ``compute`` and
    ``detectAndCompute``; descriptors come from ``descriptor`` (an OpenCV extractor such as
    ``cv2.ORB_create()``) on the gray image, at kpnet's keypoints."""

    def __init__(self, detector: KeypointDetector, descriptor: Any = None) -> None:
        if descriptor is not None and not hasattr(descriptor, "compute"):
            raise ConfigError(
                f"descriptor must be an OpenCV extractor with compute() (e.g. cv2.ORB_create()), got {type(descriptor).__name__}"
            )
        self.detector = detector
        self.descriptor = descriptor

    def detect(self, image: np.ndarray, mask: np.ndarray | None = None) -> list:
        """-> list of cv2.KeyPoint (size fixed in image pixels, response = probability)."""
        return self.detector.detect(image, mask=mask).to_cv()

    def _need_descriptor(self, what: str) -> Any:
        if self.descriptor is None:
            raise ConfigError(f"{what} needs a descriptor extractor: det.as_feature2d(descriptor=cv2.ORB_create())")
        return self.descriptor

    def compute(self, image: np.ndarray, keypoints: list, descriptors: Any = None) -> tuple[list, Any]:
        """(keypoints, descriptors) from the descriptor extractor (it may drop keypoints near
        the border, as OpenCV's do)."""

        from .preprocess import to_gray, validate_image

        gray = to_gray(validate_image(image))
        if gray.dtype != np.uint8:
            gray = np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return (
            self._need_descriptor("compute").compute(gray, list(keypoints), descriptors)
            if descriptors is not None
            else self.descriptor.compute(gray, list(keypoints))
        )

    def detectAndCompute(
        self, image: np.ndarray, mask: np.ndarray | None, descriptors: Any = None, useProvidedKeypoints: bool = False
    ) -> tuple[list, Any]:  # noqa: N802, N803 - OpenCV naming
        """As ``cv2.Feature2D.detectAndCompute``: kpnet keypoints, then the extractor's descriptors."""
        self._need_descriptor("detectAndCompute")
        return self.compute(image, self.detect(image, mask), descriptors)

    def getDefaultName(self) -> str:  # noqa: N802 - OpenCV naming
        return "kpnet.KeypointDetector"

    def descriptorSize(self) -> int:  # noqa: N802 - OpenCV naming
        return int(self._need_descriptor("descriptorSize").descriptorSize())

    def descriptorType(self) -> int:  # noqa: N802 - OpenCV naming
        return int(self._need_descriptor("descriptorType").descriptorType())

    def defaultNorm(self) -> int:  # noqa: N802 - OpenCV naming
        return int(self._need_descriptor("defaultNorm").defaultNorm())
