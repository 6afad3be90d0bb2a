"""Calibration of a model's default decoding thresholds (run by ``python -m export.onnx``).

A covered lens, a blank wall or sensor noise must give no keypoints, as FAST and ORB give
none; textured frames must keep their budget. Two defaults are measured on the exported model
and stored in its metadata (``kpnet_decode_defaults``), with the figures
(``kpnet_calibration``):

- ``min_contrast`` (grey levels): 1.25 x the highest local contrast
  (:func:`kpnet.postprocess.cell_contrast`) of low-amplitude sensor-noise frames (uniform
  +/-4 grey levels, Gaussian sigma 2, at dark, mid and bright levels). The network normalises
  every frame by its own contrast, so it sees such noise as strong texture and scores it like
  a photo (0.2-0.4 for the shipped models); no probability threshold separates the two, so the
  noise is gated by its contrast, which averages out over 4x4-pixel cells.
- ``threshold`` (probability): 1.25 x the highest score deep inside flat regions of textured
  frames (the built-in synthetic frames and ``examples/astronaut.jpg``, each with a uniform
  rectangle over its middle half at its mean grey level; points within ``FLAT_MARGIN`` px of
  the rectangle's edge are real corners and do not count): a blank wall in view never scores
  above it. A frame that is flat everywhere is a different input: normalised by its own
  contrast it becomes all zeros, and a network trained with ignored padding (the corners of
  rotated views) may score it high (0.095 for the v4 fast candidate, against 0.019 median /
  0.037 max inside flat regions of photos). Such frames have zero local contrast, so the
  contrast floor already removes every cell of them; their score is still measured and
  reported (``max_score_blank_uniform``), and the null-frame check below proves the two
  defaults together give no keypoints on them.

Then every null frame is checked to give zero keypoints and the textured frames' kept counts
are recorded (synthetic shape and texture scenes, ``examples/astronaut.jpg``, and photos from
``--calib-dir`` when given).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

MARGIN = 1.25
FLAT_MARGIN = 16  # px: points this close to a flat rectangle's edge are corners of the rectangle
CALIB_BUDGET = 1000
REPO_SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"


def null_frames(hw: tuple[int, int] = (480, 640), seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(blank and uniform frames, sensor-noise frames), uint8 HxW."""
    rng = np.random.default_rng(seed)
    h, w = hw
    flat = {f"uniform {v}": np.full((h, w), v, np.uint8) for v in (0, 60, 128, 200, 255)}
    noise = {}
    for level in (20, 128, 235):
        noise[f"noise +/-4 at {level}"] = np.clip(level + rng.integers(-4, 5, (h, w)), 0, 255).astype(np.uint8)
    noise["noise sigma 2 at 128"] = np.clip(128 + np.rint(rng.normal(0, 2, (h, w))), 0, 255).astype(np.uint8)
    noise["noise sigma 2 at 40"] = np.clip(40 + np.rint(rng.normal(0, 2, (h, w))), 0, 255).astype(np.uint8)
    return flat, noise


def textured_frames(hw: tuple[int, int] = (480, 640), seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic frames textured everywhere, uint8 HxW: random shapes, and blurred noise."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = hw
    shapes = np.full((h, w), 110, np.uint8)
    for _ in range(1500):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        g = int(rng.integers(0, 256))
        if rng.random() < 0.5:
            cv2.rectangle(shapes, (x, y), (x + int(rng.integers(4, 30)), y + int(rng.integers(4, 30))), g, -1)
        else:
            cv2.circle(shapes, (x, y), int(rng.integers(2, 12)), g, -1)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (h, w)).astype(np.float32), (0, 0), 2.0)
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return {"synthetic shapes": shapes, "synthetic texture": tex}


def with_flat_middle(img: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``img`` with its middle half (a quarter of the area) set to the image's mean grey level;
    returns the frame and the rectangle (x0, y0, x1, y1) shrunk by :data:`FLAT_MARGIN`."""
    h, w = img.shape
    y0, y1, x0, x1 = h // 4, 3 * h // 4, w // 4, 3 * w // 4
    out = img.copy()
    out[y0:y1, x0:x1] = int(round(float(img.mean())))
    return out, (x0 + FLAT_MARGIN, y0 + FLAT_MARGIN, x1 - FLAT_MARGIN, y1 - FLAT_MARGIN)


def _max_score_inside(det: Any, img: np.ndarray, box: tuple[int, int, int, int]) -> float:
    h, w = img.shape
    k = det.detect(img, max_keypoints=h * w)  # every local maximum
    xy, s = np.asarray(k.xy), np.asarray(k.scores)
    x0, y0, x1, y1 = box
    inside = (xy[:, 0] > x0) & (xy[:, 0] < x1) & (xy[:, 1] > y0) & (xy[:, 1] < y1)
    return float(s[inside].max()) if inside.any() else 0.0


def _photos(calib_dir: str | Path | None, num: int, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    import cv2

    from kpnet.io import list_images

    out = {}
    paths = [REPO_SAMPLE] if REPO_SAMPLE.is_file() else []
    if calib_dir is not None:
        paths += list_images(calib_dir, limit=num)
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            out[str(p)] = cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return out


def calibrate(
    model_path: str | Path, *, calib_dir: str | Path | None = None, calib_num: int = 200, budget: int = CALIB_BUDGET
) -> dict[str, Any]:
    """Measure the defaults on ``model_path`` (an exported .onnx). Returns
    {"defaults": {"threshold", "min_contrast"}, "figures": {...}} (JSON-serialisable)."""
    from kpnet import KeypointDetector
    from kpnet.postprocess import cell_contrast

    det = KeypointDetector(model_path, max_keypoints=budget, threshold=0.0, min_contrast=0.0, nms_radius=4, border=4)
    # Null frames at the model's nominal size run unresized: the worst case (larger frames are
    # shrunk, which averages noise away; smaller ones are never enlarged by default).
    flat, noise = null_frames(det.input_size)
    frame_hw = (480, 640)
    flat_max = 0.0
    for img in flat.values():
        k = det.detect(img)
        flat_max = max(flat_max, float(k.scores[0]) if len(k) else 0.0)
    noise_contrast, noise_score = 0.0, 0.0
    for img in noise.values():
        p = det.prepare(img)
        noise_contrast = max(noise_contrast, float(cell_contrast(p.batch[0, 0]).max()))
        k = det.detect(img)
        noise_score = max(noise_score, float(k.scores[0]) if len(k) else 0.0)
    builtin = {**textured_frames(frame_hw), **_photos(None, 0, frame_hw)}  # synthetic + astronaut.jpg
    region_max = 0.0
    for img in builtin.values():
        region_max = max(region_max, _max_score_inside(det, *with_flat_middle(img)))
    threshold = min(0.5, math.ceil(MARGIN * region_max * 1000) / 1000)
    min_contrast = math.ceil(MARGIN * noise_contrast * 100) / 100
    null_counts = {
        name: len(det.detect(img, threshold=threshold, min_contrast=min_contrast))
        for name, img in {**flat, **noise}.items()
    }
    kept = {}
    for name, img in {**builtin, **_photos(calib_dir, calib_num, frame_hw)}.items():
        before = len(det.detect(img))
        after = len(det.detect(img, threshold=threshold, min_contrast=min_contrast))
        kept[name] = [after, before]
    det.close()
    synth = [v for k, v in kept.items() if k.startswith("synthetic")]
    photos = [v for k, v in kept.items() if not k.startswith("synthetic")]
    figures = {
        "null_frame_size": list(det.input_size),
        "textured_frame_size": list(frame_hw),
        "budget": budget,
        "max_score_flat_region": round(region_max, 5),
        "max_score_blank_uniform": round(flat_max, 5),
        "max_score_noise": round(noise_score, 5),
        "max_contrast_noise": round(noise_contrast, 4),
        "keypoints_on_null_frames": null_counts,
        "kept_on_textured": {
            k: f"{a}/{b}" for k, (a, b) in kept.items() if k.startswith("synthetic") or k == str(REPO_SAMPLE)
        },
        "photos": len(photos),
        "photos_mean_kept_fraction": round(float(np.mean([a / max(b, 1) for a, b in photos])), 4) if photos else None,
        "photos_median_kept": int(np.median([a for a, _ in photos])) if photos else None,
        "synthetic_mean_kept_fraction": round(float(np.mean([a / max(b, 1) for a, b in synth])), 4),
    }
    return {"defaults": {"threshold": threshold, "min_contrast": min_contrast}, "figures": figures}


def describe(result: dict[str, Any]) -> str:
    d, f = result["defaults"], result["figures"]
    null = f["keypoints_on_null_frames"]
    lines = [
        f"calibrated defaults: threshold {d['threshold']} (flat regions inside textured frames score at most "
        f"{f['max_score_flat_region']}; whole blank/uniform frames {f['max_score_blank_uniform']}, removed by the contrast floor), "
        f"min_contrast {d['min_contrast']} grey levels (sensor noise reaches {f['max_contrast_noise']}; it scores up to {f['max_score_noise']})",
        f"  keypoints on {len(null)} blank/uniform/noise frames: {sum(null.values())} in all ({'OK' if sum(null.values()) == 0 else 'NOT ZERO'})",
        "  kept of the budget on textured frames: "
        + ", ".join(f"{k.split('/')[-1]} {v}" for k, v in f["kept_on_textured"].items()),
    ]
    if f["photos"]:
        lines.append(
            f"  {f['photos']} photos: mean kept fraction {f['photos_mean_kept_fraction']}, median kept {f['photos_median_kept']} of {f['budget']}"
        )
    return "\n".join(lines)
