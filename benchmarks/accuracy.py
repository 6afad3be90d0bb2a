"""Accuracy benchmark on data in the HPatches folder layout.

    python benchmarks/accuracy.py ../shared/data/dev_eval --model models/kpnet-small.onnx
    python benchmarks/accuracy.py HPATCHES_DIR --model A.onnx --model B.onnx --split v --baselines orb,gftt,sift,aliked-n16

Layout: DATA_DIR/SEQ/1.(ppm|png|jpg) ... N.(ext) and DATA_DIR/SEQ/H_1_k, a 3x3 text matrix
mapping image-1 pixels to image-k pixels in the original resolution. Pairs (1, k) are
evaluated after resizing both images to the evaluation size (H adjusted accordingly).

Metrics per detector and keypoint budget K (every detector gets the same K):
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kpnet.metrics import corner_error, mutual_nn_matches, repeatability, warp_points  # noqa: E402

EXTS = (".ppm", ".png", ".jpg", ".jpeg")
CLASSICAL = ("orb", "fast", "gftt", "harris", "sift")
LEARNED = ("aliked-n16", "aliked-t16", "aliked-n32", "superpoint")
DESCRIPTOR = "OpenCV SIFT descriptor at each keypoint, fixed size 12 px, angle 0"
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
            pairs.append(Pair(seq.name, k, cv2.resize(im1, s1, interpolation=cv2.INTER_AREA), cv2.resize(im2, s2, interpolation=cv2.INTER_AREA), Hs / Hs[2, 2]))
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
Detect = Callable[[np.ndarray, int], np.ndarray]  # (gray uint8, K) -> xy float [N, 2]


def _cv_kps_to_xy(kps, k: int) -> np.ndarray:
    kps = sorted(kps, key=lambda p: -p.response)[:k]
    return np.array([p.pt for p in kps], np.float32).reshape(-1, 2)


#: ``aliked-n16-dense``: the teacher's dense score map decoded like kpnet's heatmap (NMS radius,
#: top-k), which is exactly the phase-1 target the student imitates; ``aliked-n16-ha8``: the same
#: map after homographic adaptation over 8 random homographies (``--homographic-adaptation 8``).
TEACHER_MAP = re.compile(r"^(aliked-[a-z0-9]+)-(dense|ha(\d+))$")


def _teacher_map_detector(teacher_name: str, n_ha: int, args: argparse.Namespace) -> Detect:
    import hashlib

    import torch

    from kpnet.config import DecodeConfig
    from kpnet.postprocess import decode
    from training.homography import HomographyConfig, sample_homography
    from training.labels import homographic_adaptation
    from training.teachers import TeacherConfig, build_teacher

    torch.set_num_threads(args.threads)
    teacher = build_teacher(TeacherConfig(name=teacher_name))

    def detect(g: np.ndarray, k: int) -> np.ndarray:
        h, w = g.shape
        x = torch.from_numpy(g.astype(np.float32) / 255.0)[None, None]
        pad_h, pad_w = (-h) % 32, (-w) % 32  # ALIKED needs multiples of 32
        if pad_h or pad_w:
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        size = (w + pad_w, h + pad_h)
        rng = np.random.default_rng(int.from_bytes(hashlib.sha1(g.tobytes()).digest()[:8], "little"))
        hs = [sample_homography(size, HomographyConfig(), rng) for _ in range(n_ha)]
        with torch.inference_mode():
            dense = homographic_adaptation(x, teacher.dense_map, hs)[:h, :w]
        xy, _ = decode(np.ascontiguousarray(dense.numpy(), np.float32), DecodeConfig(max_keypoints=k, nms_radius=args.nms_radius), logits=False)
        return xy

    return detect


def make_detector(name: str, args: argparse.Namespace) -> tuple[str, Detect]:
    """A detector by baseline name or model path."""
    if name == "orb":
        return name, lambda g, k: _cv_kps_to_xy(cv2.ORB_create(nfeatures=k).detect(g, None), k)
    if name == "fast":
        fast = cv2.FastFeatureDetector_create(threshold=10, nonmaxSuppression=True)
        return name, lambda g, k: _cv_kps_to_xy(fast.detect(g, None), k)
    if name in ("gftt", "harris"):
        harris = name == "harris"

        def gftt(g: np.ndarray, k: int) -> np.ndarray:
            pts = cv2.goodFeaturesToTrack(g, maxCorners=k, qualityLevel=0.001, minDistance=args.nms_radius, useHarrisDetector=harris)
            return np.zeros((0, 2), np.float32) if pts is None else pts.reshape(-1, 2)

        return name, gftt
    if name == "sift":
        sift = cv2.SIFT_create()
        return name, lambda g, k: _cv_kps_to_xy(sift.detect(g, None), k)
    m = TEACHER_MAP.match(name)
    if m:
        return name, _teacher_map_detector(m.group(1), int(m.group(3) or 0), args)
    if name.startswith("aliked") or name == "superpoint":
        import torch

        from training.teachers import TeacherConfig, build_teacher

        torch.set_num_threads(args.threads)
        cache: dict[int, Any] = {}

        def teacher(g: np.ndarray, k: int) -> np.ndarray:
            if k not in cache:
                cfg = TeacherConfig(name=name, weights=args.superpoint_weights if name == "superpoint" else None, max_keypoints=k, detection_threshold=0.01 if name != "superpoint" else 0.001)
                cache[k] = build_teacher(cfg)
            x = torch.from_numpy(g.astype(np.float32) / 255.0)[None, None]
            h, w = g.shape
            pad_h, pad_w = (-h) % 32, (-w) % 32  # ALIKED needs multiples of 32
            if pad_h or pad_w:
                x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h))
            f = cache[k].detect(x)[0]
            xy = f.keypoints.numpy()
            return xy[(xy[:, 0] < w) & (xy[:, 1] < h)]

        return name, teacher
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {name} (baselines: {', '.join(CLASSICAL + LEARNED)})")
    from kpnet import KeypointDetector

    dets: dict[int, Any] = {}

    def kp(g: np.ndarray, k: int) -> np.ndarray:
        if k not in dets:
            dets[k] = KeypointDetector(path, max_keypoints=k, nms_radius=args.nms_radius, threads=args.threads, subpixel=args.subpixel)
        return dets[k].detect(g).xy

    return path.name, kp


# --------------------------------------------------------------------------- metrics
_SIFT = None


def describe(gray: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """The shared descriptor: SIFT at each keypoint, fixed size and orientation.
    Returns float32 [N, 128] aligned with ``xy`` (OpenCV keeps every point it is given)."""
    global _SIFT
    if _SIFT is None:
        _SIFT = cv2.SIFT_create()
    kps = [cv2.KeyPoint(float(x), float(y), 12.0, 0.0) for x, y in xy]
    if not kps:
        return np.zeros((0, 128), np.float32)
    kps2, desc = _SIFT.compute(gray, kps)
    if desc is None or len(kps2) != len(kps):
        # OpenCV may drop points too close to the border; re-align by position.
        out = np.zeros((len(kps), 128), np.float32)
        pos = {(round(p.pt[0], 3), round(p.pt[1], 3)): i for i, p in enumerate(kps2)}
        for i, (x, y) in enumerate(xy):
            j = pos.get((round(float(x), 3), round(float(y), 3)))
            if j is not None and desc is not None:
                out[i] = desc[j]
        return out
    return desc.astype(np.float32)


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
    size = tuple(int(v) for v in args.size.lower().split("x"))
    pairs = load_pairs(Path(args.data), size, args.keep_aspect, args.split)
    if args.exposure:
        pairs = [Pair(p.seq, p.k, p.img1, expose(p.img2, args.exposure), p.H) for p in pairs]
    ks = [int(k) for k in args.k.split(",")]
    names = list(args.model or []) + [b for b in args.baselines.split(",") if b]
    results: dict[str, Any] = {"settings": {"data": str(args.data), "size": args.size, "keep_aspect": args.keep_aspect, "split": args.split, "exposure": args.exposure, "K": ks, "nms_radius": args.nms_radius, "subpixel": args.subpixel, "descriptor": DESCRIPTOR, "threads": args.threads, "pairs": len(pairs)}, "detectors": {}}
    for name in names:
        label, det = make_detector(name, args)
        per_k = {}
        for k in ks:
            rows, times = [], []
            det(pairs[0].img1, k)  # warm-up
            for p in pairs:
                t0 = time.perf_counter()
                xy1 = det(p.img1, k)
                times.append(time.perf_counter() - t0)
                xy2 = det(p.img2, k)
                row = evaluate_pair(p, np.asarray(xy1, np.float32), np.asarray(xy2, np.float32))
                row.update(seq=p.seq, pair=f"1-{p.k}")
                rows.append(row)
            keys = [c for c in rows[0] if c not in ("seq", "pair")]
            mean = {c: float(np.nanmean([r[c] for r in rows if np.isfinite(r[c]) or c != "corner_err"])) for c in keys}
            mean["ms_per_image"] = 1e3 * float(np.median(times))
            per_k[str(k)] = {"mean": mean, "pairs": rows}
            print(f"  {label} K={k}: rep@3 {mean['rep@3']:.3f}  H@3 {mean['H@3']:.3f}  ({mean['ms_per_image']:.1f} ms/img)", flush=True)
        results["detectors"][label] = per_k
    return results


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        f"Accuracy on {s['data']} ({s['pairs']} pairs) at {s['size']}{' (keep aspect)' if s['keep_aspect'] else ''}; "
        f"NMS radius {s['nms_radius']} px for kpnet and GFTT/Harris min distance; descriptor for homography accuracy: {s['descriptor']}."
        + (f" Second image of each pair with exposure '{s['exposure']}'." if s.get("exposure") else ""),
        "",
        "| detector | K | rep@1 | rep@3 | rep@5 | loc err (px) | H acc@1 | H acc@3 | H acc@5 | matching score | ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per_k in results["detectors"].items():
        for k, r in per_k.items():
            m = r["mean"]
            lines.append(
                f"| {name} | {k} | {m['rep@1']:.3f} | {m['rep@3']:.3f} | {m['rep@5']:.3f} | {m['loc_err']:.2f} | "
                f"{m['H@1']:.3f} | {m['H@3']:.3f} | {m['H@5']:.3f} | {m['matching_score']:.3f} | {m['ms_per_image']:.1f} |"
            )
    # Per-sequence view: repeatability@3 and corner error at the first K, to see where each detector fails.
    k0 = str(s["K"][0])
    dets = list(results["detectors"])
    seqs = sorted({r["seq"] for d in dets for r in results["detectors"][d][k0]["pairs"]})
    lines += ["", f"Per sequence, K={k0}: repeatability@3 / corner error (px)", "", "| sequence | " + " | ".join(dets) + " |", "|---|" + "---|" * len(dets)]
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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; skipping the plot (pip install matplotlib)")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, per_k in results["detectors"].items():
        for k, r in per_k.items():
            m = r["mean"]
            for ax, key in zip(axes, ("rep@3", "H@3")):
                ax.scatter(m["ms_per_image"], m[key], s=40)
                ax.annotate(f"{name} K={k}", (m["ms_per_image"], m[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
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
    p.add_argument("--baselines", default="orb,fast,gftt,harris,sift,aliked-n16", help=f"comma-separated from: {', '.join(CLASSICAL + LEARNED)}, or TEACHER-dense / TEACHER-haN (e.g. aliked-n16-ha8: the teacher's dense map, homographically adapted over N views, decoded like kpnet)")
    p.add_argument("--k", default="300,1000", help="keypoint budgets (default 300,1000)")
    p.add_argument("--size", default="640x480", help="evaluation WIDTHxHEIGHT (default 640x480)")
    p.add_argument("--keep-aspect", action="store_true", help="fit inside --size keeping the aspect ratio")
    p.add_argument("--split", choices=["i", "v"], help="HPatches illumination (i_*) or viewpoint (v_*) sequences only")
    p.add_argument("--exposure", choices=EXPOSURES, help="change the exposure of the second image of every pair: dark (x0.15), bright (x0.2 + 199) or lowc (contrast x0.15)")
    p.add_argument("--nms-radius", type=int, default=4)
    p.add_argument("--subpixel", action="store_true", help="kpnet models: refine keypoints with the 3x3 quadratic fit (DecodeConfig.subpixel)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--superpoint-weights", help="SuperPoint weights file, needed for the 'superpoint' baseline")
    p.add_argument("--out", default="runs/accuracy")
    a = p.parse_args(argv)
    names = [b for b in a.baselines.split(",") if b]
    bad = [b for b in names if b not in CLASSICAL + LEARNED and not TEACHER_MAP.match(b)]
    if bad:
        p.error(f"unknown baselines {bad}; choose from: {', '.join(CLASSICAL + LEARNED)}")
    if "superpoint" in names and not a.superpoint_weights:
        p.error("the 'superpoint' baseline needs --superpoint-weights PATH (weights are not distributed with kpnet)")
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
