"""Rotation and scale sweep: each photo against its own rotated and scaled copies.

    python benchmarks/invariance.py ../shared/data/train --holdout 50 --model models/kpnet-small.onnx \\
        --model models/kpnet-small-fast.onnx --baselines orb,fast,gftt,harris,sift

Every photo of a folder (any layout, searched recursively) is compared with its copy rotated
about the image centre (``--angles``, default 15, 30, 45, 90, 180 degrees) and scaled about the
centre (``--scales``, default 0.5, 0.7, 1.5, 2), on the same canvas, with the exact homography.
Down-scaled copies are low-pass filtered first (Gaussian, sigma = sqrt((0.5/s)^2 - 0.25)), as a
camera moving away integrates the scene. The black fill of a copy is not image content: detections
within ``--margin`` px of it are ignored, and both images are restricted to the area they share,
so each detector places its K points where they can repeat.

Detections follow the shared protocol (``benchmarks/_protocol.py``): raw pool, greedy suppression
by score (4 px), top-K (or ``--distribution grid``). Reported per case and detector: repeatability
at 3 px and 1 px (SuperPoint's definition) and the localisation error of points repeated at 3 px.
Writes ``invariance.json``, ``invariance.md`` and ``invariance.png`` (repeatability against angle
and against scale).

Photo selection: all, or ``--holdout N``: the N photos whose relative path has the smallest
``sha1("kpnet-val:" + path)``, the hash that ``training.data.split_indices`` uses for its
validation split, so with N well under val_fraction x photos they are never trained on; or
``--every E`` / ``--limit L`` on the sorted paths.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

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
    holdout_hash,
    known_baseline,
    list_images,
    parse_hw,
    progress,
    pyplot,
)

from kpnet.metrics import repeatability  # noqa: E402

ANGLES = (15.0, 30.0, 45.0, 90.0, 180.0)
SCALES = (0.5, 0.7, 1.5, 2.0)


# --------------------------------------------------------------------------- transforms
def centre_transform(size: tuple[int, int], angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """3x3 similarity about the image centre (pixel centres at integers): rotation by ``angle``
    degrees counter-clockwise as displayed, then scaling by ``scale``. ``size`` = (w, h)."""
    w, h = size
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    q = angle / 90.0
    if abs(q - round(q)) < 1e-12:  # exact for multiples of 90 degrees
        c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][int(round(q)) % 4]
    else:
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # y points down, so a counter-clockwise turn on screen is x' = c x + s y, y' = -s x + c y.
    R = np.array([[c * scale, s * scale, 0.0], [-s * scale, c * scale, 0.0], [0.0, 0.0, 1.0]])
    T = np.array([[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]])
    return T @ R @ np.linalg.inv(T)


def warp_case(gray: np.ndarray, H: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The copy of ``gray`` under ``H`` (same canvas) and the valid masks of both images.

    Returns (image2 uint8, valid1 uint8, valid2 uint8): valid2 is the copy's image content at
    least ``margin`` px from its black fill; valid1 the image-1 pixels that land in valid2."""
    h, w = gray.shape
    scale = math.sqrt(abs(np.linalg.det(H[:2, :2])))
    src = gray
    if scale < 1.0 - 1e-9:  # a rotation's determinant is 1 up to rounding: no blur
        sigma = math.sqrt(max((0.5 / scale) ** 2 - 0.25, 0.0))
        src = cv2.GaussianBlur(gray, (0, 0), sigma)
    img2 = cv2.warpAffine(src, H[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ones = np.full((h, w), 255, np.uint8)
    valid2 = cv2.warpAffine(ones, H[:2], (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    m = int(math.ceil(margin))
    if m > 0:
        # Only the edge against the black fill erodes: outside the canvas counts as valid.
        valid2 = cv2.erode(
            valid2, np.ones((2 * m + 1, 2 * m + 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=255
        )
    valid1 = cv2.warpAffine(
        valid2, np.linalg.inv(H)[:2], (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return img2, valid1, valid2


def cases(angles: list[float], scales: list[float]) -> list[tuple[str, float, float]]:
    """(name, angle, scale) of every case."""
    return [(f"rot {a:g}", a, 1.0) for a in angles] + [(f"scale {s:g}", 0.0, s) for s in scales]


# --------------------------------------------------------------------------- photos
def select_photos(root: Path, holdout: int | None = None, every: int = 1, limit: int | None = None) -> list[Path]:
    """Photos under ``root``: the ``holdout`` with the smallest training-split hash, or every
    ``every``-th of the sorted paths, at most ``limit``."""
    files = list_images(root)
    if not files:
        raise ValueError(f"no images under {root}")
    if holdout:
        files = sorted(files, key=lambda p: holdout_hash(p.relative_to(root).as_posix()))[:holdout]
        files = sorted(files, key=lambda p: p.relative_to(root).as_posix())
    else:
        files = files[:: max(1, every)]
    return files[:limit] if limit else files


def load_gray(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    if size is not None:
        h, w = size
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if w * h < img.size else cv2.INTER_LINEAR)
    return img


# --------------------------------------------------------------------------- evaluation
def evaluate(
    det: Detector, photos: list[np.ndarray], case_list, k: int, margin: float, desc: str = ""
) -> dict[str, Any]:
    """Per case: mean rep@3, rep@1, localisation error (px) and keypoints over the photos."""
    per: dict[str, list[dict[str, float]]] = {c[0]: [] for c in case_list}
    times = []
    for gray in progress(photos, desc=desc or det.label):
        h, w = gray.shape
        pool1 = det.raw_detect(gray, k)
        for name, angle, scale in case_list:
            H = centre_transform((w, h), angle, scale)
            img2, valid1, valid2 = warp_case(gray, H, margin)
            d1 = det.detect(gray, k, valid=valid1, pool=pool1)
            d2 = det.detect(img2, k, valid=valid2)
            times.append(d2.ms)
            r3 = repeatability(d1.xy, d2.xy, H, (w, h), (w, h), eps=3.0)
            r1 = repeatability(d1.xy, d2.xy, H, (w, h), (w, h), eps=1.0)
            per[name].append(
                {
                    "rep@3": r3.repeatability,
                    "rep@1": r1.repeatability,
                    "loc_err": r3.loc_error,
                    "n": (len(d1.xy) + len(d2.xy)) / 2,
                }
            )
    out: dict[str, Any] = {"cases": {}, "ms_per_image": float(np.median(times)) if times else float("nan")}
    for name, rows in per.items():
        out["cases"][name] = {
            key: float(np.nanmean([r[key] for r in rows])) if any(np.isfinite(r[key]) for r in rows) else float("nan")
            for key in ("rep@3", "rep@1", "loc_err", "n")
        }
        out["cases"][name]["per_photo_rep@3"] = [r["rep@3"] for r in rows]
    return out


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    names = [c[0] for c in s["cases"]]
    lines = [
        f"Rotation and scale sweep on {s['data']} ({s['photos']} photos, {s['selection']}), K={s['k']}, "
        f"protocol: {s['protocol_text']}; copies on the same canvas about the centre, detections within "
        f"{s['margin']:g} px of the fill ignored, both images restricted to their shared area.",
    ]
    for key, title, fmt in (
        ("rep@3", "repeatability @3 px", "{:.3f}"),
        ("rep@1", "repeatability @1 px", "{:.3f}"),
        ("loc_err", "localisation error (px) of points repeated @3 px", "{:.2f}"),
    ):
        lines += ["", f"{title}:", "", "| detector | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for det, r in results["detectors"].items():
            lines.append(f"| {det} | " + " | ".join(fmt.format(r["cases"][n][key]) for n in names) + " |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    s = results["settings"]
    rot = [(n, a) for n, a, sc in s["cases"] if sc == 1.0 and a != 0.0]
    scl = [(n, sc) for n, a, sc in s["cases"] if a == 0.0 and sc != 1.0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for det, r in results["detectors"].items():
        if rot:
            axes[0].plot(
                [0] + [a for _, a in rot], [1.0] + [r["cases"][n]["rep@3"] for n, _ in rot], marker="o", label=det
            )
        if scl:
            pts = sorted([(1.0, 1.0)] + [(sc, r["cases"][n]["rep@3"]) for n, sc in scl])
            axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=det)
    axes[0].set_xlabel("rotation (degrees)")
    axes[1].set_xlabel("scale")
    axes[1].set_xscale("log", base=2)
    for ax in axes:
        ax.set_ylabel(f"repeatability @3 px (K={s['k']})")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{s['data']} ({s['photos']} photos); the point at 0 degrees / scale 1 is the identity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from exc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", help="folder of photos (searched recursively)")
    p.add_argument("--model", action="append", help="kpnet model file (repeatable)")
    p.add_argument(
        "--baselines", default="orb,fast,gftt,harris,sift", help=f"comma-separated from: {baseline_choices()}"
    )
    p.add_argument("-k", "--k", dest="k", type=int, default=300, help="keypoints per image (default 300)")
    p.add_argument(
        "--angles", default=",".join(f"{a:g}" for a in ANGLES), help="rotations in degrees (default 15,30,45,90,180)"
    )
    p.add_argument("--scales", default=",".join(f"{s:g}" for s in SCALES), help="scale factors (default 0.5,0.7,1.5,2)")
    p.add_argument(
        "--holdout", type=int, help="use the N photos with the smallest training-split hash (held out of training)"
    )
    p.add_argument("--every", type=int, default=1, help="every E-th photo of the sorted paths (without --holdout)")
    p.add_argument("--limit", type=int, help="at most this many photos")
    p.add_argument("--size", help="resize every photo to HEIGHTxWIDTH first (default: native size)")
    p.add_argument(
        "--margin",
        type=float,
        default=8.0,
        help="ignore detections within this many px of a copy's black fill (default 8)",
    )
    add_protocol_args(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", help="folder caching raw detections of the slow detectors (teachers)")
    p.add_argument("--out", default="runs/invariance")
    a = p.parse_args(argv)
    names = list(a.model or []) + [b for b in a.baselines.split(",") if b]
    bad = [b for b in a.baselines.split(",") if b and not known_baseline(b)]
    if bad:
        p.error(f"unknown baselines {bad}; choose from: {baseline_choices()}")
    try:
        proto = Protocol.from_args(a)
        size = parse_hw(a.size, "--size") if a.size else None
        angles, scales = _floats(a.angles, "--angles"), _floats(a.scales, "--scales")
        if any(s <= 0 for s in scales):
            raise ValueError(f"--scales must be > 0, got {a.scales}")
    except ValueError as exc:
        p.error(str(exc))
    t_start = time.perf_counter()
    try:
        root = Path(a.data)
        files = select_photos(root, a.holdout, a.every, a.limit)
        photos = [load_gray(f, size) for f in files]
        case_list = cases(angles, scales)
        selection = (
            f"--holdout {a.holdout}" if a.holdout else f"every {a.every}" + (f", limit {a.limit}" if a.limit else "")
        )
        results: dict[str, Any] = {
            "settings": {
                "data": str(a.data),
                "photos": len(files),
                "files": [f.relative_to(root).as_posix() for f in files],
                "selection": selection,
                "size": a.size,
                "k": a.k,
                "cases": case_list,
                "margin": a.margin,
                "protocol": proto.to_dict(),
                "protocol_text": proto.describe(),
                "threads": a.threads,
            },
            "detectors": {},
        }
        for name in names:
            det = build_detector(name, proto, threads=a.threads, cache_dir=Path(a.cache) if a.cache else None)
            t0 = time.perf_counter()
            results["detectors"][det.label] = evaluate(det, photos, case_list, a.k, a.margin)
            r = results["detectors"][det.label]
            r["wall_s"] = time.perf_counter() - t0
            print(
                f"  {det.label}: "
                + "  ".join(f"{n} {v['rep@3']:.2f}" for n, v in r["cases"].items())
                + f"  ({r['wall_s']:.0f} s)",
                flush=True,
            )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results["wall_s"] = time.perf_counter() - t_start
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    print()
    print(text)
    (out / "invariance.json").write_text(json.dumps(results, indent=1))
    (out / "invariance.md").write_text(text + "\n")
    made = plot(results, out / "invariance.png")
    print(
        f"\nwrote {out / 'invariance.json'}, {out / 'invariance.md'}"
        + (f", {out / 'invariance.png'}" if made else "")
        + f" in {results['wall_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
