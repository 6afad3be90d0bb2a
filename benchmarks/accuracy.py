"""Accuracy benchmark on data in the HPatches folder layout.

    python benchmarks/accuracy.py ../shared/data/dev_eval --model models/kpnet-small.onnx
    python benchmarks/accuracy.py HPATCHES_DIR --model A.onnx --model B.onnx --split v --baselines orb,gftt,sift,aliked-n16

Layout: DATA_DIR/SEQ/1.(ppm|png|jpg) ... N.(ext) and DATA_DIR/SEQ/H_1_k, a 3x3 text matrix
mapping image-1 pixels to image-k pixels in the original resolution. Pairs (1, k) are
evaluated after resizing both images to the evaluation size (H adjusted accordingly).

Every detector passes the same protocol (``benchmarks/_protocol.py``): a raw candidate pool,
greedy suppression by score (``--suppression-radius``, default 4 px at the evaluation size),
then the same K by top-k (default) or ``--distribution grid`` bucketing. The tables report,
per detector, the fraction of raw keypoints with another within 2 px before suppression;
``--raw-baselines`` gives OpenCV's own raw output instead, labelled ``[raw]``.

Metrics per detector and keypoint budget K:
- repeatability at eps = 1, 3, 5 px (SuperPoint's definition: only points visible in both views)
  and the mean localisation error of repeated points (eps = 3);
- homography accuracy at 1/3/5 px: every detector's keypoints get the SAME descriptor
  (OpenCV SIFT computed at the keypoints with a fixed size), mutual-nearest-neighbour
  matching, RANSAC, and the mean corner error against the true H, so only the detector differs;
- matching score: matches correct under the true H (<= 3 px) / keypoints visible in both views.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _protocol import (  # noqa: E402
    DESCRIPTOR,
    LEARNED,  # noqa: F401  (re-exported: the baseline names)
    Protocol,
    add_protocol_args,
    baseline_choices,
    build_detector,
    describe,
    known_baseline,
    parse_hw,
    progress,
    pyplot,
)

from kpnet.baselines import CLASSICAL  # noqa: E402,F401
from kpnet.metrics import corner_error, mutual_nn_matches, repeatability, warp_points  # noqa: E402

EXTS = (".ppm", ".png", ".jpg", ".jpeg")
EPS_REP = (1.0, 3.0, 5.0)
EPS_H = (1.0, 3.0, 5.0)


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Pair:
    seq: str
    k: int
    img1: np.ndarray  # gray uint8 at eval size
    img2: np.ndarray
    H: np.ndarray  # eval-size image 1 -> eval-size image 2


def _find_image(seq: Path, idx: int) -> Path | None:
    for e in EXTS:
        p = seq / f"{idx}{e}"
        if p.is_file():
            return p
    return None


def _scale_matrix(orig_wh: tuple[int, int], new_wh: tuple[int, int]) -> np.ndarray:
    """Pixel-centre aligned resize: x' = (x + 0.5) * s - 0.5."""
    sx, sy = new_wh[0] / orig_wh[0], new_wh[1] / orig_wh[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)


def _eval_size(wh: tuple[int, int], size: tuple[int, int], keep_aspect: bool) -> tuple[int, int]:
    if not keep_aspect:
        return size
    s = min(size[0] / wh[0], size[1] / wh[1])
    return max(32, int(round(wh[0] * s))), max(32, int(round(wh[1] * s)))


def load_pairs(root: Path, size: tuple[int, int], keep_aspect: bool = False, split: str | None = None) -> list[Pair]:
    """All (1, k) pairs of every sequence under ``root``."""
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    seqs = sorted(p for p in root.iterdir() if p.is_dir())
    if split:
        seqs = [s for s in seqs if s.name.startswith(f"{split}_")]
    pairs = []
    for seq in seqs:
        p1 = _find_image(seq, 1)
        if p1 is None:
            continue
        im1 = cv2.imread(str(p1), cv2.IMREAD_GRAYSCALE)
        for hfile in sorted(seq.glob("H_1_*"), key=lambda p: int(re.sub(r"\D", "", p.name[4:]) or 0)):
            k = int(hfile.name.split("_")[-1])
            pk = _find_image(seq, k)
            if pk is None or im1 is None:
                continue
            im2 = cv2.imread(str(pk), cv2.IMREAD_GRAYSCALE)
            H = np.loadtxt(hfile).reshape(3, 3)
            wh1, wh2 = im1.shape[::-1], im2.shape[::-1]
            s1, s2 = _eval_size(wh1, size, keep_aspect), _eval_size(wh2, size, keep_aspect)
            Hs = _scale_matrix(wh2, s2) @ H @ np.linalg.inv(_scale_matrix(wh1, s1))
            pairs.append(
                Pair(
                    seq.name,
                    k,
                    cv2.resize(im1, s1, interpolation=cv2.INTER_AREA),
                    cv2.resize(im2, s2, interpolation=cv2.INTER_AREA),
                    Hs / Hs[2, 2],
                )
            )
    if not pairs:
        raise ValueError(f"no image pairs found under {root} (expected SEQ/1.ppm|png|jpg, SEQ/k.*, SEQ/H_1_k)")
    return pairs


#: Exposure changes applied to the second image of each pair (``--exposure``), in grey levels:
#: under-exposed (x0.15), bright and washed out (x0.2 + 199), low contrast around the mean (x0.15).
EXPOSURES = ("dark", "bright", "lowc")


def expose(gray: np.ndarray, kind: str) -> np.ndarray:
    """``gray`` uint8 with one of the ``EXPOSURES`` applied (rounded back to uint8)."""
    x = gray.astype(np.float32)
    if kind == "dark":
        y = 0.15 * x
    elif kind == "bright":
        y = 0.2 * x + 199.0
    elif kind == "lowc":
        y = 0.15 * (x - float(x.mean())) + float(x.mean())
    else:
        raise ValueError(f"unknown exposure {kind!r}; choose from: {', '.join(EXPOSURES)}")
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- detectors
#: ``(gray uint8, K) -> xy float32 [N, 2]``: a detector under the shared protocol.
Detect = Callable[[np.ndarray, int], np.ndarray]


def make_detector(name: str, args: argparse.Namespace) -> tuple[str, Detect]:
    """A detector by baseline name or model path, under the shared protocol (``_protocol``).

    Returns its label and ``detect(gray, k) -> xy``; the full :class:`_protocol.Detector`
    (scores, duplicate fraction) is ``detect.detector``."""
    proto = (
        Protocol.from_args(args)
        if hasattr(args, "distribution")
        else Protocol(radius=float(getattr(args, "nms_radius", 4)))
    )
    det = build_detector(
        name,
        proto,
        threads=args.threads,
        subpixel=getattr(args, "subpixel", False),
        superpoint_weights=getattr(args, "superpoint_weights", None),
    )

    def detect(g: np.ndarray, k: int) -> np.ndarray:
        return det.detect(g, k).xy

    detect.detector = det  # type: ignore[attr-defined]
    return det.label, detect


# --------------------------------------------------------------------------- metrics
def evaluate_pair(p: Pair, xy1: np.ndarray, xy2: np.ndarray) -> dict[str, float]:
    size1, size2 = p.img1.shape[::-1], p.img2.shape[::-1]
    out: dict[str, float] = {"n1": float(len(xy1)), "n2": float(len(xy2))}
    for e in EPS_REP:
        r = repeatability(xy1, xy2, p.H, size1, size2, eps=e)
        out[f"rep@{e:g}"] = r.repeatability
        if e == 3.0:
            out["loc_err"] = r.loc_error
            visible = (r.n1 + r.n2) / 2
    d1, d2 = describe(p.img1, xy1), describe(p.img2, xy2)
    m = mutual_nn_matches(d1, d2)
    H_est = None
    correct = 0
    if len(m) >= 4:
        a, b = xy1[m[:, 0]].astype(np.float64), xy2[m[:, 1]].astype(np.float64)
        H_est, _ = cv2.findHomography(a, b, cv2.RANSAC, 3.0, maxIters=5000, confidence=0.9999)
        correct = int((np.linalg.norm(warp_points(a, p.H) - b, axis=1) <= 3.0).sum())
    ce = corner_error(H_est, p.H, size1)
    out["corner_err"] = ce
    for e in EPS_H:
        out[f"H@{e:g}"] = float(ce <= e)
    out["matching_score"] = correct / visible if visible else 0.0
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    h, w = parse_hw(args.size, "--size")
    pairs = load_pairs(Path(args.data), (w, h), args.keep_aspect, args.split)
    if args.exposure:
        pairs = [Pair(p.seq, p.k, p.img1, expose(p.img2, args.exposure), p.H) for p in pairs]
    ks = [int(k) for k in args.k.split(",")]
    proto = Protocol.from_args(args)
    names = list(args.model or []) + [b for b in args.baselines.split(",") if b]
    results: dict[str, Any] = {
        "settings": {
            "data": str(args.data),
            "size": f"{h}x{w}",
            "keep_aspect": args.keep_aspect,
            "split": args.split,
            "exposure": args.exposure,
            "K": ks,
            "protocol": proto.to_dict(),
            "protocol_text": proto.describe(),
            "subpixel": args.subpixel,
            "descriptor": DESCRIPTOR,
            "threads": args.threads,
            "pairs": len(pairs),
        },
        "detectors": {},
    }
    for name in names:
        det = build_detector(
            name, proto, threads=args.threads, subpixel=args.subpixel, superpoint_weights=args.superpoint_weights
        )
        per_k = {}
        for k in ks:
            rows, times = [], []
            det.detect(pairs[0].img1, k)  # warm-up
            for p in progress(pairs, desc=f"{det.label} K={k}"):
                d1 = det.detect(p.img1, k)
                times.append(d1.ms)
                d2 = det.detect(p.img2, k)
                row = evaluate_pair(p, d1.xy, d2.xy)
                row.update(seq=p.seq, pair=f"1-{p.k}", dup2=(d1.dup + d2.dup) / 2)
                rows.append(row)
            keys = [c for c in rows[0] if c not in ("seq", "pair")]
            mean = {c: float(np.nanmean([r[c] for r in rows if np.isfinite(r[c]) or c != "corner_err"])) for c in keys}
            mean["ms_per_image"] = float(np.median(times))
            per_k[str(k)] = {"mean": mean, "pairs": rows}
            print(
                f"  {det.label} K={k}: rep@3 {mean['rep@3']:.3f}  H@3 {mean['H@3']:.3f}  dup@2 {mean['dup2']:.2f}  ({mean['ms_per_image']:.1f} ms/img)",
                flush=True,
            )
        results["detectors"][det.label] = per_k
    return results


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        f"Accuracy on {s['data']} ({s['pairs']} pairs) at {s['size']}{' (keep aspect)' if s['keep_aspect'] else ''}; "
        f"protocol: {s['protocol_text']}; descriptor for homography accuracy: {s['descriptor']}."
        + (f" Second image of each pair with exposure '{s['exposure']}'." if s.get("exposure") else ""),
        "dup@2: fraction of the raw top-K keypoints with another raw keypoint within 2 px (before suppression). "
        "ms/img: detection and selection (median).",
        "",
        "| detector | K | keypoints | dup@2 | rep@1 | rep@3 | rep@5 | loc err (px) | H acc@1 | H acc@3 | H acc@5 | matching score | ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per_k in results["detectors"].items():
        for k, r in per_k.items():
            m = r["mean"]
            lines.append(
                f"| {name} | {k} | {(m['n1'] + m['n2']) / 2:.0f} | {m['dup2']:.2f} | {m['rep@1']:.3f} | {m['rep@3']:.3f} | {m['rep@5']:.3f} | {m['loc_err']:.2f} | "
                f"{m['H@1']:.3f} | {m['H@3']:.3f} | {m['H@5']:.3f} | {m['matching_score']:.3f} | {m['ms_per_image']:.1f} |"
            )
    # Per-sequence view: repeatability@3 and corner error at the first K, to see where each detector fails.
    k0 = str(s["K"][0])
    dets = list(results["detectors"])
    seqs = sorted({r["seq"] for d in dets for r in results["detectors"][d][k0]["pairs"]})
    lines += [
        "",
        f"Per sequence, K={k0}: repeatability@3 / corner error (px)",
        "",
        "| sequence | " + " | ".join(dets) + " |",
        "|---|" + "---|" * len(dets),
    ]
    for seq in seqs:
        cells = []
        for d in dets:
            rows = [r for r in results["detectors"][d][k0]["pairs"] if r["seq"] == seq]
            rep = np.mean([r["rep@3"] for r in rows])
            ce = np.median([r["corner_err"] for r in rows])
            cells.append(f"{rep:.2f} / {ce:.1f}" if np.isfinite(ce) else f"{rep:.2f} / fail")
        lines.append(f"| {seq} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, per_k in results["detectors"].items():
        for k, r in per_k.items():
            m = r["mean"]
            for ax, key in zip(axes, ("rep@3", "H@3")):
                ax.scatter(m["ms_per_image"], m[key], s=40)
                ax.annotate(
                    f"{name} K={k}", (m["ms_per_image"], m[key]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
    for ax, title in zip(axes, ("repeatability @3px", "homography accuracy @3px")):
        ax.set_xscale("log")
        ax.set_xlabel("ms per image (this machine)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", help="folder in HPatches layout")
    p.add_argument("--model", action="append", help="kpnet model file (repeatable)")
    p.add_argument(
        "--baselines",
        default="orb,fast,gftt,harris,sift,aliked-n16",
        help=f"comma-separated from: {baseline_choices()}. TEACHER-dense is the teacher's dense score map, TEACHER-haN the same map homographically adapted over N views; both decoded to 3x3 local maxima and then the shared protocol",
    )
    p.add_argument("--k", default="300,1000", help="keypoint budgets (default 300,1000)")
    p.add_argument("--size", default="480x640", help="evaluation HEIGHTxWIDTH (default 480x640)")
    p.add_argument("--keep-aspect", action="store_true", help="fit inside --size keeping the aspect ratio")
    p.add_argument("--split", choices=["i", "v"], help="HPatches illumination (i_*) or viewpoint (v_*) sequences only")
    p.add_argument(
        "--exposure",
        choices=EXPOSURES,
        help="change the exposure of the second image of every pair: dark (x0.15), bright (x0.2 + 199) or lowc (contrast x0.15)",
    )
    add_protocol_args(p, radius_alias=True)
    p.add_argument("--subpixel", action="store_true", help="kpnet models: refine keypoints with the 3x3 quadratic fit")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--superpoint-weights", help="SuperPoint weights file, needed for the 'superpoint' baseline")
    p.add_argument("--out", default="runs/accuracy")
    a = p.parse_args(argv)
    names = [b for b in a.baselines.split(",") if b]
    bad = [b for b in names if not known_baseline(b)]
    if bad:
        p.error(f"unknown baselines {bad}; choose from: {baseline_choices()}")
    if "superpoint" in names and not a.superpoint_weights:
        p.error("the 'superpoint' baseline needs --superpoint-weights PATH (weights are not distributed with kpnet)")
    try:
        parse_hw(a.size, "--size")
        Protocol.from_args(a)
    except ValueError as exc:
        p.error(str(exc))
    try:
        results = run(a)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    print()
    print(text)
    (out / "accuracy.json").write_text(json.dumps(results, indent=1))
    (out / "accuracy.md").write_text(text + "\n")
    made = plot(results, out / "accuracy.png")
    print(f"\nwrote {out / 'accuracy.json'}, {out / 'accuracy.md'}" + (f", {out / 'accuracy.png'}" if made else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
