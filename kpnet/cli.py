"""Command line: ``python -m kpnet detect ...`` and ``python -m kpnet info MODEL``.

The library does the work (detector, image listing, drawing, atomic writes); this file only
parses arguments and reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import ConfigError, KpnetError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _grid(text: str) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must be ROWSxCOLS, e.g. 12x16, got {text!r}") from None
    return r, c


def _detector(a: argparse.Namespace):
    from .detector import KeypointDetector
    from .sizing import WorkingSize, parse_hw

    kw: dict[str, Any] = {}
    for name in (
        "max_keypoints",
        "nms_radius",
        "threshold",
        "border",
        "distribution",
        "grid",
        "min_distance",
        "min_contrast",
    ):
        v = getattr(a, name, None)
        if v is not None:
            kw[name] = v
    if getattr(a, "subpixel", False):
        kw["subpixel"] = True
    given = [n for n in ("size", "long_side", "pixels") if getattr(a, n, None) is not None]
    if len(given) > 1:
        raise ConfigError(
            f"pass one of --size, --long-side or --pixels, got {', '.join('--' + g.replace('_', '-') for g in given)}"
        )
    size: Any = None
    if a.size is not None and a.size != "native":
        size = WorkingSize(fixed=parse_hw(a.size, "--size"))
    elif a.long_side is not None:
        size = WorkingSize(long_side=a.long_side)
    elif a.pixels is not None:
        size = WorkingSize(pixels=a.pixels)
    providers = a.providers.split(",") if getattr(a, "providers", None) else None
    return KeypointDetector(
        a.model, preset=a.preset, size=size, device=a.device, providers=providers, threads=a.threads, **kw
    )


def output_names(paths: list[Path]) -> list[str]:
    """Unique output stems: the file stem, or (when stems collide) the path relative to the
    inputs' common folder with '__' for '/', plus the suffix when that still collides."""
    import os

    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved])) if len(resolved) > 1 else resolved[0].parent
    rel = ["__".join(r.relative_to(common).with_suffix("").parts) for r in resolved]
    counts = {n: rel.count(n) for n in rel}
    return [n if counts[n] == 1 else f"{n}_{p.suffix.lstrip('.')}" for n, p in zip(rel, paths)]


def _read_mask(path: str | None):
    if path is None:
        return None
    import cv2

    m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ConfigError(f"cannot read --mask {path} as an image (a gray PNG, non-zero = allowed)")
    return m


def _mask_for(mask, img, name: str):
    if mask is None:
        return None
    if mask.shape != img.shape[:2]:
        raise ConfigError(
            f"--mask is {mask.shape[0]}x{mask.shape[1]} but {name} is {img.shape[0]}x{img.shape[1]} (HxW); they must match"
        )
    return mask


def _cmd_detect(a: argparse.Namespace) -> int:
    import cv2

    from .draw import draw_keypoints
    from .io import atomic_path, atomic_write_text, list_images

    if a.video is None and not a.images:
        raise ConfigError("give image files, folders or globs, or --video FILE_OR_CAMERA_INDEX")
    if a.video is not None and a.images:
        raise ConfigError("give either images or --video, not both")
    out_dir = Path(a.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the output folder {out_dir}: {exc.strerror or exc}; pass a writable --out"
        ) from None
    mask = _read_mask(a.mask)
    paths = [] if a.video is not None else list_images(a.images)
    det = _detector(a)
    info = det.info
    print(
        f"model {info.model_path}: backend {info.name} on {info.device}, working size {det.size_policy.describe()}, "
        f"threads {info.threads or 'default'}; decoding {json.dumps(det.config.to_dict())}"
    )
    if a.video is not None:
        return _detect_video(a, det, out_dir, mask)
    failures: list[str] = []
    warmed = False
    for path, stem in zip(paths, output_names(paths)):
        try:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise ConfigError("cannot read it as an image (unsupported or corrupt file)")
            m = _mask_for(mask, img, str(path))
            if not warmed:  # first run pays for allocation and graph set-up; keep it out of the timing
                det.detect(img, mask=m)
                warmed = True
            t0 = time.perf_counter()
            kps = det.detect(img, mask=m)
            ms = (time.perf_counter() - t0) * 1e3
            png = out_dir / f"{stem}_kpnet.png"
            with atomic_path(png) as tmp:
                if not cv2.imwrite(str(tmp), draw_keypoints(img, kps)):
                    raise OSError(f"OpenCV could not write {png}")
            if a.format == "json":
                data = out_dir / f"{stem}_kpnet.json"
                doc = {
                    "image": str(path),
                    "model": str(a.model),
                    "time_ms": round(ms, 3),
                    "working_size": list(kps.meta["working_size"]),
                    **kps.to_dict(),
                }
                atomic_write_text(data, json.dumps(doc))
            else:
                data = out_dir / f"{stem}_kpnet.npz"
                with atomic_path(data) as tmp:
                    np.savez_compressed(tmp, xy=kps.xy, scores=kps.scores, image_size=np.array(kps.image_size))
            print(f"{path}: {len(kps)} keypoints in {ms:.1f} ms (end to end, after warm-up) -> {png}, {data}")
        except (KpnetError, ValueError, OSError) as exc:
            failures.append(f"{path}: {exc}")
            print(f"error: {path}: {exc}", file=sys.stderr)
    det.close()
    done = len(paths) - len(failures)
    print(f"{done} of {len(paths)} images done" + (f"; {len(failures)} failed (listed above)" if failures else ""))
    return EXIT_FAILED if failures else EXIT_OK


def _detect_video(a: argparse.Namespace, det, out_dir: Path, mask) -> int:
    import cv2

    from .draw import draw_keypoints
    from .io import atomic_path

    src = a.video
    cap = cv2.VideoCapture(int(src) if src.isdigit() else src)
    if not cap.isOpened():
        raise ConfigError(f"cannot open --video {src!r} (a video file, or a camera index such as 0)")
    name = f"camera{src}" if src.isdigit() else Path(src).stem
    mp4, jsonl = out_dir / f"{name}_kpnet.mp4", out_dir / f"{name}_kpnet.jsonl"
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 1.0 <= fps <= 240.0 else 30.0
    writer, n, times = None, 0, []
    with atomic_path(mp4) as tmp_mp4, atomic_path(jsonl) as tmp_jsonl, open(tmp_jsonl, "w") as lines:
        while a.max_frames is None or n < a.max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            t0 = time.perf_counter()
            kps = det.detect(frame, mask=_mask_for(mask, frame, f"frame {n}"))
            times.append((time.perf_counter() - t0) * 1e3)
            lines.write(json.dumps({"frame": n, "time_ms": round(times[-1], 3), **kps.to_dict()}) + "\n")
            drawn = draw_keypoints(frame, kps)
            if writer is None:
                h, w = drawn.shape[:2]
                writer = cv2.VideoWriter(str(tmp_mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write MP4 video {mp4} (no mp4v encoder in this OpenCV build?)")
            writer.write(drawn)
            n += 1
        if writer is not None:
            writer.release()
    cap.release()
    det.close()
    if n == 0:
        print(f"error: --video {src!r} gave no frames", file=sys.stderr)
        return EXIT_FAILED
    print(f"{n} frames: median {np.median(times):.1f} ms per frame (first frame included) -> {mp4}, {jsonl}")
    return EXIT_OK


def _cmd_info(a: argparse.Namespace) -> int:
    from .backends import create_backend

    providers = a.providers.split(",") if a.providers else None
    with create_backend(a.model, device=a.device, providers=providers, threads=a.threads) as be:
        i = be.info
        shape = "x".join("?" if d is None else str(d) for d in i.input_shape)
        print(f"model:       {i.model_path}")
        print(f"backend:     {i.name}")
        print(f"device:      {i.device}")
        print(f"input shape: {shape} (B, 1, H, W; ? = dynamic, H and W multiples of {i.stride})")
        print(f"input size:  {i.input_size[0]}x{i.input_size[1]} (HxW: nominal size and pixel budget)")
        print(f"precision:   {i.precision}")
        print(f"threads:     {i.threads or 'runtime default'}")
        print(f"decoding:    {'in graph ' + json.dumps(i.decode) if i.postprocess_in_graph else 'on the host'}")
        print(
            f"defaults:    {json.dumps(i.defaults) if i.defaults else 'none stored (threshold 0, no contrast floor)'}"
        )
        for k, v in sorted(i.metadata.items()):
            print(f"meta {k}: {v}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog="python -m kpnet", description="kpnet keypoint detector", allow_abbrev=False, formatter_class=fmt
    )
    p.add_argument("--version", action="version", version=f"kpnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def backend_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--device", help="torch device for .pt models: cpu, cuda, cuda:N (default: cpu)")
        sp.add_argument(
            "--providers", help="ONNX Runtime providers for .onnx, comma-separated: cpu, cuda, tensorrt (default: cpu)"
        )
        sp.add_argument("--threads", type=int, help="CPU threads that run the network (default: the runtime's choice)")

    d = sub.add_parser(
        "detect",
        help="detect keypoints in images or a video; write annotated PNG/MP4 and keypoints",
        allow_abbrev=False,
        formatter_class=fmt,
    )
    d.add_argument("images", nargs="*", help="image files, folders (recursive) or globs such as 'frames/*.png'")
    d.add_argument(
        "--video",
        help="a video file or a camera index (0, 1, ...): writes NAME_kpnet.mp4 and NAME_kpnet.jsonl (one line per frame)",
    )
    d.add_argument("--max-frames", type=int, help="stop --video after this many frames (default: all)")
    d.add_argument("--model", "-m", required=True, help="model file (.onnx, .pt, .engine)")
    d.add_argument("--out", "-o", default="out", help="output folder")
    g = d.add_argument_group("decoding (distances in original image pixels; unset = the preset's, then the model's)")
    g.add_argument("--preset", choices=["vo"], help="named settings: vo = 1000 keypoints on a 12x16 grid, NMS radius 4")
    g.add_argument("--max-keypoints", "-k", type=int, help="at most this many keypoints per image (default 1024)")
    g.add_argument("--nms-radius", type=int, help="non-maximum suppression radius, pixels (default 4)")
    g.add_argument(
        "--threshold", type=float, help="minimum probability, exclusive (default: the model's calibrated value)"
    )
    g.add_argument(
        "--min-contrast",
        type=float,
        help="local-contrast floor in grey levels (default: the model's calibrated value; 0 = off)",
    )
    g.add_argument("--border", type=int, help="ignore keypoints this close to the edge, pixels (default 4)")
    g.add_argument("--subpixel", action="store_true", help="refine keypoints with a 3x3 quadratic fit")
    g.add_argument("--distribution", choices=["topk", "grid", "anms"], help="how the budget is spread (default: topk)")
    g.add_argument(
        "--grid", type=_grid, help="ROWSxCOLS for the grid distribution, implies --distribution grid (default 12x16)"
    )
    g.add_argument(
        "--min-distance",
        type=float,
        help="greedy minimum distance between keypoints, pixels, like goodFeaturesToTrack (default: off)",
    )
    g.add_argument("--mask", help="gray image of the frames' size; keypoints only where it is non-zero")
    s = d.add_argument_group("working size (default: the frame's aspect at the model's pixel budget)")
    s.add_argument("--size", help="fixed HxW, e.g. 480x640, or 'native'")
    s.add_argument("--long-side", type=int, help="the frame's aspect with this long side, pixels")
    s.add_argument("--pixels", type=int, help="the frame's aspect with about this many pixels")
    d.add_argument(
        "--format",
        choices=["json", "npz"],
        default="json",
        help="keypoint file format (json image_size is [width, height])",
    )
    backend_args(d)
    d.set_defaults(func=_cmd_detect)

    i = sub.add_parser(
        "info",
        help="print a model's backend, input shape, precision and metadata",
        allow_abbrev=False,
        formatter_class=fmt,
    )
    i.add_argument("model")
    backend_args(i)
    i.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (KpnetError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
