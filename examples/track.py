"""Visual-odometry-style tracking front end with kpnet (or GFTT/FAST/ORB to compare).

    python examples/track.py ../shared/data/video/tum --detector models/kpnet-small.onnx --out out/track.mp4
    python examples/track.py frames/ --detector gftt

Detects with a mask away from live tracks and a grid distribution, tracks with pyramidal
Lucas-Kanade and a forward-backward check, rejects outliers with a RANSAC fundamental matrix,
and replenishes when fewer than --min-tracks remain. Writes an annotated MP4 (or GIF when
the output ends in .gif) and prints per-frame times and track-length statistics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpnet.io import list_images  # noqa: E402
from kpnet.tracking import FrontEnd, TrackerConfig, make_detector  # noqa: E402


def read_frames(source: str) -> list[np.ndarray]:
    """All frames of a folder (sorted by name) or a video file."""
    p = Path(source)
    if p.is_dir():
        files = list_images(p, recursive=False)
        frames = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]
        frames = [f for f in frames if f is not None]
    elif p.is_file():
        cap = cv2.VideoCapture(str(p))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
    else:
        raise FileNotFoundError(f"no such folder or video: {source}")
    if len(frames) < 2:
        raise ValueError(f"{source}: need at least 2 frames, found {len(frames)}")
    return frames


def write_video(frames: list[np.ndarray], path: Path, fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        try:
            from PIL import Image
        except ImportError as exc:
            raise RuntimeError("writing GIF needs Pillow (pip install pillow); or write .mp4") from exc
        imgs = [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) for f in frames]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
        return
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not vw.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}; try a .gif output")
    for f in frames:
        vw.write(f)
    vw.release()


def run(
    frames: list[np.ndarray], detector: str, config: TrackerConfig, threads: int | None = None
) -> tuple[FrontEnd, list, list[np.ndarray]]:
    fe = FrontEnd(make_detector(detector, threads=threads), config)
    stats, drawn = [], []
    for f in frames:
        stats.append(fe.process(f))
        drawn.append(fe.draw(f))
    return fe, stats, drawn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("source", help="folder of frames or a video file")
    p.add_argument("--detector", default="models/kpnet-small.onnx", help="kpnet model path, or gftt, fast, orb")
    p.add_argument("--out", default="out/track.mp4", help="annotated output (.mp4 or .gif)")
    p.add_argument("--max-tracks", type=int, default=500, help="track budget")
    p.add_argument("--min-tracks", type=int, default=300, help="replenish below this many live tracks")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the output video")
    p.add_argument("--threads", type=int, help="CPU threads for kpnet")
    a = p.parse_args(argv)
    try:
        frames = read_frames(a.source)
        fe, stats, drawn = run(
            frames,
            a.detector,
            TrackerConfig(max_tracks=a.max_tracks, min_tracks=min(a.min_tracks, a.max_tracks)),
            a.threads,
        )
        write_video(drawn, Path(a.out), a.fps)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("frame | tracked | lost | new | live | detect ms | track ms")
    for s in stats:
        print(
            f"{s.index:5d} | {s.tracked:7d} | {s.lost:4d} | {s.new:3d} | {s.live:4d} | {s.ms_detect:9.1f} | {s.ms_track:8.1f}"
        )
    lengths = fe.track_lengths()
    print(
        f"tracks: {len(lengths)}; length in frames: mean {lengths.mean():.1f}, median {np.median(lengths):.0f}, "
        f"max {lengths.max()}; tracks spanning >= 5 frames: {(lengths >= 5).sum()}"
    )
    det_ms = [s.ms_detect for s in stats if s.new]
    print(
        f"median detect {np.median(det_ms):.1f} ms on {len(det_ms)} frames; median track {np.median([s.ms_track for s in stats[1:]]):.1f} ms; wrote {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
