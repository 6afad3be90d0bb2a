"""Temporal stability on consecutive frames: do keypoints persist from frame to frame?

    python benchmarks/stability.py ../shared/data/video/tum --model models/kpnet-small.onnx --baselines orb,fast,gftt,harris

Ground-truth free. Every detector passes the same protocol (``benchmarks/_protocol.py``): raw
pool, greedy suppression by score (``--suppression-radius``, default 4 px), the same K by top-k
(default) or ``--distribution grid`` for all; ``--raw-baselines`` gives OpenCV's own output.
For each detector:
- re-detection rate: each frame's keypoints are tracked to the next frame with pyramidal
  Lucas-Kanade and a forward-backward check (``kpnet.tracking.track_points``); the fraction whose
  tracked position has a detection of the next frame within ``--radius`` px (LK failures count
  as misses);
- survival curve: the first frame's keypoints are followed the same way, a track surviving a
  frame only if it is re-detected there; the fraction alive after n frames;
- dup@2: fraction of the raw top-K with another raw keypoint within 2 px (before suppression).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _protocol import (  # noqa: E402
    Detector,
    Protocol,
    add_protocol_args,
    baseline_choices,
    build_detector,
    known_baseline,
    progress,
    to_gray,
)

from kpnet.io import folder_images  # noqa: E402
from kpnet.tracking import track_points  # noqa: E402


def read_frames(source: str) -> list[np.ndarray]:
    """Gray uint8 frames of a folder (sorted by name) or a video file."""
    p = Path(source)
    if p.is_dir():
        files = folder_images(p, recursive=False)
        frames = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
        frames = [f for f in frames if f is not None]
    elif p.is_file():
        cap = cv2.VideoCapture(str(p))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(to_gray(f))
    else:
        raise FileNotFoundError(f"no such folder or video: {source}")
    if len(frames) < 2:
        raise ValueError(f"{source}: need at least 2 frames, found {len(frames)}")
    return frames


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.full(len(a), np.inf)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).min(axis=1))


def redetection_rate(
    prev: np.ndarray, cur: np.ndarray, xy_prev: np.ndarray, xy_cur: np.ndarray, radius: float = 2.0
) -> float:
    """Fraction of ``xy_prev`` whose LK-tracked position (forward-backward checked) has a
    detection of the next frame within ``radius`` px; points lost by LK count as failures."""
    if len(xy_prev) == 0:
        return 0.0
    p1, good = track_points(prev, cur, xy_prev)
    return float((_nearest(p1[good], xy_cur) <= radius).sum() / len(xy_prev))


def evaluate(frames: list[np.ndarray], det: Detector, k: int, radius: float) -> dict:
    dets = []
    for g in progress(frames, desc=det.label):
        dets.append(det.detect(g, k))
    xys = [d.xy for d in dets]
    rates = [redetection_rate(frames[i], frames[i + 1], xys[i], xys[i + 1], radius) for i in range(len(frames) - 1)]
    alive = xys[0].copy()
    n0 = max(1, len(alive))
    survival = [1.0 if len(alive) else 0.0]
    for i in range(1, len(frames)):
        p1, good = track_points(frames[i - 1], frames[i], alive)
        p1 = p1[good]
        alive = p1[_nearest(p1, xys[i]) <= radius]
        survival.append(len(alive) / n0)
    times = [d.ms for d in dets]
    return {
        "keypoints_mean": float(np.mean([len(x) for x in xys])),
        "dup2": float(np.mean([d.dup for d in dets])),
        "redetection_rate": float(np.mean(rates)),
        "redetection_per_pair": rates,
        "survival": survival,
        "ms_per_frame": float(np.median(times[1:] if len(times) > 1 else times)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", help="folder of consecutive frames or a video")
    p.add_argument("--model", action="append", help="kpnet model (repeatable)")
    p.add_argument("--baselines", default="orb,fast,gftt,harris", help=f"comma-separated from: {baseline_choices()}")
    p.add_argument("-k", "--max-keypoints", type=int, default=500)
    p.add_argument("--radius", type=float, default=2.0, help="re-detection radius in pixels (default 2)")
    add_protocol_args(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/stability")
    a = p.parse_args(argv)
    names = list(a.model or []) + [b for b in a.baselines.split(",") if b]
    bad = [b for b in a.baselines.split(",") if b and not known_baseline(b)]
    if bad:
        p.error(f"unknown baselines {bad}; choose from: {baseline_choices()}")
    try:
        proto = Protocol.from_args(a)
    except ValueError as exc:
        p.error(str(exc))
    t0 = time.perf_counter()
    try:
        frames = read_frames(a.source)
        results = {}
        for n in names:
            det = build_detector(n, proto, threads=a.threads)
            results[det.label] = evaluate(frames, det, a.max_keypoints, a.radius)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = len(frames)
    marks = [m for m in (1, 5, 10, n - 1) if m < n]
    lines = [
        f"Temporal stability on {a.source} ({n} frames), K={a.max_keypoints}, protocol: {proto.describe()}; "
        f"re-detection radius {a.radius:g} px, LK with forward-backward check. dup@2: raw top-K keypoints with another within 2 px.",
        "",
        "| detector | keypoints/frame | dup@2 | re-detection rate | "
        + " | ".join(f"survival after {m}" for m in marks)
        + " | ms/frame |",
        "|---|---|---|---|" + "---|" * len(marks) + "---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['keypoints_mean']:.0f} | {r['dup2']:.2f} | {r['redetection_rate']:.3f} | "
            + " | ".join(f"{r['survival'][m]:.3f}" for m in marks)
            + f" | {r['ms_per_frame']:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**vars(a), "protocol": proto.to_dict()}
    (out / "stability.json").write_text(
        json.dumps(
            {"settings": settings, "frames": n, "wall_s": time.perf_counter() - t0, "results": results}, indent=1
        )
    )
    (out / "stability.md").write_text(text + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in results.items():
            ax.plot(range(n), r["survival"], label=name)
        ax.set_xlabel("frames")
        ax.set_ylabel("fraction of first-frame keypoints alive")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "stability.png", dpi=120)
    except ImportError:
        print("note: matplotlib is not installed; skipping the plot (pip install 'kpnet[bench]')")
    print(f"wrote {out}/stability.json, stability.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
