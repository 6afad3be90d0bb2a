"""Exact, fast bicubic upsampling by an integer factor.

``F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)`` maps output pixel
``o = s*i + r`` to the source coordinate ``i + (r + 0.5)/s - 0.5`` and blends four clamped
neighbours with Keys' cubic kernel (A = -0.75). For an integer ``s`` the four weights depend
only on the phase ``r``, so the whole operation is a fixed convolution: replicate padding
(which is exactly the index clamping), one small convolution producing the ``s*s`` phases as
channels, and a depth-to-space (pixel shuffle). The result equals ``F.interpolate`` to float
rounding, and exports to ONNX/TensorRT as Pad + Conv + DepthToSpace, which runs far faster
than a cubic ``Resize`` node.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: PyTorch's bicubic coefficient (Keys' kernel), the same as OpenCV's INTER_CUBIC.
CUBIC_A = -0.75


def _cubic_weights(t: float, a: float = CUBIC_A) -> list[float]:
    """Keys cubic weights of taps floor-1, floor, floor+1, floor+2 for fractional part t."""

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_phase_kernel(scale: int) -> tuple[torch.Tensor, int, int]:
    """1-D weights of every output phase of an integer-factor bicubic upsampling.

    Returns:
        weights: float64 [scale, K], row r holds the weights of output phase r over a window
            of K input pixels starting ``pad_lo`` pixels before the current one.
        pad_lo, pad_hi: replicate padding needed before and after the input.
    """
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    taps = []
    for r in range(scale):
        x = (r + 0.5) / scale - 0.5
        f = math.floor(x)
        taps.append((f - 1, _cubic_weights(x - f)))
    lo = min(t[0] for t in taps)
    hi = max(t[0] + 3 for t in taps)
    k = hi - lo + 1
    w = torch.zeros(scale, k, dtype=torch.float64)
    for r, (start, ws) in enumerate(taps):
        for j, v in enumerate(ws):
            w[r, start - lo + j] += v
    return w, -lo, hi


class BicubicUpsample(nn.Module):
    """Bicubic upsampling by an integer factor, identical to ``F.interpolate(mode="bicubic",
    align_corners=False)``. Input [B, C, H, W] -> output [B, C, s*H, s*W]."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        w1d, self.pad_lo, self.pad_hi = bicubic_phase_kernel(scale)
        self.scale = scale
        # 2-D kernel of phase (ry, rx) is the outer product; channel ry*s + rx feeds pixel_shuffle.
        w2d = torch.einsum("yk,xl->yxkl", w1d, w1d).reshape(scale * scale, 1, w1d.shape[1], w1d.shape[1])
        self.register_buffer("weight", w2d.float(), persistent=False)

    def phases(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B*C, s*s, H, W]: the output phases before depth-to-space.

        Anything else laid out per output cell (the sub-cell head) can be added here, so that
        one depth-to-space serves both."""
        b, c, h, w = x.shape
        y = x.reshape(b * c, 1, h, w)
        p = (self.pad_lo, self.pad_hi, self.pad_lo, self.pad_hi)
        y = F.pad(y, p, mode="replicate")
        return F.conv2d(y, self.weight.to(y.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = F.pixel_shuffle(self.phases(x), self.scale)
        return y.reshape(b, c, h * self.scale, w * self.scale)
