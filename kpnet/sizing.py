"""Sizes: the one size-string parser (HxW everywhere) and the detector's working size.

Every command line takes sizes as ``HxW`` (height first, like numpy shapes and ``ModelConfig``).
:func:`parse_hw` is the only parser; it refuses the other order where it can tell (a common
camera resolution written WIDTHxHEIGHT) and says how to write it.

:class:`WorkingSize` is the policy that picks the size a frame is resized to before the
network: by default the frame's own aspect at the model's pixel budget, rounded to the
stride; or a long side, a pixel budget, or one fixed size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import ConfigError, InvalidImageError

#: Landscape camera resolutions as WIDTHxHEIGHT; written in this order they are almost surely
#: not meant as HxW (a portrait frame), so :func:`parse_hw` asks for the other order.
COMMON_WH = frozenset(
    {
        (320, 240),
        (640, 480),
        (752, 480),
        (800, 600),
        (1024, 768),
        (1241, 376),
        (1226, 370),
        (1280, 720),
        (1280, 800),
        (1280, 960),
        (1280, 1024),
        (1440, 1080),
        (1600, 1200),
        (1920, 1080),
        (1920, 1200),
        (2048, 1536),
        (2560, 1440),
        (3840, 2160),
        (160, 120),
        (176, 144),
        (352, 288),
        (848, 480),
        (960, 540),
        (1024, 576),
        (1366, 768),
        (1392, 512),
        (1600, 900),
    }
)
_HW = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_LABELLED = re.compile(r"^\s*h\s*=?\s*(\d+)\s*[,x ]\s*w\s*=?\s*(\d+)\s*$", re.IGNORECASE)


def parse_hw(text: object, name: str = "size") -> tuple[int, int]:
    """``"480x640"`` -> ``(480, 640)``: height x width, two positive ints.

    A well-known landscape resolution written width first (``"640x480"``) raises, naming the
    HxW spelling; a portrait size of that shape can be written ``"h640,w480"``.
    """
    if isinstance(text, (tuple, list)) and len(text) == 2 and all(isinstance(v, int) for v in text):
        h, w = int(text[0]), int(text[1])
    else:
        s = str(text)
        m = _LABELLED.match(s)
        if m:
            h, w = int(m.group(1)), int(m.group(2))
        else:
            m = _HW.match(s)
            if not m:
                raise ConfigError(f"{name} must be HEIGHTxWIDTH, e.g. 480x640, got {text!r}")
            h, w = int(m.group(1)), int(m.group(2))
            if (h, w) in COMMON_WH:
                raise ConfigError(
                    f"{name} {text!r} looks like WIDTHxHEIGHT; kpnet sizes are HEIGHTxWIDTH: use {w}x{h} "
                    f"(or write h{h},w{w} if you really mean {h} rows and {w} columns)"
                )
    if h < 1 or w < 1:
        raise ConfigError(f"{name} must have a positive height and width, got {h}x{w}")
    return h, w


def format_hw(hw: tuple[int, int]) -> str:
    """(480, 640) -> "480x640"."""
    return f"{int(hw[0])}x{int(hw[1])}"


def round_to_stride(v: float, stride: int) -> int:
    """The multiple of ``stride`` nearest to ``v``, at least ``stride``."""
    return max(stride, int(math.floor(v / stride + 0.5)) * stride)


@dataclass(frozen=True)
class WorkingSize:
    """How a frame of any size maps to the network's input size (multiples of the stride).

    Exactly one of:
        fixed: (H, W): every frame is resized to this size (aspect not kept); what a model
            with a fixed input shape or a TensorRT engine profile uses.
        long_side: the frame's aspect with its longer side scaled to about this many pixels.
        pixels: the frame's aspect with about this many pixels (H x W).
    None of them: the frame's aspect at the model's own pixel budget (its nominal
    ``input_size``, 480x640 = 307,200 pixels for kpnet-small), never enlarged beyond the
    frame itself. Each side is then rounded to the nearest multiple of the stride, so a
    640x480 frame runs at 480x640 exactly.
    """

    fixed: tuple[int, int] | None = None
    long_side: int | None = None
    pixels: int | None = None
    upscale: bool = False

    def __post_init__(self) -> None:
        given = [k for k in ("fixed", "long_side", "pixels") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(f"WorkingSize takes one of fixed, long_side or pixels, got {', '.join(given)}")
        if self.fixed is not None:
            object.__setattr__(self, "fixed", parse_hw(self.fixed, "fixed working size"))
        for k in ("long_side", "pixels"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"working size {k} must be a positive int, got {v!r}")

    @classmethod
    def coerce(cls, size: object) -> "WorkingSize":
        """None / "native" -> native; (H, W) or "HxW" -> fixed; a WorkingSize as is."""
        if isinstance(size, WorkingSize):
            return size
        if size is None or size == "native":
            return cls()
        if isinstance(size, str) or isinstance(size, (tuple, list)):
            return cls(fixed=parse_hw(size, "size"))
        raise ConfigError(
            f"size must be None or 'native' (the frame's aspect), (H, W), 'HxW' or a WorkingSize, got {size!r}"
        )

    @property
    def is_fixed(self) -> bool:
        return self.fixed is not None

    def describe(self) -> str:
        if self.fixed is not None:
            return f"fixed {format_hw(self.fixed)}"
        if self.long_side is not None:
            return f"native aspect, long side {self.long_side}"
        if self.pixels is not None:
            return f"native aspect, {self.pixels} pixels"
        return "native aspect at the model's pixel budget"

    def resolve(self, frame_hw: tuple[int, int], stride: int, nominal_hw: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) to run a frame of ``frame_hw`` at: multiples of ``stride``."""
        h0, w0 = frame_hw
        if self.fixed is not None:
            h, w = self.fixed
            if h % stride or w % stride:
                raise ConfigError(
                    f"fixed working size {h}x{w} must be multiples of the model's stride {stride}; e.g. "
                    f"{round_to_stride(h, stride)}x{round_to_stride(w, stride)}"
                )
            return h, w
        if self.long_side is not None:
            s = self.long_side / max(h0, w0)
        else:
            budget = self.pixels if self.pixels is not None else nominal_hw[0] * nominal_hw[1]
            s = math.sqrt(budget / (h0 * w0))
        if not self.upscale and self.long_side is None:
            s = min(s, 1.0)
        return round_to_stride(h0 * s, stride), round_to_stride(w0 * s, stride)


def check_frame_size(frame_hw: tuple[int, int], stride: int) -> None:
    """Raise InvalidImageError when a frame is smaller than one network cell (the stride)."""
    h, w = frame_hw
    if h < stride or w < stride:
        raise InvalidImageError(
            f"image is {h}x{w} (HxW), smaller than the network's stride of {stride} pixels: it has no "
            f"room for a single keypoint cell. Pass an image of at least {stride}x{stride}"
        )
