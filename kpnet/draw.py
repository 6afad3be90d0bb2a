"""Drawing keypoints for visual checks (OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

from .types import Keypoints


def _score_colours(scores: np.ndarray, lo: float, hi: float) -> np.ndarray:
    rel = (scores - lo) / max(hi - lo, 1e-12)
    return cv2.applyColorMap((np.clip(rel, 0, 1) * 255).astype(np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]


def draw_legend(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Draw the colour bar (blue = ``lo`` ... red = ``hi`` probability) at the bottom left, in place."""
    h, w = img.shape[:2]
    bw, bh = max(40, min(160, w // 4)), max(6, min(12, h // 30))
    x0, y0 = 6, h - bh - 6
    if x0 + bw + 6 > w or y0 < 14:
        return img
    bar = cv2.applyColorMap(np.tile(np.linspace(0, 255, bw).astype(np.uint8), (bh, 1)), cv2.COLORMAP_JET)
    img[y0 : y0 + bh, x0 : x0 + bw] = bar
    scale = 0.35 if h < 300 else 0.45
    for text, x in ((f"{lo:.2f}", x0), (f"{hi:.2f} score", x0 + bw - 8)):
        cv2.putText(img, text, (x, y0 - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (x, y0 - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def draw_keypoints(image: np.ndarray, kps: Keypoints, radius: int = 3, legend: bool = True) -> np.ndarray:
    """BGR uint8 copy of ``image`` with keypoints drawn, coloured by score from blue (the lowest
    score shown) to red (the highest), and (``legend``) a colour bar stating that range."""
    img = image
    if img.dtype != np.uint8:
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    else:
        img = img.copy()
    kps = kps.numpy()
    lo, hi = (float(kps.scores.min()), float(kps.scores.max())) if len(kps) else (0.0, 1.0)
    if len(kps):
        for (x, y), c in zip(kps.xy, _score_colours(kps.scores, lo, hi)):
            cv2.circle(img, (int(round(x)), int(round(y))), radius, tuple(int(v) for v in c), 1, cv2.LINE_AA)
    if legend:
        draw_legend(img, lo, hi)
    return img
