"""The one factory of classical OpenCV detectors, with one fixed set of settings.

Every benchmark (accuracy, invariance, stability, pose, latency) and ``kpnet.tracking`` build
FAST, GFTT, Harris, ORB and SIFT here, so they all compare against the same baselines.
Detectors return their RAW output sorted by score; spacing and the budget (suppression by
score, top-k or grid bucketing) are the caller's job, e.g. with :mod:`kpnet.selection`, so
that every detector, learned or classical, passes the same selection.

Settings (fixed; OpenCV's defaults unless a reason is given):

=======  ==========================================================================================
orb      ``cv2.ORB_create(nfeatures=max_keypoints, scaleFactor=1.2, nlevels=8, edgeThreshold=31,
         fastThreshold=20, scoreType=HARRIS)``; score = Harris response at the keypoint's level;
         the same corner can come back at several pyramid levels (duplicates).
fast     ``cv2.FastFeatureDetector_create(threshold=10, nonmaxSuppression=True, type=9_16)``;
         score = FAST response; the ``max_keypoints`` strongest.
gftt     ``cv2.goodFeaturesToTrackWithQuality(maxCorners=max_keypoints, qualityLevel=0.001,
         minDistance=1, blockSize=3, gradientSize=3)``: Shi-Tomasi minimum eigenvalue, 3x3
         local maxima; minDistance 1 leaves spacing to the caller; score = the eigenvalue.
harris   as gftt with ``useHarrisDetector=True, k=0.04``; score = Harris response.
sift     ``cv2.SIFT_create(nfeatures=max_keypoints)`` (3 layers per octave, contrastThreshold
         0.04, edgeThreshold 10, sigma 1.6); score = DoG response; a point with several
         orientations comes back several times (duplicates).
=======  ==========================================================================================

Coordinates: (x, y) pixels of the input image, pixel centres at integers (OpenCV's).
"""

from __future__ import annotations

from typing import Callable, Optional

import cv2
import numpy as np

__all__ = ["CLASSICAL", "SETTINGS", "ClassicalDetect", "make_classical"]

CLASSICAL: tuple[str, ...] = ("orb", "fast", "gftt", "harris", "sift")

#: The fixed settings of each detector (what the benchmarks record next to their results).
SETTINGS: dict[str, dict[str, object]] = {
    "orb": {
        "scaleFactor": 1.2,
        "nlevels": 8,
        "edgeThreshold": 31,
        "fastThreshold": 20,
        "scoreType": "HARRIS",
        "nfeatures": "max_keypoints",
    },
    "fast": {"threshold": 10, "nonmaxSuppression": True, "type": "9_16"},
    "gftt": {"qualityLevel": 0.001, "minDistance": 1, "blockSize": 3, "gradientSize": 3, "useHarrisDetector": False},
    "harris": {
        "qualityLevel": 0.001,
        "minDistance": 1,
        "blockSize": 3,
        "gradientSize": 3,
        "useHarrisDetector": True,
        "k": 0.04,
    },
    "sift": {
        "nfeatures": "max_keypoints",
        "nOctaveLayers": 3,
        "contrastThreshold": 0.04,
        "edgeThreshold": 10,
        "sigma": 1.6,
    },
}

#: ``(gray uint8 [H, W], mask uint8 [H, W] | None) -> (xy float32 [N, 2], scores float32 [N])``,
#: sorted by score descending, at most ``max_keypoints`` points.
ClassicalDetect = Callable[..., "tuple[np.ndarray, np.ndarray]"]


def _sorted(xy: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    xy = np.asarray(xy, np.float32).reshape(-1, 2)
    scores = np.asarray(scores, np.float32).reshape(-1)
    order = np.lexsort((np.arange(scores.size), -scores.astype(np.float64)))[:k]
    return np.ascontiguousarray(xy[order]), np.ascontiguousarray(scores[order])


def _from_cv(kps, k: int) -> tuple[np.ndarray, np.ndarray]:
    if not kps:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    xy = np.array([p.pt for p in kps], np.float32)
    return _sorted(xy, np.array([p.response for p in kps], np.float32), k)


def _check_gray(gray: np.ndarray) -> None:
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8 or gray.size == 0:
        got = f"{gray.dtype} array of shape {gray.shape}" if isinstance(gray, np.ndarray) else type(gray).__name__
        raise ValueError(f"classical detectors take a non-empty gray uint8 [H, W] image, got {got}")


def make_classical(name: str, max_keypoints: int) -> ClassicalDetect:
    """A classical detector ``fn(gray, mask=None) -> (xy, scores)`` with the fixed settings.

    Args:
        name: one of :data:`CLASSICAL`.
        max_keypoints: at most this many keypoints, the strongest (>= 1). Ask for a generous
            pool when the caller suppresses afterwards.

    Returns:
        ``fn(gray uint8 [H, W], mask uint8 [H, W] | None = None)`` returning xy float32 [N, 2]
        (pixels) and scores float32 [N], sorted by score descending; raw output, no spacing
        beyond the detector's own.
    """
    if name not in CLASSICAL:
        raise ValueError(f"unknown classical detector {name!r}; choose from: {', '.join(CLASSICAL)}")
    if not isinstance(max_keypoints, (int, np.integer)) or isinstance(max_keypoints, bool) or max_keypoints < 1:
        raise ValueError(f"max_keypoints must be an int >= 1, got {max_keypoints!r}")
    k = int(max_keypoints)

    if name in ("gftt", "harris"):
        s = SETTINGS[name]

        def gftt(gray: np.ndarray, mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
            _check_gray(gray)
            pts, quality = cv2.goodFeaturesToTrackWithQuality(
                gray,
                k,
                s["qualityLevel"],
                s["minDistance"],
                mask,
                blockSize=s["blockSize"],
                gradientSize=s["gradientSize"],
                useHarrisDetector=s["useHarrisDetector"],
                k=float(s.get("k", 0.04)),
            )
            if pts is None or len(pts) == 0:
                return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
            return _sorted(pts, quality, k)

        return gftt

    if name == "orb":
        det = cv2.ORB_create(
            nfeatures=k, scaleFactor=1.2, nlevels=8, edgeThreshold=31, fastThreshold=20, scoreType=cv2.ORB_HARRIS_SCORE
        )
    elif name == "fast":
        det = cv2.FastFeatureDetector_create(
            threshold=10, nonmaxSuppression=True, type=cv2.FAST_FEATURE_DETECTOR_TYPE_9_16
        )
    else:
        det = cv2.SIFT_create(nfeatures=k, nOctaveLayers=3, contrastThreshold=0.04, edgeThreshold=10, sigma=1.6)

    def classical(gray: np.ndarray, mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        _check_gray(gray)
        return _from_cv(det.detect(gray, mask), k)

    classical.__name__ = name
    return classical
