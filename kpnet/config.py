"""Typed, validated configuration of the student network and of keypoint decoding.

Importing this module needs no optional dependency.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

BACKBONES = ("small", "large")
#: How the network normalises its grayscale input: ``image`` standardises each image by its own
#: mean and standard deviation (invariant to global brightness and contrast), ``imagenet`` uses
#: fixed ImageNet statistics (the first shipped checkpoints).
INPUT_NORMS = ("image", "imagenet")
DISTRIBUTIONS = ("topk", "grid", "anms")
#: TensorRT's TopK layer caps K at 3840; the in-graph post-processing inherits that limit.
TENSORRT_MAX_TOPK = 3840
#: Input height and width must be multiples of the backbone's total stride (times
#: ``ModelConfig.downsample``).
STRIDE = 32
#: Factors by which the network may average-pool its input before the backbone.
DOWNSAMPLES = (1, 2)


def round_to_multiple(v: int, m: int) -> int:
    """The multiple of ``m`` nearest to ``v`` (at least ``m``): the size an error suggests."""
    return max(m, round(v / m) * m)


def _check_hw(name: str, hw: tuple[int, int], stride: int = STRIDE) -> tuple[int, int]:
    if not isinstance(hw, (tuple, list)) or len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
        raise ConfigError(f"{name} must be (height, width) as two positive ints, got {hw!r}")
    h, w = hw
    if h % stride or w % stride:
        raise ConfigError(
            f"{name} must have height and width that are multiples of {stride}, got {h}x{w}; "
            f"e.g. use {round_to_multiple(h, stride)}x{round_to_multiple(w, stride)}"
        )
    return int(h), int(w)


@dataclass(frozen=True)
class ModelConfig:
    """Student network configuration.

    Attributes:
        backbone: MobileNetV3 variant, one of ``BACKBONES``.
        fpn_width: channels of every FPN level.
        input_size: nominal (height, width) the model runs at; multiples of ``stride``. The
            runtime resizes images to this size. Default VGA, 480x640.
        input_norm: one of ``INPUT_NORMS``. Checkpoints saved before this field existed load
            as ``imagenet``.
        downsample: one of ``DOWNSAMPLES``. With 2 the network average-pools its input 2x2
            before the backbone and upsamples the heatmap x8 instead of x4: the output stays at
            input resolution, for about a third of the compute (the fast variant).
        cell_head: add a residual sub-cell head: a 1x1 convolution on the finest FPN level
            predicts one logit per output pixel of each stride-s cell (s = 4 x downsample:
            s*s channels, depth-to-space), added to the bicubic upsampled map. Bicubic
            interpolation alone cannot place two peaks inside one cell; this head can. It is
            zero-initialised, so a converted checkpoint starts exactly at its bicubic output.
    """

    backbone: str = "small"
    fpn_width: int = 64
    input_size: tuple[int, int] = (480, 640)
    input_norm: str = "image"
    downsample: int = 1
    cell_head: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; choose from: {', '.join(BACKBONES)}")
        if not isinstance(self.fpn_width, int) or isinstance(self.fpn_width, bool) or self.fpn_width < 1:
            raise ConfigError(f"fpn_width must be a positive int, got {self.fpn_width!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"unknown input_norm {self.input_norm!r}; choose from: {', '.join(INPUT_NORMS)}")
        if self.downsample not in DOWNSAMPLES or isinstance(self.downsample, bool):
            raise ConfigError(f"downsample must be one of {', '.join(map(str, DOWNSAMPLES))}, got {self.downsample!r}")
        if not isinstance(self.cell_head, bool):
            raise ConfigError(f"cell_head must be a bool, got {self.cell_head!r}")
        object.__setattr__(self, "input_size", _check_hw("input_size", tuple(self.input_size), self.stride))

    @property
    def stride(self) -> int:
        """Input height and width must be multiples of this (32 x downsample)."""
        return STRIDE * self.downsample

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig fields {unknown}; valid fields: {', '.join(sorted(known))}")
        d = dict(d)
        d.setdefault("input_norm", "imagenet")  # written before the field existed
        d.setdefault("downsample", 1)
        d.setdefault("cell_head", False)
        if "input_size" in d:
            d["input_size"] = tuple(d["input_size"])
        return cls(**d)


#: Grid of the "grid" distribution when none is given: 12 rows x 16 columns (ORB-SLAM-like).
DEFAULT_GRID = (12, 16)


@dataclass(frozen=True)
class DecodeConfig:
    """Heatmap-to-keypoints decoding settings.

    :func:`kpnet.postprocess.decode` applies them to one heatmap, in heatmap pixels.
    :class:`kpnet.KeypointDetector` takes ``nms_radius``, ``border`` and ``min_distance`` in
    *original image* pixels and converts them to the heatmap for you
    (:func:`kpnet.decoding.to_model_units`).

    Attributes:
        max_keypoints: top-k budget K (>= 1).
        nms_radius: non-maximum suppression radius r; a kept point is the maximum of its
            (2r+1)x(2r+1) window. 0 disables NMS.
        threshold: keep points whose probability is strictly greater than this, in [0, 1).
        border: drop points closer than this many pixels to the edge.
        subpixel: refine each point with a 3x3 quadratic fit (offset at most 0.5 px per axis).
        distribution: how the budget is spread over the image: "topk" (highest scores),
            "grid" (per-cell quotas on a ``grid`` of rows x cols, slack of sparse cells
            redistributed, as ORB-SLAM's bucketing) or "anms" (adaptive non-maximal
            suppression: prefer points that are the maximum of a larger neighbourhood).
        grid: (rows, cols) of the grid distribution; only with ``distribution="grid"``
            (default there: 12x16). Passing it with another distribution raises.
        min_distance: minimum distance between returned keypoints in original image pixels,
            enforced greedily by score like ``cv2.goodFeaturesToTrack``'s minDistance
            (:func:`kpnet.selection.greedy_suppress`); 0 = off.
        min_contrast: drop points whose local contrast is at most this many grey levels
            (0-255 scale): the standard deviation of the image averaged over 4x4-pixel cells,
            in the 3x3 cells around the point. Sensor noise averages out over a cell; real
            structure does not. 0 = off. Models calibrate a default (``export.onnx``).
    """

    max_keypoints: int = 1024
    nms_radius: int = 4
    threshold: float = 0.0
    border: int = 4
    subpixel: bool = False
    distribution: str = "topk"
    grid: tuple[int, int] | None = None
    min_distance: float = 0.0
    min_contrast: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_keypoints", "nms_radius", "border"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{name} must be an int, got {type(v).__name__} {v!r}")
        if self.max_keypoints < 1:
            raise ConfigError(f"max_keypoints must be >= 1, got {self.max_keypoints}")
        if self.nms_radius < 0:
            raise ConfigError(f"nms_radius must be >= 0, got {self.nms_radius}")
        if self.border < 0:
            raise ConfigError(f"border must be >= 0, got {self.border}")
        if not _is_number(self.threshold) or not 0.0 <= float(self.threshold) < 1.0:
            raise ConfigError(f"threshold must be a probability in [0, 1), got {self.threshold!r}")
        if not isinstance(self.subpixel, bool):
            raise ConfigError(f"subpixel must be a bool, got {self.subpixel!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"unknown distribution {self.distribution!r}; choose from: {', '.join(DISTRIBUTIONS)}")
        if self.grid is None:
            if self.distribution == "grid":
                object.__setattr__(self, "grid", DEFAULT_GRID)
        else:
            g = tuple(self.grid) if isinstance(self.grid, (tuple, list)) else ()
            if len(g) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in g):
                raise ConfigError(f"grid must be (rows, cols) with two positive ints, got {self.grid!r}")
            if self.distribution != "grid":
                raise ConfigError(
                    f"grid={self.grid!r} only applies to distribution='grid', but distribution is "
                    f"{self.distribution!r}; pass distribution='grid' (KeypointDetector(grid=...) implies it)"
                )
            object.__setattr__(self, "grid", (int(g[0]), int(g[1])))
        for name in ("min_distance", "min_contrast"):
            v = getattr(self, name)
            if not _is_number(v) or v < 0:
                unit = "pixels" if name == "min_distance" else "grey levels"
                raise ConfigError(f"{name} must be a number >= 0 ({unit}), got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.grid is not None:
            d["grid"] = list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecodeConfig":
        """Inverse of :meth:`to_dict`; also reads dicts written before ``grid`` was optional."""
        d = dict(d)
        if d.get("distribution", "topk") != "grid":
            d.pop("grid", None)
        elif d.get("grid") is not None:
            d["grid"] = tuple(d["grid"])
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown DecodeConfig fields {unknown}; valid fields: {', '.join(sorted(known))}")
        return cls(**d)

    def is_plain_topk_or_gated(self) -> bool:
        """Plain NMS + threshold + top-k, optionally with the contrast gate (what the torch
        decoder runs on the device)."""
        return self.distribution == "topk" and self.min_distance == 0 and not self.subpixel

    @property
    def is_plain_topk(self) -> bool:
        """True when decoding is plain NMS + threshold + top-k (what in-graph decoding implements)."""
        return self.distribution == "topk" and self.min_distance == 0 and not self.subpixel and self.min_contrast == 0


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
