"""Relative pose on real video with ground-truth poses: the visual-odometry question.

    python benchmarks/pose.py ../shared/data/video/hololens --models models/kpnet-small.onnx,models/kpnet-small-fast.onnx

For every pair of frames (i, i + g), g in ``--gaps`` (default 1,3,5,10), i in steps of ``--step``,
each detector's keypoints (same protocol as every benchmark: raw pool, greedy suppression 4 px,
top-K) feed two front ends:

- ``klt``: frame i's keypoints tracked into frame i + g with pyramidal Lucas-Kanade and a
  forward-backward check (``kpnet.tracking.track_points``, the code of examples/track.py);
- ``desc``: the same descriptor for every detector (OpenCV SIFT computed at its keypoints,
  fixed size 12 px, angle 0) in both frames, mutual nearest neighbours.

The matches give the essential matrix (``cv2.findEssentialMat`` with the camera's K, 1 px,
confidence 0.999; by default ``USAC_ACCURATE``, RANSAC with local optimisation and a final fit,
or ``--estimator ransac``, OpenCV's plain RANSAC as in SuperGlue's evaluation) and ``cv2.recoverPose``. The error of a pair is max(rotation angle error, angle between the
translation directions), both in degrees (SuperGlue's protocol; the translation angle is folded
to [0, 90] as in its evaluation); a pair without a pose counts as an infinite error. Reported:
AUC of the cumulative error curve up to 5, 10 and 20 degrees (SuperGlue's exact definition),
the RANSAC inlier ratio, matches per pair, the KLT survival fraction (tracked points that pass
the forward-backward check), detection ms per frame and front-end ms per pair.

Sequence layouts (detected from the folder's contents):

- generic: ``images/`` (sorted), ``K.txt`` (3x3), ``poses.txt`` (one row-major 4x4
  camera-to-world matrix per image, 16 numbers a line);
- KITTI odometry: ``image_0/``, ``calib.txt`` (its ``P0`` gives K) and the sequence's poses
  (``--poses FILE``, default ``poses.txt`` in the folder: 12 numbers a line, 3x4 camera-to-world);
- TUM RGB-D: ``rgb.txt`` and ``groundtruth.txt`` (associated by nearest timestamp, at most
  ``--max-dt`` s apart); intrinsics from ``--intrinsics fx,fy,cx,cy`` or a preset ``fr1``,
  ``fr2``, ``fr3`` (TUM's calibration; lens distortion is not modelled).

The ALIKED teachers (``--teachers``) are slow on a CPU: ``--max-frames`` limits the frames (of
every detector, so the table stays comparable) and their raw detections are cached
(``--cache``, default OUT/cache), so a second run costs only the front ends. Detection runs in
the main process; description, front ends and pose estimation in ``--workers`` processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _protocol import (  # noqa: E402
    TEACHERS,
    Detector,
    Protocol,
    add_protocol_args,
    build_detector,
    describe,
    parse_hw,
    progress,
)

from kpnet.baselines import CLASSICAL  # noqa: E402
from kpnet.io import folder_images  # noqa: E402
from kpnet.metrics import mutual_nn_matches  # noqa: E402
from kpnet.tracking import track_points  # noqa: E402

FRONT_ENDS = ("klt", "desc")
AUC_THRESHOLDS = (5.0, 10.0, 20.0)
#: TUM RGB-D's published intrinsics of its three Kinects (fx, fy, cx, cy), 640x480.
TUM_INTRINSICS = {
    "fr1": (517.3, 516.5, 318.6, 255.3),
    "fr2": (520.9, 521.0, 325.1, 249.7),
    "fr3": (535.4, 539.2, 320.1, 247.6),
}
LAYOUTS = {
    "generic": "images/ (frames, sorted), K.txt (3x3), poses.txt (16 numbers a line: 4x4 camera-to-world)",
    "kitti": "image_0/ (frames), calib.txt (P0: 3x4), poses (--poses FILE or poses.txt: 12 numbers a line, 3x4 camera-to-world)",
    "tum": "rgb.txt, groundtruth.txt (timestamp tx ty tz qx qy qz qw) and --intrinsics fx,fy,cx,cy | fr1 | fr2 | fr3",
}


# --------------------------------------------------------------------------- sequences
@dataclass
class Sequence:
    """Frames with intrinsics and ground-truth poses. ``poses`` float64 [N, 4, 4] camera-to-world."""

    layout: str
    root: Path
    images: list[Path]
    K: np.ndarray
    poses: np.ndarray
    timestamps: Optional[list[float]] = None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.poses):
            raise ValueError(f"{self.root}: {len(self.images)} images but {len(self.poses)} poses")
        if len(self.images) < 2:
            raise ValueError(f"{self.root}: need at least 2 frames with poses, found {len(self.images)}")
        if self.K.shape != (3, 3):
            raise ValueError(f"{self.root}: intrinsics must be 3x3, got shape {self.K.shape}")

    def relative(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) mapping camera-i coordinates to camera-j coordinates: X_j = R X_i + t."""
        T = np.linalg.inv(self.poses[j]) @ self.poses[i]
        return T[:3, :3], T[:3, 3]


def _frames(folder: Path) -> list[Path]:
    return folder_images(folder, recursive=False)


def _matrix_rows(path: Path, n: int) -> np.ndarray:
    rows = []
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        vals = line.replace(",", " ").split()
        if len(vals) != n:
            raise ValueError(f"{path}:{ln}: expected {n} numbers, got {len(vals)}")
        rows.append([float(v) for v in vals])
    return np.array(rows, np.float64).reshape(-1, n)


def parse_intrinsics(text: str) -> np.ndarray:
    """``fx,fy,cx,cy`` or a TUM preset (fr1, fr2, fr3) -> 3x3 K."""
    if text in TUM_INTRINSICS:
        fx, fy, cx, cy = TUM_INTRINSICS[text]
    else:
        try:
            fx, fy, cx, cy = (float(v) for v in text.split(","))
        except ValueError as exc:
            raise ValueError(
                f"--intrinsics must be fx,fy,cx,cy or one of {', '.join(TUM_INTRINSICS)}; got {text!r}"
            ) from exc
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)


def _quat_to_R(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    q = np.array([qw, qx, qy, qz], np.float64)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def detect_layout(root: Path, poses: Optional[str] = None) -> str:
    """'generic', 'kitti' or 'tum' from the folder's contents; ValueError naming what each needs."""
    if not root.is_dir():
        raise FileNotFoundError(f"sequence folder not found: {root}")
    if (root / "image_0").is_dir() and (root / "calib.txt").is_file():
        return "kitti"
    if (root / "rgb.txt").is_file() and (root / "groundtruth.txt").is_file():
        return "tum"
    if (root / "images").is_dir() and (root / "K.txt").is_file() and (root / "poses.txt").is_file():
        return "generic"
    present = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]) or "nothing"
    needs = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
    raise ValueError(f"{root} is not a sequence in a known layout (found: {present}). Each layout needs: {needs}")


def load_sequence(
    root: str | Path, *, poses: Optional[str] = None, intrinsics: Optional[str] = None, max_dt: float = 0.02
) -> Sequence:
    """Read a sequence in any of the :data:`LAYOUTS` (detected by :func:`detect_layout`)."""
    root = Path(root)
    layout = detect_layout(root, poses)
    K_opt = parse_intrinsics(intrinsics) if intrinsics else None
    if layout == "generic":
        K = K_opt if K_opt is not None else np.loadtxt(root / "K.txt", dtype=np.float64).reshape(3, 3)
        T = _matrix_rows(root / "poses.txt", 16).reshape(-1, 4, 4)
        return Sequence(layout, root, _frames(root / "images"), K, T)
    if layout == "kitti":
        calib = {}
        for line in (root / "calib.txt").read_text().splitlines():
            if ":" in line:
                key, vals = line.split(":", 1)
                calib[key.strip()] = vals.split()
        if "P0" not in calib or len(calib["P0"]) != 12:
            raise ValueError(
                f"{root / 'calib.txt'}: needs a line 'P0: <12 numbers>' (the left grey camera's projection)"
            )
        K = K_opt if K_opt is not None else np.array(calib["P0"], np.float64).reshape(3, 4)[:, :3]
        pfile = Path(poses) if poses else root / "poses.txt"
        if not pfile.is_file():
            raise ValueError(
                f"KITTI sequence {root}: poses file {pfile} not found; pass the sequence's poses with --poses FILE (e.g. dataset/poses/00.txt)"
            )
        P = _matrix_rows(pfile, 12).reshape(-1, 3, 4)
        T = np.tile(np.eye(4), (len(P), 1, 1))
        T[:, :3, :] = P
        images = _frames(root / "image_0")
        if len(T) > len(images):
            T = T[: len(images)]
        return Sequence(layout, root, images, K, T)
    # TUM RGB-D
    if K_opt is None:
        if (root / "K.txt").is_file():
            K_opt = np.loadtxt(root / "K.txt", dtype=np.float64).reshape(3, 3)
        else:
            raise ValueError(
                f"TUM sequence {root}: give the intrinsics with --intrinsics fx,fy,cx,cy or one of {', '.join(TUM_INTRINSICS)} (freiburg 1/2/3)"
            )
    rgb = []
    for line in (root / "rgb.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            ts, name = line.split()[:2]
            rgb.append((float(ts), root / name))
    gt = _matrix_rows(root / "groundtruth.txt", 8)
    if not len(gt) or not rgb:
        raise ValueError(f"TUM sequence {root}: rgb.txt or groundtruth.txt is empty")
    order = np.argsort(gt[:, 0])
    gt = gt[order]
    images, T, stamps = [], [], []
    for ts, path in rgb:
        j = int(np.searchsorted(gt[:, 0], ts))
        cand = [c for c in (j - 1, j) if 0 <= c < len(gt)]
        best = min(cand, key=lambda c: abs(gt[c, 0] - ts))
        if abs(gt[best, 0] - ts) > max_dt:
            continue
        M = np.eye(4)
        M[:3, :3] = _quat_to_R(*gt[best, 4:8])
        M[:3, 3] = gt[best, 1:4]
        images.append(path)
        T.append(M)
        stamps.append(ts)
    return Sequence(layout, root, images, K_opt, np.array(T).reshape(-1, 4, 4), stamps)


# --------------------------------------------------------------------------- geometry
def rotation_error(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle (degrees) of R_est^T R_gt."""
    c = (np.trace(R_est.T @ R_gt) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def translation_error(t_est: np.ndarray, t_gt: np.ndarray) -> float:
    """Angle (degrees) between translation directions, folded to [0, 90] (E's sign ambiguity)."""
    n = np.linalg.norm(t_est) * np.linalg.norm(t_gt)
    if n == 0:
        return float("nan")
    a = float(np.degrees(np.arccos(np.clip(np.dot(t_est, t_gt) / n, -1.0, 1.0))))
    return min(a, 180.0 - a)


def pose_error(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray) -> float:
    """max(rotation error, translation direction error) in degrees."""
    et = translation_error(t_est, t_gt)
    er = rotation_error(R_est, R_gt)
    return max(er, et) if np.isfinite(et) else er


def pose_auc(errors, thresholds=AUC_THRESHOLDS) -> list[float]:
    """Area under the cumulative error curve up to each threshold, normalised to [0, 1].

    The curve is recall(e) = fraction of pairs with error <= e, drawn piecewise linearly through
    (0, 0) and (e_i, i / n) for the sorted errors and held flat up to the threshold (SuperGlue's
    definition); infinite errors (failures) count in n but never enter the curve."""
    e = np.sort(np.asarray(errors, np.float64))
    n = len(e)
    if n == 0:
        return [0.0 for _ in thresholds]
    xs = np.concatenate([[0.0], e])
    ys = np.concatenate([[0.0], np.arange(1, n + 1) / n])
    out = []
    for t in thresholds:
        m = int(np.searchsorted(xs, t, side="left"))  # points strictly below t
        x = np.concatenate([xs[:m], [t]])
        y = np.concatenate([ys[:m], [ys[m - 1]]])
        out.append(float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / t))
    return out


@dataclass
class PoseResult:
    R: Optional[np.ndarray]
    t: Optional[np.ndarray]
    inliers: int
    matches: int


#: ``usac-accurate`` (default): ``cv2.USAC_ACCURATE``, RANSAC with the same 1 px threshold plus
#: local optimisation and a final least-squares fit on the inliers. ``ransac``: OpenCV's plain
#: RANSAC as in SuperGlue's evaluation: the best minimal 5-point sample, no refinement, so even
#: matches with 0.3 px of noise give degrees of error when almost all are inliers (RANSAC then
#: stops after a few samples); it is also about 5x slower here.
ESTIMATORS = {"ransac": cv2.RANSAC, "usac-accurate": cv2.USAC_ACCURATE}


def estimate_pose(
    p1: np.ndarray,
    p2: np.ndarray,
    K: np.ndarray,
    threshold: float = 1.0,
    prob: float = 0.999,
    estimator: str = "usac-accurate",
) -> PoseResult:
    """Essential matrix by RANSAC (``threshold`` px; see :data:`ESTIMATORS`) and ``recoverPose``;
    of several E solutions the one with most points in front of both cameras.
    p1, p2: float [M, 2] pixels."""
    m = len(p1)
    if m < 5:
        return PoseResult(None, None, 0, m)
    p1 = np.ascontiguousarray(p1, np.float64).reshape(-1, 2)
    p2 = np.ascontiguousarray(p2, np.float64).reshape(-1, 2)
    E, mask = cv2.findEssentialMat(p1, p2, K, method=ESTIMATORS[estimator], prob=prob, threshold=threshold)
    if E is None or mask is None:
        return PoseResult(None, None, 0, m)
    best = None
    for k in range(0, E.shape[0] - 2, 3):
        n, R, t, _ = cv2.recoverPose(E[k : k + 3], p1, p2, K, mask=mask.copy())
        if best is None or n > best[0]:
            best = (n, R, t.ravel())
    return PoseResult(best[1], best[2], int(mask.ravel().astype(bool).sum()), m)


# --------------------------------------------------------------------------- front ends
def klt_matches(g1: np.ndarray, g2: np.ndarray, xy1: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(points in 1, points in 2, survival fraction) by LK with the forward-backward check."""
    if len(xy1) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), 0.0
    p2, good = track_points(g1, g2, xy1)
    return xy1[good], p2[good], float(good.mean())


def desc_matches(xy1: np.ndarray, d1: np.ndarray, xy2: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of the shared descriptors (rows OpenCV could not describe skipped)."""
    v1 = np.flatnonzero(np.abs(d1).sum(1) > 0)
    v2 = np.flatnonzero(np.abs(d2).sum(1) > 0)
    m = mutual_nn_matches(d1[v1], d2[v2])
    if len(m) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    return xy1[v1[m[:, 0]]], xy2[v2[m[:, 1]]]


def make_pairs(n: int, gaps: list[int], step: int) -> list[tuple[int, int]]:
    """(i, i + g) for every gap, i = 0, step, 2 step, ... while i + g < n."""
    return [(i, i + g) for g in gaps for i in range(0, n - g, step)]


@dataclass
class DetectorRun:
    label: str
    detect_ms: list[float] = field(default_factory=list)
    describe_ms: list[float] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


# Work shared with the worker processes (set before forking; read-only there).
_W: dict[str, Any] = {}


def _describe_task(f: int) -> tuple[int, np.ndarray, float]:
    t0 = time.perf_counter()
    d = describe(_W["grays"][f], _W["xys"][f], _W["desc_size"])
    return f, d, (time.perf_counter() - t0) * 1e3


def _pair_task(task: tuple[str, list[tuple[int, int]]]) -> list[dict[str, Any]]:
    fe, chunk = task
    grays, xys, descs, seq = _W["grays"], _W["xys"], _W["descs"], _W["seq"]
    rows = []
    for i, j in chunk:
        t0 = time.perf_counter()
        surv = float("nan")
        if fe == "klt":
            a, b, surv = klt_matches(grays[i], grays[j], xys[i])
        else:
            a, b = desc_matches(xys[i], descs[i], xys[j], descs[j])
        t_match = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        res = estimate_pose(a, b, seq.K, _W["ransac"], _W["conf"], _W["estimator"])
        t_pose = (time.perf_counter() - t1) * 1e3
        R_gt, t_gt = seq.relative(i, j)
        if res.R is None:
            err = er = et = float("inf")
        else:
            er, et = rotation_error(res.R, R_gt), translation_error(res.t, t_gt)
            err = max(er, et) if np.isfinite(et) else er
        rows.append(
            {
                "i": i,
                "j": j,
                "gap": j - i,
                "error": err,
                "err_R": er,
                "err_t": et,
                "matches": res.matches,
                "inliers": res.inliers,
                "inlier_ratio": res.inliers / res.matches if res.matches else 0.0,
                "survival": surv,
                "ms_match": t_match,
                "ms_pose": t_pose,
            }
        )
    return rows


def _map(fn, tasks: list, workers: int, desc: str, total: int, state: dict[str, Any], weight=lambda t: 1):
    """Run ``fn`` over ``tasks`` inline or in ``workers`` spawned processes (forking a process
    whose OpenCV / ONNX Runtime thread pools are live can deadlock), with a progress bar.
    ``state`` becomes the workers' ``_W``."""
    bar = progress(total=total, desc=desc)
    out = []
    if workers <= 1:
        _W.update(state)
        for t in tasks:
            out.append(fn(t))
            bar.update(weight(t))
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(state,)) as pool:
            for t, r in zip(tasks, pool.imap(fn, tasks)):
                out.append(r)
                bar.update(weight(t))
    bar.close()
    return out


def _worker_init(state: dict[str, Any]) -> None:
    cv2.setNumThreads(1)
    _W.update(state)


def run_detector(
    det: Detector,
    seq: Sequence,
    grays: list[np.ndarray],
    pairs: list[tuple[int, int]],
    k: int,
    front_ends: list[str],
    ransac: float,
    *,
    conf: float = 0.999,
    estimator: str = "usac-accurate",
    desc_size: float = 12.0,
    workers: int = 1,
) -> DetectorRun:
    """Detect every frame, then run each front end and pose estimation on every pair."""
    out = DetectorRun(det.label)
    xys = []
    for g in progress(grays, desc=f"{det.label}: detect"):
        d = det.detect(g, k)
        xys.append(d.xy)
        out.detect_ms.append(d.ms)
    descs: dict[int, np.ndarray] = {}
    if "desc" in front_ends:
        frames = sorted({f for p in pairs for f in p})
        state = dict(grays={f: grays[f] for f in frames}, xys={f: xys[f] for f in frames}, desc_size=desc_size)
        for f, d, ms in _map(_describe_task, frames, workers, f"{det.label}: describe", len(frames), state):
            descs[f] = d
            out.describe_ms.append(ms)
    chunk = 16
    for fe in front_ends:
        state = dict(
            grays=grays,
            xys=xys,
            descs=descs if fe == "desc" else {},
            seq=seq,
            ransac=ransac,
            conf=conf,
            estimator=estimator,
        )
        if fe == "desc":
            state["grays"] = []  # not needed: descriptors are computed
        tasks = [(fe, pairs[c : c + chunk]) for c in range(0, len(pairs), chunk)]
        out.rows[fe] = [
            r
            for part in _map(
                _pair_task, tasks, workers, f"{det.label}: {fe}", len(pairs), state, weight=lambda t: len(t[1])
            )
            for r in part
        ]
    _W.clear()
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errs = [r["error"] for r in rows]
    aucs = pose_auc(errs)
    surv = [r["survival"] for r in rows if np.isfinite(r["survival"])]
    return {
        **{f"auc@{t:g}": a for t, a in zip(AUC_THRESHOLDS, aucs)},
        "pairs": len(rows),
        "failures": int(sum(not np.isfinite(e) for e in errs)),
        "median_error": float(np.median(errs)) if errs else float("nan"),
        "inlier_ratio": float(np.mean([r["inlier_ratio"] for r in rows])) if rows else 0.0,
        "matches": float(np.mean([r["matches"] for r in rows])) if rows else 0.0,
        "survival": float(np.mean(surv)) if surv else float("nan"),
        "ms_match": float(np.median([r["ms_match"] for r in rows])) if rows else float("nan"),
        "ms_pose": float(np.median([r["ms_pose"] for r in rows])) if rows else float("nan"),
    }


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    gaps = s["gaps"]
    lines = [
        f"Relative pose on {s['sequence']} ({s['layout']} layout, {s['frames']} frames, {s['pairs']} pairs: gaps {','.join(map(str, gaps))}, step {s['step']}), "
        f"K={s['k']}, protocol: {s['protocol_text']}. Essential matrix: {s['estimator']} {s['ransac_px']:g} px (confidence {s['ransac_conf']:g}) + recoverPose; "
        "error = max(rotation, translation direction) in degrees; AUC as SuperGlue. "
        f"Front ends: klt = pyramidal LK (21x21, 3 levels) with a 1 px forward-backward check; desc = OpenCV SIFT descriptor at each keypoint (size {s['desc_size']:g} px, angle 0), mutual nearest neighbours. "
        f"Wall time {results['wall_s']:.0f} s.",
        "",
        "| detector | front end | AUC@5 | AUC@10 | AUC@20 | median err (deg) | failures | inlier ratio | matches/pair | KLT survival | detect ms/frame | describe ms/frame | match ms/pair | pose ms/pair |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for det, r in results["detectors"].items():
        for fe, m in r["all"].items():
            surv = f"{m['survival']:.3f}" if np.isfinite(m["survival"]) else "-"
            lines.append(
                f"| {det} | {fe} | {m['auc@5']:.3f} | {m['auc@10']:.3f} | {m['auc@20']:.3f} | {m['median_error']:.2f} | {m['failures']} | {m['inlier_ratio']:.3f} | {m['matches']:.0f} | {surv} | {r['detect_ms']:.1f} | {r['describe_ms']:.1f} | {m['ms_match']:.1f} | {m['ms_pose']:.1f} |"
            )
    lines += [
        "",
        "AUC@10 per frame gap:",
        "",
        "| detector | front end | " + " | ".join(f"gap {g}" for g in gaps) + " |",
        "|---|---|" + "---|" * len(gaps),
    ]
    for det, r in results["detectors"].items():
        for fe in r["all"]:
            lines.append(
                f"| {det} | {fe} | " + " | ".join(f"{r['per_gap'][fe][str(g)]['auc@10']:.3f}" for g in gaps) + " |"
            )
    return "\n".join(lines)


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{what} must be comma-separated ints, got {text!r}") from exc
    if not vals or min(vals) < 1:
        raise ValueError(f"{what} must be ints >= 1, got {text!r}")
    return vals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="layouts:\n" + "\n".join(f"  {k}: {v}" for k, v in LAYOUTS.items()),
    )
    p.add_argument("sequence", help="sequence folder (generic, KITTI or TUM RGB-D layout)")
    p.add_argument("--models", default="", help="comma-separated kpnet model files")
    p.add_argument(
        "--baselines",
        default="orb,fast,gftt,harris",
        help=f"comma-separated OpenCV detectors from: {', '.join(CLASSICAL)} (default orb,fast,gftt,harris)",
    )
    p.add_argument(
        "--teachers",
        default="",
        help=f"comma-separated ALIKED teachers from: {', '.join(TEACHERS)} (slow on CPU; cached)",
    )
    p.add_argument("--front-ends", default="klt,desc", help="comma-separated from: klt, desc")
    p.add_argument("--gaps", default="1,3,5,10", help="frame gaps g of the pairs (i, i+g) (default 1,3,5,10)")
    p.add_argument("--step", type=int, default=1, help="first frames of the pairs: every STEP-th (default 1)")
    p.add_argument("--max-frames", type=int, help="use only the first N frames (all detectors)")
    p.add_argument("-k", "--max-keypoints", dest="k", type=int, default=1000, help="keypoints per frame (default 1000)")
    p.add_argument("--size", help="resize frames to HEIGHTxWIDTH first (K scaled to match); default native")
    p.add_argument("--ransac", type=float, default=1.0, help="essential-matrix RANSAC threshold in px (default 1)")
    p.add_argument(
        "--estimator",
        choices=list(ESTIMATORS),
        default="usac-accurate",
        help="usac-accurate (default): RANSAC with local optimisation and a final fit on the inliers; ransac: OpenCV's plain RANSAC as SuperGlue's evaluation (noisier, ~5x slower)",
    )
    p.add_argument("--ransac-conf", type=float, default=0.999, help="RANSAC confidence (default 0.999)")
    p.add_argument(
        "--desc-size",
        type=float,
        default=12.0,
        help="desc front end: SIFT keypoint size in px (default 12, as the accuracy benchmark)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes for the front ends and pose estimation (default 2; 1 = inline)",
    )
    p.add_argument("--poses", help="KITTI: the sequence's poses file (default SEQUENCE/poses.txt)")
    p.add_argument("--intrinsics", help=f"fx,fy,cx,cy or {'/'.join(TUM_INTRINSICS)} (TUM); overrides the folder's K")
    p.add_argument(
        "--max-dt",
        type=float,
        default=0.02,
        help="TUM: max seconds between an image and its ground-truth pose (default 0.02)",
    )
    add_protocol_args(p)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for kpnet / teachers / OpenCV (default 2)")
    p.add_argument("--cache", help="folder caching teachers' raw detections (default OUT/cache)")
    p.add_argument("--out", default="runs/pose")
    a = p.parse_args(argv)
    try:
        gaps = _ints(a.gaps, "--gaps")
        if a.step < 1:
            raise ValueError(f"--step must be >= 1, got {a.step}")
        front_ends = [f for f in a.front_ends.split(",") if f]
        bad = [f for f in front_ends if f not in FRONT_ENDS]
        if bad or not front_ends:
            raise ValueError(f"unknown front ends {bad}; choose from: {', '.join(FRONT_ENDS)}")
        baselines = [b for b in a.baselines.split(",") if b]
        teachers = [t for t in a.teachers.split(",") if t]
        bad = [b for b in baselines if b not in CLASSICAL] + [t for t in teachers if t not in TEACHERS]
        if bad:
            raise ValueError(
                f"unknown detectors {bad}; --baselines from: {', '.join(CLASSICAL)}; --teachers from: {', '.join(TEACHERS)}"
            )
        proto = Protocol.from_args(a)
        size = parse_hw(a.size, "--size") if a.size else None
    except ValueError as exc:
        p.error(str(exc))
    cv2.setNumThreads(a.threads)
    out = Path(a.out)
    t_start = time.perf_counter()
    try:
        seq = load_sequence(a.sequence, poses=a.poses, intrinsics=a.intrinsics, max_dt=a.max_dt)
        if a.max_frames:
            seq = Sequence(
                seq.layout, seq.root, seq.images[: a.max_frames], seq.K, seq.poses[: a.max_frames], seq.timestamps
            )
        grays = []
        for f in progress(seq.images, desc="read frames"):
            g = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if g is None:
                raise ValueError(f"cannot read frame {f}")
            grays.append(g)
        K = seq.K.copy()
        if size is not None:
            h0, w0 = grays[0].shape
            sx, sy = size[1] / w0, size[0] / h0
            K = np.diag([sx, sy, 1.0]) @ K
            K[0, 2] += 0.5 * sx - 0.5  # pixel-centre convention, as the resize
            K[1, 2] += 0.5 * sy - 0.5
            grays = [cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_AREA) for g in grays]
            seq = Sequence(seq.layout, seq.root, seq.images, K, seq.poses, seq.timestamps)
        pairs = make_pairs(len(grays), gaps, a.step)
        if not pairs:
            raise ValueError(f"no pairs: {len(grays)} frames and gaps {gaps}")
        names = [m for m in a.models.split(",") if m] + baselines + teachers
        cache = Path(a.cache) if a.cache else out / "cache"
        results: dict[str, Any] = {
            "settings": {
                "sequence": str(a.sequence),
                "layout": seq.layout,
                "frames": len(grays),
                "pairs": len(pairs),
                "gaps": gaps,
                "step": a.step,
                "k": a.k,
                "size": a.size,
                "ransac_px": a.ransac,
                "ransac_conf": a.ransac_conf,
                "estimator": a.estimator,
                "desc_size": a.desc_size,
                "workers": a.workers,
                "front_ends": front_ends,
                "protocol": proto.to_dict(),
                "protocol_text": proto.describe(),
                "descriptor": f"OpenCV SIFT descriptor at each keypoint, fixed size {a.desc_size:g} px, angle 0",
                "threads": a.threads,
                "K": seq.K.tolist(),
            },
            "detectors": {},
        }
        for name in names:
            det = build_detector(name, proto, threads=a.threads, cache_dir=cache if name in TEACHERS else None)
            t0 = time.perf_counter()
            run = run_detector(
                det,
                seq,
                grays,
                pairs,
                a.k,
                front_ends,
                a.ransac,
                conf=a.ransac_conf,
                estimator=a.estimator,
                desc_size=a.desc_size,
                workers=a.workers,
            )
            r: dict[str, Any] = {
                "detect_ms": float(np.median(run.detect_ms[1:] if len(run.detect_ms) > 1 else run.detect_ms)),
                "describe_ms": float(np.median(run.describe_ms)) if run.describe_ms else float("nan"),
                "all": {},
                "per_gap": {},
                "pairs": run.rows,
                "wall_s": time.perf_counter() - t0,
            }
            for fe, rows in run.rows.items():
                r["all"][fe] = summarise(rows)
                r["per_gap"][fe] = {str(g): summarise([x for x in rows if x["gap"] == g]) for g in gaps}
            results["detectors"][det.label] = r
            print(
                f"  {det.label}: "
                + "  ".join(
                    f"{fe} AUC@5/10/20 {m['auc@5']:.3f}/{m['auc@10']:.3f}/{m['auc@20']:.3f}"
                    for fe, m in r["all"].items()
                )
                + f"  ({r['wall_s']:.0f} s)",
                flush=True,
            )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results["wall_s"] = time.perf_counter() - t_start
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    print()
    print(text)
    (out / "pose.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "pose.md").write_text(text + "\n")
    print(f"\nwrote {out / 'pose.json'}, {out / 'pose.md'} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
