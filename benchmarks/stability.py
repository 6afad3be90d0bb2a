"""Temporal stability on consecutive frames: do keypoints persist from frame to frame?

    python benchmarks/stability.py ../shared/data/video/tum --model models/kpnet-small.onnx --baselines orb,fast,gftt

For each detector (same budget K):
- re-detection rate: each frame's keypoints are tracked to the next frame with pyramidal
  Lucas-Kanade and a forward-backward check; the fraction whose tracked position has a
  detection of the next frame within --radius px (LK failures count as misses);
- survival curve: the first frame's keypoints are followed the same way, a track surviving
  a frame only if it is re-detected there; the fraction alive after n frames.
Tracking and detection come from ``kpnet.tracking`` (the code of ``examples/track.py``).
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
sys.path.insert(0, str(ROOT / "examples"))

from kpnet.tracking import CLASSICAL, make_detector, redetection_rate, track_points  # noqa: E402
from track import read_frames  # noqa: E402  (examples/track.py)


def evaluate(frames: list[np.ndarray], name: str, k: int, radius: float, threads: int | None) -> dict:
    det = make_detector(name, threads=threads)
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) if f.ndim == 3 else f for f in frames]
    times, dets = [], []
    for g in grays:
        t0 = time.perf_counter()
        dets.append(det(g, None, k))
        times.append((time.perf_counter() - t0) * 1e3)
    rates = [redetection_rate(grays[i], grays[i + 1], dets[i], dets[i + 1], radius) for i in range(len(grays) - 1)]
    alive = dets[0].copy()
    n0 = max(1, len(alive))
    survival = [1.0 if len(alive) else 0.0]
    for i in range(1, len(grays)):
        p1, good = track_points(grays[i - 1], grays[i], alive)
        p1 = p1[good]
        if len(p1) and len(dets[i]):
            d = np.linalg.norm(p1[:, None] - dets[i][None], axis=-1).min(axis=1)
            p1 = p1[d <= radius]
        else:
            p1 = p1[:0]
        alive = p1
        survival.append(len(alive) / n0)
    return {
        "keypoints_mean": float(np.mean([len(d) for d in dets])),
        "redetection_rate": float(np.mean(rates)),
        "redetection_per_pair": rates,
        "survival": survival,
        "ms_per_frame": float(np.median(times[1:] if len(times) > 1 else times)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", help="folder of consecutive frames or a video")
    p.add_argument("--model", action="append", help="kpnet model (repeatable)")
    p.add_argument("--baselines", default="orb,fast,gftt", help=f"comma-separated from: {', '.join(CLASSICAL)}")
    p.add_argument("-k", "--max-keypoints", type=int, default=500)
    p.add_argument("--radius", type=float, default=2.0, help="re-detection radius in pixels (default 2)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/stability")
    a = p.parse_args(argv)
    names = list(a.model or []) + [b for b in a.baselines.split(",") if b]
    bad = [b for b in a.baselines.split(",") if b and b not in CLASSICAL]
    if bad:
        p.error(f"unknown baselines {bad}; choose from: {', '.join(CLASSICAL)}")
    try:
        frames = read_frames(a.source)
        results = {Path(n).name if n not in CLASSICAL else n: evaluate(frames, n, a.max_keypoints, a.radius, a.threads) for n in names}
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = len(frames)
    marks = [m for m in (1, 5, 10, n - 1) if m < n]
    lines = [
        f"Temporal stability on {a.source} ({n} frames), K={a.max_keypoints}, re-detection radius {a.radius:g} px, LK with forward-backward check",
        "",
        "| detector | keypoints/frame | re-detection rate | " + " | ".join(f"survival after {m}" for m in marks) + " | ms/frame |",
        "|---|---|---|" + "---|" * len(marks) + "---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['keypoints_mean']:.0f} | {r['redetection_rate']:.3f} | " + " | ".join(f"{r['survival'][m]:.3f}" for m in marks) + f" | {r['ms_per_frame']:.1f} |")
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stability.json").write_text(json.dumps({"settings": vars(a), "frames": n, "results": results}, indent=1))
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
        print("note: matplotlib is not installed; skipping the plot")
    print(f"wrote {out}/stability.json, stability.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
