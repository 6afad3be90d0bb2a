"""Configuration of the distillation training phases (``python -m training.phase1|phase2``).

One typed dataclass, :class:`TrainConfig`, validated at construction, serves both phases.
Precedence: dataclass defaults < the checkpoint's saved config (with ``--resume``) < YAML
file (``--config``) < command-line flags; so ``--resume CKPT`` alone continues the run as it
was configured. The resolved
config is written to ``OUT/config.yaml`` and into every checkpoint.

Every field is a command-line flag: ``crop`` is ``--crop``, ``huber_delta`` is
``--huber-delta``, booleans are ``--photometric/--no-photometric``; sizes are ``HxW``
(height x width, like :class:`kpnet.ModelConfig.input_size`; parsed by
:func:`kpnet.sizing.parse_hw`, which refuses a camera resolution written width first), pairs
of floats are ``a,b``.
Importing this module needs no optional dependency (pyyaml is imported when a YAML file is
read or written).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from kpnet.config import BACKBONES, DOWNSAMPLES, INPUT_NORMS, round_to_multiple
from kpnet.io import atomic_write_text
from kpnet.sizing import parse_hw

from ._deps import require

TARGETS: tuple[str, ...] = ("sparse", "blob", "dense")
PAD_FILLS: tuple[str, ...] = ("zero", "mean")
PHASE1_LOSSES: tuple[str, ...] = ("focal", "bce")
PHASE2_LOSSES: tuple[str, ...] = ("huber", "kl")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: ``dev_eval`` value meaning "``../shared/data/dev_eval`` next to the repository, if present".
AUTO = "auto"
STRIDE = 32  # the student's total stride; crops must be multiples of it


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors argparse
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def check_multiple(name: str, hw: tuple[int, int], stride: int, why: str = "") -> None:
    """Raise naming the flag and a valid size when ``hw`` is not a multiple of ``stride``."""
    h, w = hw
    if h % stride or w % stride:
        raise ValueError(
            f"{name} {h}x{w} must be multiples of {stride}{why}; e.g. --{name.replace('_', '-')} "
            f"{round_to_multiple(h, stride)}x{round_to_multiple(w, stride)}"
        )


def hw_arg(text: str) -> tuple[int, int]:
    """The argparse ``type`` of HxW flags: :func:`kpnet.sizing.parse_hw`, with its message
    shown by argparse (which hides a ValueError's)."""
    try:
        return parse_hw(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_angles(text: str | Sequence[float] | None) -> tuple[float, ...]:
    """``'0,90,180'`` or ``[0, 90, 180]`` -> ``(0.0, 90.0, 180.0)``; ``''`` or None -> ``()``."""
    if text is None:
        return ()
    vals = [v for v in text.replace(" ", "").split(",") if v != ""] if isinstance(text, str) else list(text)
    try:
        out = tuple(float(v) for v in vals if not isinstance(v, bool))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"expected comma-separated angles in degrees, e.g. 0,90,180; got {text!r}") from exc
    if len(out) != len(vals) or not all(math.isfinite(a) for a in out):
        raise ValueError(f"expected comma-separated angles in degrees, e.g. 0,90,180; got {text!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"val_rotation_deg lists an angle twice: {text!r}; list each angle once")
    return out


def parse_pair(text: str | Sequence[float]) -> tuple[float, float]:
    """``'0.8,1.25'`` or ``[0.8, 1.25]`` -> ``(0.8, 1.25)``."""
    vals = text.split(",") if isinstance(text, str) else list(text)
    try:
        a, b = (float(v) for v in vals)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"expected two numbers 'LOW,HIGH', e.g. 0.8,1.25; got {text!r}") from exc
    return a, b


@dataclass(frozen=True)
class TrainConfig:
    """All settings of one training run (phase 1 or phase 2). See the field help texts.

    Units: sizes are (height, width) pixels; ``lr`` per optimiser step; ``warmup_steps``,
    ``ckpt_every``, ``log_every``, ``overlay_every``, ``max_steps`` in optimiser steps;
    ``batch_size`` per process (the global batch is ``batch_size * world_size``).
    """

    phase: int = _f(1, "training phase (set by the entry point: 1 keypointness, 2 homography consistency)", cli=False)
    # data
    cache: str = _f("", "label cache directory (python -m training.labels); required")
    expect_cache: Optional[str] = _f(
        None, "YAML/JSON CacheConfig the cache must match (every differing field is reported)"
    )
    allow_incomplete_cache: bool = _f(False, "train on the finished entries of a cache that is still being built")
    out: str = _f("runs/phase1", "output directory: config.yaml, log.csv, last.pt, best.pt, step_*.pt, overlays/")
    crop: tuple[int, int] = _f(
        (224, 320), "training crop HxW, multiples of 32 (the cache's images are randomly scaled, rotated and cropped)"
    )
    eval_size: tuple[int, int] = _f(
        (480, 640), "HxW the exported model runs at (stored as ModelConfig.input_size) and dev-eval resolution"
    )
    val_fraction: float = _f(
        0.05, "fraction of cache images held out for validation (split by hashing the source path)"
    )
    val_max_images: int = _f(200, "at most this many held-out images are evaluated")
    val_max_keypoints: int = _f(300, "K of the top-k decoding used for validation repeatability")
    val_rotation_deg: tuple[float, ...] = _f(
        (),
        "rotated validation, comma-separated angles in degrees, e.g. 0,90,180 (empty, the default: off). Each held-out image is also paired with its copy rotated about its centre by each angle (counter-clockwise, same canvas, black corners, exact homography) and scored like the synthetic pairs (repeatability at 3 px of the top-K decoding), logged as val/rep_rotN. best.pt is then chosen by val/rep_combined, the mean of val/repeatability (the synthetic-homography pairs) and the val/rep_rotN, each weighted equally, instead of val/repeatability alone",
    )
    dev_eval: Optional[str] = _f(
        AUTO,
        "folder of SEQ/1.jpg, SEQ/2.jpg, SEQ/H_1_2 pairs evaluated at eval_size; 'auto': ../shared/data/dev_eval if present; 'none' disables",
    )
    workers: int = _f(2, "DataLoader worker processes per training process (0: load in the main process)")
    # augmentation
    scale_range: tuple[float, float] = _f(
        (0.8, 1.25), "random scale LOW,HIGH applied before cropping (log-uniform; phase 2 default 1.0,2.2)"
    )
    max_rotation_deg: float = _f(
        10.0,
        "random rotation in [-x, x] degrees (180: uniform over the full circle; phase 2 rotates each view independently, so pairs then differ by any angle up to +-180)",
    )
    perspective: float = _f(
        0.05, "random perspective: crop corners jittered by up to this fraction of the crop size (0: affine only)"
    )
    upright_prob: float = _f(
        0.0,
        "probability that a view keeps its upright orientation (no random rotation); with --max-rotation-deg 180 a small share of upright views keeps the unrotated quality (0: every view is rotated)",
    )
    pad_fill: str = _f(
        "zero",
        "value of a view's pixels from outside the image (the corners of a rotated view): zero (black) or mean (the image's mean grey level, so no artificial edge; the loss ignores them either way)",
    )
    valid_erode: int = _f(
        0,
        "shrink the valid region by this many pixels at the boundary with padding, so the losses also ignore the band where the network sees the padding edge (0: off; 4 recommended with large rotations)",
    )
    photometric: bool = _f(True, "brightness, contrast, gamma, Gaussian noise, motion blur and JPEG augmentation")
    photometric_extreme: float = _f(
        0.15,
        "probability of an extreme exposure (contrast x0.08-0.35 around a dark or bright level) on top of --photometric (0 disables)",
    )
    # targets and losses
    target: str = _f(
        "dense",
        "label type: sparse (binary mask at teacher keypoints), blob (Gaussian blobs), dense (teacher score map; needs a --dense cache)",
    )
    loss: Optional[str] = _f(
        None, "phase 1: focal|bce (default focal for sparse, else bce); phase 2: huber|kl (default huber)"
    )
    focal_alpha: float = _f(0.25, "focal loss alpha (weight of positives); negative disables the weighting")
    focal_gamma: float = _f(2.0, "focal loss gamma (focusing exponent)")
    blob_sigma: float = _f(1.5, "Gaussian blob sigma in pixels (blob targets and phase-2 consistency masks)")
    huber_delta: float = _f(0.1, "phase 2 huber: delta, in probability units")
    kl_temperature: float = _f(
        1.0, "phase 2 kl: target = softmax(mask / T) over pixels; T=1 is the loss as specified, smaller T sharpens it"
    )
    direct_weight: float = _f(
        0.0,
        "phase 2: weight of a direct per-view term against each view's own --target (phase 2 default 1.0; 0: the consistency loss alone)",
    )
    repeat_weight: float = _f(
        0.0,
        "phase 2: weight of the teacher-free repeatability term (R2D2-style): 1 - mean local cosine similarity of --repeat-patch patches of the two views' probabilities warped onto each other, plus --repeat-peaky times the peakiness term 1 - mean(local max - local mean); 0: off",
    )
    repeat_patch: int = _f(
        16,
        "phase 2 repeatability term: patch side in pixels (patches overlap by half; the peakiness window is patch + 1)",
    )
    repeat_peaky: float = _f(
        1.0, "phase 2 repeatability term: weight of the peakiness part relative to the cosine part"
    )
    subpixel_weight: float = _f(
        0.0,
        "weight of the sub-pixel localisation term: mean distance in pixels between the soft-argmax of the student's logits in a window around each teacher keypoint and the teacher's sub-pixel position (phase 1: the teacher's keypoints; phase 2: the matched keypoints of both views); 0: off",
    )
    subpixel_radius: int = _f(
        2,
        "sub-pixel term: window radius in pixels (window 2r+1 square, centred on the teacher keypoint's nearest pixel)",
    )
    subpixel_temperature: float = _f(1.0, "sub-pixel term: soft-argmax weights are softmax(logits / T) over the window")
    subpixel_max_points: int = _f(
        128, "sub-pixel term: at most this many teacher keypoints per view (highest teacher scores first)"
    )
    direct_loss: Optional[str] = _f(None, "phase 2 direct term: focal|bce (default focal for sparse, else bce)")
    # model
    backbone: Optional[str] = _f(None, "small|large (default: from --init, else small)")
    fpn_width: Optional[int] = _f(
        None, "FPN channels (default: from --init, else 32, the width docs/ablations.md recommends)"
    )
    init: Optional[str] = _f(None, "kpnet checkpoint to start from (required for phase 2)")
    init_backbone: Optional[str] = _f(None, "torchvision ImageNet MobileNetV3 weights file for the backbone")
    input_norm: Optional[str] = _f(
        None,
        "input normalisation: image (per-image mean/std, brightness and contrast invariant) or imagenet (fixed statistics); default: from --init, else image. Differing from --init's converts it: the weights are fine-tuned under the new normalisation",
    )
    downsample: Optional[int] = _f(
        None,
        "1, or 2 for the fast variant (the network average-pools its input 2x2 and upsamples its heatmap x8; --crop and --eval-size must then be multiples of 64); default: from --init, else 1. Differing from --init's converts it (same weights, fine-tuned)",
    )
    cell_head: Optional[bool] = _f(
        None,
        "the residual sub-cell head (per-pixel logits of each output cell, depth-to-space, added to the bicubic map; ModelConfig.cell_head). Phase 2 default: on (added at zero to an --init without one; --no-cell-head keeps the model as it is); phase 1 default: from --init, else off",
    )
    # optimisation
    batch_size: int = _f(16, "images (phase 1) or pairs (phase 2) per step and process")
    lr: float = _f(1e-3, "peak AdamW learning rate")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    epochs: int = _f(10, "epochs over the training split")
    max_steps: Optional[int] = _f(None, "stop after this many optimiser steps (overrides epochs)")
    warmup_steps: int = _f(200, "linear warm-up steps before the cosine decay (capped at the run length)")
    min_lr_ratio: float = _f(0.01, "final learning rate as a fraction of lr")
    grad_clip: float = _f(1.0, "clip the gradient norm to this (0 disables)")
    amp: bool = _f(True, "automatic mixed precision on CUDA (ignored on CPU)")
    device: str = _f(AUTO, "auto|cpu|cuda")
    seed: int = _f(0, "seed of initialisation, data order, augmentation and validation homographies")
    # logging and checkpoints
    ckpt_every: int = _f(1000, "write step_XXXXXXX.pt and last.pt every N steps")
    keep_ckpts: int = _f(3, "keep only the newest N step_*.pt files")
    log_every: int = _f(10, "log training scalars every N steps")
    overlay_every: int = _f(500, "write a predicted-heatmap overlay every N steps (0 disables)")
    progress: bool = _f(True, "show tqdm progress bars")

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        self._check_types()
        if self.phase not in (1, 2):
            raise ValueError(f"unknown phase {self.phase!r}; choose from: 1, 2")
        if not isinstance(self.cache, str) or not self.cache:
            raise ValueError("no label cache given; pass --cache CACHE_DIR (built with python -m training.labels)")
        for name in ("crop", "eval_size"):
            h, w = parse_hw(getattr(self, name), name)
            if h <= 0 or w <= 0 or h % STRIDE or w % STRIDE:
                raise ValueError(f"{name} must be HxW with positive multiples of {STRIDE}; got {h}x{w}")
            set_(name, (h, w))
        lo, hi = parse_pair(self.scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < LOW <= HIGH; got {lo},{hi}")
        set_("scale_range", (lo, hi))
        if self.pad_fill not in PAD_FILLS:
            raise ValueError(f"unknown pad_fill {self.pad_fill!r}; choose from: {', '.join(PAD_FILLS)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; choose from: {', '.join(TARGETS)}")
        default_direct = "focal" if self.target == "sparse" else "bce"
        losses = PHASE1_LOSSES if self.phase == 1 else PHASE2_LOSSES
        loss = self.loss if self.loss is not None else (default_direct if self.phase == 1 else "huber")
        if loss not in losses:
            raise ValueError(f"unknown loss {loss!r} for phase {self.phase}; choose from: {', '.join(losses)}")
        set_("loss", loss)
        direct = self.direct_loss if self.direct_loss is not None else default_direct
        if direct not in PHASE1_LOSSES:
            raise ValueError(f"unknown direct_loss {direct!r}; choose from: {', '.join(PHASE1_LOSSES)}")
        set_("direct_loss", direct)
        if self.backbone is not None and self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose from: {', '.join(BACKBONES)}")
        if self.input_norm is not None and self.input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {self.input_norm!r}; choose from: {', '.join(INPUT_NORMS)}")
        if self.cell_head is not None and not isinstance(self.cell_head, bool):
            raise ValueError(f"cell_head must be true or false; got {self.cell_head!r}")
        if self.downsample is not None:
            if self.downsample not in DOWNSAMPLES:
                raise ValueError(
                    f"downsample must be one of {', '.join(map(str, DOWNSAMPLES))}; got {self.downsample!r}"
                )
            for name in ("crop", "eval_size"):
                check_multiple(
                    name, getattr(self, name), STRIDE * self.downsample, f" with downsample {self.downsample}"
                )
        set_("val_rotation_deg", parse_angles(self.val_rotation_deg))
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose from: {', '.join(DEVICES)}")
        positive_int = [
            "batch_size",
            "epochs",
            "ckpt_every",
            "keep_ckpts",
            "log_every",
            "val_max_images",
            "val_max_keypoints",
            "subpixel_radius",
            "subpixel_max_points",
        ]
        for name in positive_int:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        for name in ("workers", "warmup_steps", "overlay_every", "valid_erode"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an int >= 0; got {v!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"max_steps must be a positive int; got {self.max_steps!r}")
        if self.fpn_width is not None and (not isinstance(self.fpn_width, int) or self.fpn_width < 1):
            raise ValueError(f"fpn_width must be a positive int; got {self.fpn_width!r}")
        checks = [
            (0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (self.focal_gamma >= 0, "focal_gamma must be >= 0"),
            (self.focal_alpha <= 1, "focal_alpha must be <= 1 (negative disables it)"),
            (self.blob_sigma > 0, "blob_sigma must be > 0"),
            (self.huber_delta > 0, "huber_delta must be > 0"),
            (self.kl_temperature > 0, "kl_temperature must be > 0"),
            (self.direct_weight >= 0, "direct_weight must be >= 0"),
            (self.repeat_weight >= 0, "repeat_weight must be >= 0"),
            (self.repeat_peaky >= 0, "repeat_peaky must be >= 0"),
            (isinstance(self.repeat_patch, int) and self.repeat_patch >= 4, "repeat_patch must be an int >= 4"),
            (self.subpixel_weight >= 0, "subpixel_weight must be >= 0"),
            (self.subpixel_temperature > 0, "subpixel_temperature must be > 0"),
            (0 <= self.max_rotation_deg <= 180, "max_rotation_deg must be in [0, 180]"),
            (0 <= self.perspective < 0.5, "perspective must be in [0, 0.5)"),
            (0 <= self.photometric_extreme <= 1, "photometric_extreme must be a probability in [0, 1]"),
            (0 <= self.upright_prob <= 1, "upright_prob must be a probability in [0, 1]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid training config: {msg}")

    def _check_types(self) -> None:
        """Coerce numbers given as strings (YAML reads ``1e-3`` as a string) and reject wrong types."""
        ints = {"max_steps", "fpn_width", "downsample"}
        for f in fields(self):
            v = getattr(self, f.name)
            kind = (
                bool
                if isinstance(f.default, bool)
                else int
                if (isinstance(f.default, int) or f.name in ints)
                else float
                if isinstance(f.default, float)
                else None
            )
            if v is None or kind is None:
                continue
            if kind is bool:
                if not isinstance(v, bool):
                    raise ValueError(f"{f.name} must be true or false; got {v!r}")
            elif kind is int:
                if (
                    isinstance(v, bool)
                    or not isinstance(v, (int, str))
                    or (isinstance(v, str) and not v.strip().lstrip("-").isdigit())
                ):
                    raise ValueError(f"{f.name} must be an int; got {v!r}")
                object.__setattr__(self, f.name, int(v))
            else:
                try:
                    if isinstance(v, bool):
                        raise TypeError
                    object.__setattr__(self, f.name, float(v))
                except (TypeError, ValueError):
                    raise ValueError(f"{f.name} must be a number; got {v!r}") from None

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-serialisable dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build from a (partial) dict, e.g. a YAML file.

        Raises:
            ValueError: on unknown keys (listing the valid ones) or invalid values.
        """
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in valid]
        if unknown:
            raise ValueError(f"unknown training config key {unknown[0]!r}; choose from: {', '.join(valid)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or ``.json``) training config into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text("utf-8")
    data = json.loads(text) if path.suffix == ".json" else require("yaml").safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def write_config_file(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    atomic_write_text(path, require("yaml").safe_dump(config.to_dict(), sort_keys=False))


# ---------------------------------------------------------------------- command line
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`TrainConfig` field (defaults suppressed: unset flags are absent)."""
    parser.add_argument("--config", help="YAML file with TrainConfig fields; flags override it")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=AUTO,
        default=None,
        metavar="CKPT",
        help="continue a run exactly (model, optimiser, scheduler, step, RNG) from CKPT, or from OUT/last.pt without a value",
    )
    for f in fields(TrainConfig):
        if not f.metadata.get("cli", True):
            continue
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f.metadata["help"], "dest": f.name}
        default = f.default
        if isinstance(default, bool) or f.name == "cell_head":
            kw["action"] = argparse.BooleanOptionalAction
        elif f.name in ("crop", "eval_size"):
            kw.update(type=hw_arg, metavar="HxW")
        elif f.name == "scale_range":
            kw.update(type=parse_pair, metavar="LOW,HIGH")
        elif f.name == "val_rotation_deg":
            kw.update(type=parse_angles, metavar="LIST")
        elif f.name in ("max_steps", "fpn_width", "downsample") or isinstance(default, int):
            kw["type"] = int
        elif isinstance(default, float):
            kw["type"] = float
        else:
            kw["type"] = str
        parser.add_argument(_flag(f.name), **kw)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given explicitly on the command line."""
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


PHASE2_DEFAULTS: dict[str, Any] = {"direct_weight": 1.0, "scale_range": (1.0, 2.2), "cell_head": True}


def resolve_config(
    phase: int,
    overrides: Mapping[str, Any],
    config_file: Optional[str] = None,
    base: Optional[Mapping[str, Any]] = None,
) -> TrainConfig:
    """Merge ``base`` (a resumed checkpoint's config) or ``config_file`` with ``overrides``."""
    data: dict[str, Any] = {"out": f"runs/phase{phase}"}
    if phase == 2:
        # The recommended recipe (docs/ablations.md): the consistency loss plus the direct
        # term on the view's own target, and scale augmentation towards the 640x480 scale.
        # --direct-weight 0 gives the specified consistency loss alone. The sub-cell head is
        # added (zero-initialised) unless --no-cell-head.
        data.update(PHASE2_DEFAULTS)
    if base is not None:
        data["cell_head"] = None  # a resumed run keeps its model (runs from before the field had none)
        data.update(base)
    if config_file:
        data.update(read_config_file(config_file))
    data.update(overrides)
    if data.get("phase", phase) != phase:
        raise ValueError(
            f"this config is for phase {data['phase']}; run python -m training.phase{data['phase']} instead"
        )
    data["phase"] = phase
    return TrainConfig.from_dict(data)
