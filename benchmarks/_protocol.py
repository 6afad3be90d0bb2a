"""The one detection protocol every benchmark applies to every detector.

A detector (a kpnet model, an OpenCV baseline from :mod:`kpnet.baselines`, an ALIKED teacher)
returns a generous RAW candidate pool, sorted by score. The protocol then, identically for
all of them:

1. drops candidates outside an optional valid region (the invariance sweep's common area);
2. greedy suppression by score with ``radius`` pixels at the evaluation size
   (:func:`kpnet.selection.greedy_suppress`, as ``goodFeaturesToTrack``'s minDistance);
3. keeps ``k`` points: the top-k by score (default) or ``distribution="grid"`` bucketing
   (:func:`kpnet.selection.grid_select`, as ORB-SLAM / OpenVINS).

The pool is ``pool_factor * k`` raw points: kpnet decodes with a 3x3 NMS (radius 1) and
threshold 0, OpenCV detectors get ``max_keypoints = pool`` with their fixed settings, ALIKED
its own DKD (radius 2) with threshold 0.01. Per image the protocol also records the fraction
of the raw top-k with another raw point within 2 px (duplicates).

``raw=True`` (``--raw-baselines``) skips steps 2-3 for the OpenCV detectors: their own top-k
output, exactly what OpenCV returns for ``max_keypoints = k``.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kpnet.baselines import CLASSICAL, SETTINGS, make_classical  # noqa: E402
from kpnet.io import folder_images  # noqa: E402
from kpnet.selection import duplicate_fraction, greedy_suppress, grid_select, topk  # noqa: E402

#: ALIKED teachers (detections of their DKD head) usable as detectors.
TEACHERS = ("aliked-n16", "aliked-t16", "aliked-n32", "aliked-n16rot")
LEARNED = TEACHERS + ("superpoint",)
DISTRIBUTIONS = ("topk", "grid")
DUP_RADIUS = 2.0
DESCRIPTOR = "OpenCV SIFT descriptor at each keypoint, fixed size 12 px, angle 0"

#: (gray uint8 [H, W], pool size) -> (xy float32 [N, 2], scores float32 [N]) sorted by score.
RawFn = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray]"]


# --------------------------------------------------------------------------- options
def parse_hw(text: str, name: str = "size") -> tuple[int, int]:
    """``"480x640"`` -> ``(480, 640)`` (height, width); ValueError naming the format otherwise.

    Uses kpnet's own parser when the installed kpnet has one (``kpnet.sizing.parse_hw``)."""
    try:
        from kpnet.sizing import parse_hw as kp_parse_hw
    except ImportError:
        kp_parse_hw = None
    if kp_parse_hw is not None:
        try:
            return kp_parse_hw(text, name)
        except Exception as exc:  # kpnet's ConfigError; re-raise as the ValueError callers expect
            raise ValueError(str(exc)) from exc
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise ValueError(f"{name} must be HEIGHTxWIDTH with two positive ints, e.g. 480x640; got {text!r}")
    return int(parts[0]), int(parts[1])


def parse_grid(text: str) -> tuple[int, int]:
    """``"12x16"`` -> ``(12, 16)`` (rows, cols)."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise ValueError(f"grid must be ROWSxCOLS with two positive ints, e.g. 12x16; got {text!r}")
    return int(parts[0]), int(parts[1])


def add_protocol_args(p, *, k_default: str = "300", radius_alias: bool = False) -> None:
    """The protocol's command-line options, identical in every benchmark."""
    names = ["--suppression-radius"] + (["--nms-radius"] if radius_alias else [])
    p.add_argument(
        *names,
        dest="suppression_radius",
        type=float,
        default=4.0,
        help="greedy suppression radius in pixels at the evaluation size, applied to every detector (default 4; 0 = none)",
    )
    p.add_argument(
        "--distribution",
        choices=DISTRIBUTIONS,
        default="topk",
        help="selection for every detector: top-k by score (default) or grid bucketing",
    )
    p.add_argument("--grid", default="12x16", help="ROWSxCOLS of --distribution grid (default 12x16)")
    p.add_argument(
        "--pool-factor", type=int, default=4, help="raw candidates asked of each detector: this times K (default 4)"
    )
    p.add_argument(
        "--raw-baselines",
        action="store_true",
        help="OpenCV detectors give their own raw top-K (no shared suppression or bucketing); labelled '[raw]'",
    )


@dataclass(frozen=True)
class Protocol:
    """Selection applied to every detector. Distances in pixels at the evaluation size."""

    radius: float = 4.0
    distribution: str = "topk"
    grid: tuple[int, int] = (12, 16)
    pool_factor: int = 4
    raw_baselines: bool = False

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.distribution!r}; choose from: {', '.join(DISTRIBUTIONS)}")
        if self.pool_factor < 1:
            raise ValueError(f"pool_factor must be >= 1, got {self.pool_factor}")
        if self.radius < 0:
            raise ValueError(f"suppression radius must be >= 0, got {self.radius}")

    @classmethod
    def from_args(cls, a) -> "Protocol":
        return cls(
            float(a.suppression_radius), a.distribution, parse_grid(a.grid), int(a.pool_factor), bool(a.raw_baselines)
        )

    def describe(self) -> str:
        sel = "top-k by score" if self.distribution == "topk" else f"grid bucketing {self.grid[0]}x{self.grid[1]}"
        s = f"every detector: raw pool of {self.pool_factor}xK, greedy suppression {self.radius:g} px, {sel}"
        return s + ("; OpenCV detectors raw ('[raw]': their own top-K, no suppression)" if self.raw_baselines else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "suppression_radius": self.radius,
            "distribution": self.distribution,
            "grid": list(self.grid),
            "pool_factor": self.pool_factor,
            "raw_baselines": self.raw_baselines,
            "duplicate_radius": DUP_RADIUS,
            "classical_settings": SETTINGS,
        }

    def select(self, xy: np.ndarray, scores: np.ndarray, k: int, image_size: tuple[int, int]) -> np.ndarray:
        """Indices of the selected points; ``image_size`` = (width, height)."""
        keep = greedy_suppress(xy, scores, self.radius)
        if self.distribution == "grid":
            return keep[grid_select(xy[keep], scores[keep], image_size, k, self.grid)]
        return keep[topk(scores[keep], k)]


# --------------------------------------------------------------------------- detectors
@dataclass
class Detection:
    """Selected keypoints of one image: xy float32 [N, 2] pixels, scores float32 [N]; ``dup``:
    fraction of the raw top-K with another raw point within 2 px; ``n_raw``: raw pool size."""

    xy: np.ndarray
    scores: np.ndarray
    dup: float
    n_raw: int
    ms: float = 0.0


@dataclass
class Detector:
    """A named raw detector plus the protocol; ``detect(gray, k)`` gives a :class:`Detection`."""

    label: str
    raw_fn: RawFn
    protocol: Protocol
    raw: bool = False  # OpenCV raw output: no suppression, the detector's own top-k
    cache_dir: Optional[Path] = None
    kind: str = "kpnet"
    _memo: dict = field(default_factory=dict, repr=False)

    def pool(self, k: int) -> int:
        return k if self.raw else self.protocol.pool_factor * k

    def raw_detect(self, gray: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw pool for budget ``k`` (from the cache when there is one)."""
        n = self.pool(k)
        path = None
        if self.cache_dir is not None:
            h = hashlib.sha1(gray.tobytes() + str(gray.shape).encode()).hexdigest()[:20]
            path = self.cache_dir / f"{self.label.replace('/', '_')}-{n}-{h}.npz"
            if path.is_file():
                z = np.load(path)
                return z["xy"], z["scores"]
        xy, scores = self.raw_fn(gray, n)
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        scores = np.asarray(scores, np.float32).reshape(-1)
        order = topk(scores, len(scores))  # the protocol relies on score order
        xy, scores = xy[order], scores[order]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, xy=xy, scores=scores)
        return xy, scores

    def detect(
        self,
        gray: np.ndarray,
        k: int,
        valid: Optional[np.ndarray] = None,
        pool: Optional[tuple[np.ndarray, np.ndarray]] = None,
    ) -> Detection:
        """Raw pool -> (valid region) -> suppression -> top-k / grid. ``valid``: uint8/bool
        [H, W] mask of allowed pixels, or None; ``pool``: this image's :meth:`raw_detect`
        output when already computed."""
        t0 = time.perf_counter()
        xy, scores = pool if pool is not None else self.raw_detect(gray, k)
        if valid is not None and len(xy):
            h, w = valid.shape
            xi = np.clip(np.rint(xy[:, 0]).astype(np.int64), 0, w - 1)
            yi = np.clip(np.rint(xy[:, 1]).astype(np.int64), 0, h - 1)
            ok = valid[yi, xi] > 0
            xy, scores = xy[ok], scores[ok]
        dup = duplicate_fraction(xy[:k], DUP_RADIUS)
        if self.raw:
            sel = np.arange(min(k, len(xy)))
        else:
            sel = self.protocol.select(xy, scores, k, (gray.shape[1], gray.shape[0]))
        ms = (time.perf_counter() - t0) * 1e3
        return Detection(np.ascontiguousarray(xy[sel]), np.ascontiguousarray(scores[sel]), dup, len(xy), ms)


def _classical_raw(name: str) -> RawFn:
    made: dict[int, Any] = {}

    def raw(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n not in made:
            made[n] = make_classical(name, n)
        return made[n](gray)

    return raw


def _kpnet_raw(path: Path, threads: int, subpixel: bool = False) -> RawFn:
    from kpnet import KeypointDetector

    made: dict[int, Any] = {}

    def raw(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n not in made:
            opts: dict[str, Any] = dict(max_keypoints=n, nms_radius=1, threshold=0.0, threads=threads)
            if subpixel:
                opts["subpixel"] = True
            made[n] = KeypointDetector(path, **opts)
        kps = made[n].detect(gray)
        return kps.xy, kps.scores

    return raw


def _to_tensor(gray: np.ndarray):
    import torch

    x = torch.from_numpy(gray.astype(np.float32) / 255.0)[None, None]
    h, w = gray.shape
    pad_h, pad_w = (-h) % 32, (-w) % 32  # ALIKED needs multiples of 32
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def _teacher_raw(name: str, threads: int, superpoint_weights: Optional[str] = None) -> RawFn:
    import torch

    from training.teachers import TeacherConfig, build_teacher

    torch.set_num_threads(threads)
    made: dict[int, Any] = {}

    def raw(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n not in made:
            thr = 0.001 if name == "superpoint" else 0.01
            made[n] = build_teacher(
                TeacherConfig(
                    name=name,
                    weights=superpoint_weights if name == "superpoint" else None,
                    max_keypoints=n,
                    detection_threshold=thr,
                )
            )
        f = made[n].detect(_to_tensor(gray))[0]
        xy, s = f.keypoints.numpy(), f.scores.numpy()
        h, w = gray.shape
        ok = (xy[:, 0] <= w - 0.5) & (xy[:, 1] <= h - 0.5)  # drop points in the padding
        return xy[ok], s[ok]

    return raw


def local_maxima(score: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` strongest 3x3 local maxima (> 0) of a dense map [H, W]: xy float32, scores."""
    score = np.ascontiguousarray(score, np.float32)
    peak = (score >= cv2.dilate(score, np.ones((3, 3), np.uint8))) & (score > 0)
    ys, xs = np.nonzero(peak)
    s = score[ys, xs]
    sel = topk(s, n)
    return np.stack([xs[sel], ys[sel]], 1).astype(np.float32), s[sel].astype(np.float32)


def _teacher_map_raw(name: str, n_ha: int, threads: int) -> RawFn:
    import torch

    from training.homography import HomographyConfig, sample_homography
    from training.labels import homographic_adaptation
    from training.teachers import TeacherConfig, build_teacher

    torch.set_num_threads(threads)
    teacher = build_teacher(TeacherConfig(name=name))

    def raw(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = gray.shape
        x = _to_tensor(gray)
        size = (x.shape[-1], x.shape[-2])
        rng = np.random.default_rng(int.from_bytes(hashlib.sha1(gray.tobytes()).digest()[:8], "little"))
        hs = [sample_homography(size, HomographyConfig(), rng) for _ in range(n_ha)]
        with torch.inference_mode():
            dense = homographic_adaptation(x, teacher.dense_map, hs)[:h, :w]
        return local_maxima(dense.numpy(), n)

    return raw


def is_teacher_map(name: str) -> Optional[tuple[str, int]]:
    """``aliked-n16-dense`` -> (aliked-n16, 0); ``aliked-n16rot-ha8`` -> (aliked-n16rot, 8)."""
    for t in TEACHERS:
        if name == f"{t}-dense":
            return t, 0
        if name.startswith(f"{t}-ha") and name[len(t) + 3 :].isdigit() and int(name[len(t) + 3 :]) > 0:
            return t, int(name[len(t) + 3 :])
    return None


def known_baseline(name: str) -> bool:
    return name in CLASSICAL or name in LEARNED or is_teacher_map(name) is not None


def baseline_choices() -> str:
    return (
        ", ".join(CLASSICAL + LEARNED) + ", or TEACHER-dense / TEACHER-haN (e.g. aliked-n16rot-dense, aliked-n16-ha8)"
    )


def build_detector(
    name: str,
    protocol: Protocol,
    *,
    threads: int = 2,
    subpixel: bool = False,
    superpoint_weights: Optional[str] = None,
    cache_dir: Optional[Path] = None,
) -> Detector:
    """A detector by baseline name (see :func:`baseline_choices`) or kpnet model path."""
    if name in CLASSICAL:
        raw = protocol.raw_baselines
        return Detector(f"{name} [raw]" if raw else name, _classical_raw(name), protocol, raw=raw, kind="classical")
    tm = is_teacher_map(name)
    if tm is not None:
        return Detector(name, _teacher_map_raw(tm[0], tm[1], threads), protocol, cache_dir=cache_dir, kind="teacher")
    if name in LEARNED:
        if name == "superpoint" and not superpoint_weights:
            raise ValueError(
                "the 'superpoint' baseline needs --superpoint-weights PATH (weights are not distributed with kpnet)"
            )
        return Detector(
            name, _teacher_raw(name, threads, superpoint_weights), protocol, cache_dir=cache_dir, kind="teacher"
        )
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {name} (baselines: {baseline_choices()})")
    return Detector(path.name, _kpnet_raw(path, threads, subpixel), protocol, kind="kpnet")


# --------------------------------------------------------------------------- shared pieces
_SIFT: list = []


def describe(gray: np.ndarray, xy: np.ndarray, size: float = 12.0) -> np.ndarray:
    """The shared descriptor: SIFT at each keypoint, fixed ``size`` (12 px) and angle 0.
    float32 [N, 128] aligned with ``xy``; rows OpenCV could not describe are zero."""
    if not _SIFT:
        _SIFT.append(cv2.SIFT_create())
    if len(xy) == 0:
        return np.zeros((0, 128), np.float32)
    kps = [cv2.KeyPoint(float(x), float(y), float(size), 0.0, 0.0, 0, i) for i, (x, y) in enumerate(xy)]
    kps2, desc = _SIFT[0].compute(gray, kps)
    out = np.zeros((len(kps), 128), np.float32)
    if desc is not None and len(kps2):
        out[[p.class_id for p in kps2]] = desc  # class_id carries the index through any dropping
    return out


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive), sorted by relative path."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    return sorted(folder_images(root), key=lambda p: p.relative_to(root).as_posix())


def holdout_hash(rel: str) -> float:
    """The training split's hash of a relative image path, in [0, 1) (``training.data``'s rule:
    an image is in the validation split when this is below ``val_fraction``)."""
    return int.from_bytes(hashlib.sha1(f"kpnet-val:{rel}".encode("utf-8")).digest()[:8], "little") / 2.0**64


def to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)


class _NoBar:
    def __init__(self, iterable=None):
        self.iterable = iterable if iterable is not None else ()

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable=None, **kw):
    """tqdm progress bar on stderr (a no-op stand-in when tqdm is missing)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)
    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("leave", False)
    return tqdm(iterable, **kw)


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (with a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; skipping the plot (pip install 'kpnet[bench]')")
        return None
    return plt
