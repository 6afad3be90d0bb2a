"""Drawing keypoints for visual checks (OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

from .types import Keypoints


def draw_keypoints(image: np.ndarray, kps: Keypoints, radius: int = 3) -> np.ndarray:
    """BGR uint8 copy of ``image`` with keypoints drawn, colour from blue (low) to red (high score)."""
    img = image
    if img.dtype != np.uint8:
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    else:
        img = img.copy()
    if len(kps):
        s = kps.scores
        rel = (s - s.min()) / max(float(s.max() - s.min()), 1e-12)
        colours = cv2.applyColorMap((rel * 255).astype(np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]
        for (x, y), c in zip(kps.xy, colours):
            cv2.circle(img, (int(round(x)), int(round(y))), radius, tuple(int(v) for v in c), 1, cv2.LINE_AA)
    return img
