"""A minimal visual-odometry front end: detect, track with pyramidal Lucas-Kanade, reject
outliers with the fundamental matrix, replenish. Used by ``examples/track.py`` and by the
temporal-stability benchmark (``benchmarks/stability.py``).

Detectors plug in as functions ``(gray uint8 HxW, mask uint8 HxW | None, k) -> xy float32
[N, 2]``; :func:`make_detector` builds them for kpnet models and for OpenCV's GFTT, FAST
and ORB, so the same loop compares them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

DetectFn = Callable[[np.ndarray, "np.ndarray | None", int], np.ndarray]
#: Classical detectors available to the front end (built by :func:`kpnet.baselines.make_classical`).
CLASSICAL = ("gftt", "fast", "orb")


def make_detector(
    name: str, *, nms_radius: int = 4, grid: tuple[int, int] = (8, 10), threads: int | None = None
) -> DetectFn:
    """A detect function: 'gftt', 'fast', 'orb' (OpenCV, from :mod:`kpnet.baselines`, spaced
    by greedy suppression to ``nms_radius`` px), or a kpnet model path (grid distribution)."""
    if name in CLASSICAL:
        from .baselines import make_classical
        from .selection import greedy_suppress

        made: dict[int, Callable] = {}

        def classical(gray, mask, k):
            k = max(1, int(k))
            pool = 4 * k  # a generous pool, then the same spacing rule for every detector
            if pool not in made:
                made[pool] = make_classical(name, pool)
            xy, scores = made[pool](gray, mask)
            keep = greedy_suppress(xy, scores, float(nms_radius))[:k]
            return xy[keep].astype(np.float32).reshape(-1, 2)

        return classical
    from .detector import KeypointDetector

    detector = KeypointDetector(name, nms_radius=nms_radius, grid=grid, threads=threads)

    def kpnet(gray, mask, k):
        # The budget varies with the number of live tracks: a per-call override.
        return detector.detect(gray, mask=mask, max_keypoints=max(1, int(k))).xy

    return kpnet


def track_points(
    prev: np.ndarray, cur: np.ndarray, pts: np.ndarray, *, win: int = 21, levels: int = 3, fb_threshold: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Pyramidal LK from ``prev`` to ``cur`` with a forward-backward check.

    Returns the tracked points float32 [N, 2] and bool [N], True where the point was found
    both ways and came back within ``fb_threshold`` pixels."""
    if len(pts) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, bool)
    p0 = pts.reshape(-1, 1, 2).astype(np.float32)
    lk = dict(winSize=(win, win), maxLevel=levels, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **lk)
    p0r, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **lk)
    fb = np.linalg.norm((p0 - p0r).reshape(-1, 2), axis=1)
    h, w = cur.shape[:2]
    p1 = p1.reshape(-1, 2)
    inside = (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1)
    good = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < fb_threshold) & inside
    return p1, good


@dataclass(frozen=True)
class TrackerConfig:
    """Front-end settings. Distances in pixels."""

    max_tracks: int = 500
    min_tracks: int = 300
    mask_radius: int = 10
    fb_threshold: float = 1.0
    ransac_threshold: float = 1.0
    lk_window: int = 21
    lk_levels: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.min_tracks <= self.max_tracks:
            raise ValueError(f"need 0 < min_tracks <= max_tracks, got {self.min_tracks} and {self.max_tracks}")
        if self.mask_radius < 0 or self.fb_threshold <= 0 or self.ransac_threshold <= 0:
            raise ValueError("mask_radius must be >= 0 and the thresholds > 0")


@dataclass
class FrameStats:
    index: int
    tracked: int  # tracks that survived from the previous frame
    lost: int  # tracks that ended at this frame
    new: int  # tracks started at this frame
    live: int
    ms_detect: float
    ms_track: float


@dataclass
class FrontEnd:
    """Detect -> LK track -> fundamental-matrix RANSAC -> replenish, frame by frame."""

    detect: DetectFn
    config: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self) -> None:
        self.prev: np.ndarray | None = None
        self.pts = np.zeros((0, 2), np.float32)
        self.ids = np.zeros(0, np.int64)
        self.ages = np.zeros(0, np.int64)  # frames each live track has been followed
        self.history: dict[int, list[tuple[int, float, float]]] = {}
        self.ended_lengths: list[int] = []
        self._next = 0
        self._frame = -1

    def process(self, frame: np.ndarray) -> FrameStats:
        """Advance by one frame (BGR or gray uint8)."""
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        self._frame += 1
        c = self.config
        t0 = time.perf_counter()
        tracked = lost = 0
        if self.prev is not None and len(self.pts):
            p1, good = track_points(
                self.prev, gray, self.pts, win=c.lk_window, levels=c.lk_levels, fb_threshold=c.fb_threshold
            )
            if good.sum() >= 8:
                _, inl = cv2.findFundamentalMat(self.pts[good], p1[good], cv2.FM_RANSAC, c.ransac_threshold, 0.999)
                if inl is not None:
                    g = np.flatnonzero(good)
                    good[g[inl.ravel() == 0]] = False
            lost = int((~good).sum())
            self.ended_lengths += (self.ages[~good] + 1).tolist()
            self.pts, self.ids, self.ages = p1[good], self.ids[good], self.ages[good] + 1
            tracked = len(self.pts)
        t1 = time.perf_counter()
        new = 0
        if len(self.pts) < c.min_tracks:
            mask = np.full(gray.shape, 255, np.uint8)
            for x, y in self.pts:
                cv2.circle(mask, (int(round(x)), int(round(y))), c.mask_radius, 0, -1)
            xy = self.detect(gray, mask, c.max_tracks - len(self.pts))
            new = len(xy)
            ids = np.arange(self._next, self._next + new)
            self._next += new
            self.pts = np.concatenate([self.pts, xy.astype(np.float32)])
            self.ids = np.concatenate([self.ids, ids])
            self.ages = np.concatenate([self.ages, np.zeros(new, np.int64)])
        t2 = time.perf_counter()
        for i, (x, y) in zip(self.ids, self.pts):
            self.history.setdefault(int(i), []).append((self._frame, float(x), float(y)))
        self.prev = gray
        return FrameStats(self._frame, tracked, lost, new, len(self.pts), (t2 - t1) * 1e3, (t1 - t0) * 1e3)

    def track_lengths(self) -> np.ndarray:
        """Lengths (frames) of every track, ended or still live."""
        return np.array(self.ended_lengths + (self.ages + 1).tolist(), np.int64)

    def draw(self, frame: np.ndarray, tail: int = 10) -> np.ndarray:
        """BGR frame with live tracks and their last ``tail`` positions."""
        img = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame.copy()
        for i, age in zip(self.ids, self.ages):
            h = self.history[int(i)][-tail:]
            pts = np.array([(x, y) for _, x, y in h], np.int32)
            colour = (0, 255, 0) if age >= 5 else (0, 200, 255)
            if len(pts) > 1:
                cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, colour, 1, cv2.LINE_AA)
            cv2.circle(img, tuple(int(v) for v in pts[-1]), 2, colour, -1, cv2.LINE_AA)
        return img


def redetection_rate(
    prev: np.ndarray, cur: np.ndarray, xy_prev: np.ndarray, xy_cur: np.ndarray, radius: float = 2.0
) -> float:
    """Fraction of ``xy_prev`` whose LK-tracked position (forward-backward checked) has a
    detection of the next frame within ``radius`` px; points lost by LK count as failures."""
    if len(xy_prev) == 0:
        return 0.0
    p1, good = track_points(prev, cur, xy_prev)
    if len(xy_cur) == 0 or not good.any():
        return 0.0
    d = np.linalg.norm(p1[good][:, None] - xy_cur[None], axis=-1).min(axis=1)
    return float((d <= radius).sum() / len(xy_prev))
