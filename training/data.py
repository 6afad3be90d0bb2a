"""Training and validation data built from a label cache.

* :func:`split_indices`: deterministic train/validation split by hashing each source path.
* :class:`Phase1Dataset`: one augmented crop and its target per image.
* :class:`Phase2Dataset`: an augmented crop of an image and of its homography-warped copy,
  the homography between the crops, blob masks of the LightGlue-matched teacher keypoints
  and (for the optional direct term) each view's own target.
* :class:`StepBatchSampler`: the data order, a pure function of (seed, step), sharded
  over processes; it can start at any step, which makes ``--resume`` exact.
* :func:`synthetic_val_pairs`, :func:`rotated_val_pairs` and :func:`dev_eval_pairs`: image
  pairs with known H.

Every sample is a pure function of ``(seed, epoch, index)``: no RNG state has to be saved.
Shapes of a sample (numpy; batched by :func:`collate`): images, targets and masks float32
``[1, H, W]``; valid masks bool ``[1, H, W]``; homographies float64 ``[3, 3]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from kpnet.io import folder_images

from ._deps import require
from .augment import (
    GeometricAug,
    add_noise,
    erode_valid,
    photometric,
    render_view,
    sample_view_transform,
    transform_points,
)
from .cache import CacheEntry, LabelCache, image_seed
from .homography import HomographyConfig, rotation_homography, sample_homography, warp_image
from .masks import binary_mask, blob_mask
from .train_config import TrainConfig


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little") / 2.0**64


def split_indices(sources: Sequence[str], val_fraction: float) -> tuple[list[int], list[int]]:
    """Split cache entries into (train, val) index lists by hashing their source paths.

    An entry is held out when ``hash(path) < val_fraction``. If that selects none while
    ``val_fraction > 0`` and there are at least two entries, the entry with the smallest hash
    is held out, so small caches still validate. Deterministic and independent of order.
    """
    h = [_unit_hash(f"kpnet-val:{s}") for s in sources]
    val = [i for i, v in enumerate(h) if v < val_fraction]
    if not val and val_fraction > 0 and len(sources) >= 2:
        val = [int(np.argmin(h))]
    vset = set(val)
    return [i for i in range(len(sources)) if i not in vset], val


def geometric_aug(config: TrainConfig) -> GeometricAug:
    return GeometricAug(config.scale_range, config.max_rotation_deg, config.perspective, config.upright_prob)


def view_target(kind: str, entry: CacheEntry, M: np.ndarray, crop: tuple[int, int], sigma: float) -> np.ndarray:
    """The label of one view: ``sparse``, ``blob`` or ``dense``, moved by ``M``; float32 ``[H, W]``."""
    cv2 = require("cv2")
    ch, cw = crop
    if kind == "dense":
        if entry.dense is None:
            raise ValueError(f"cache entry {entry.source} has no dense map; use --target sparse or --target blob")
        return cv2.warpPerspective(entry.dense.astype(np.float32), M, (cw, ch), flags=cv2.INTER_LINEAR, borderValue=0)
    pts = transform_points(M, entry.keypoints, crop)
    if kind == "sparse":
        return binary_mask(pts, (cw, ch)).astype(np.float32)
    if kind == "blob":
        return blob_mask(pts, (cw, ch), sigma=sigma)
    raise ValueError(f"unknown target {kind!r}; choose from: sparse, blob, dense")


def padded_points(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of ``points [N, 2]`` padded to float32 ``[k, 2]``, and bool ``[k]`` (real rows)."""
    out = np.zeros((k, 2), np.float32)
    ok = np.zeros(k, bool)
    n = min(k, len(points))
    out[:n] = points[:n]
    ok[:n] = True
    return out, ok


class _CacheDataset:
    """Base: a cache, a seed and the augmentation settings. Indexed by ``(epoch, cache_index)``."""

    def __init__(self, cache: LabelCache, config: TrainConfig) -> None:
        self.cache = cache
        self.config = config
        self.aug = geometric_aug(config)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, self.config.phase, epoch, index])

    def view(self, entry: CacheEntry, M: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        src = (
            photometric(entry.image, rng, extreme=self.config.photometric_extreme)
            if self.config.photometric
            else entry.image
        )
        img, valid = render_view(src, M, self.config.crop, fill=self.config.pad_fill)
        if self.config.photometric:
            img = add_noise(img, valid, rng)
        return img, erode_valid(valid, self.config.valid_erode)


class Phase1Dataset(_CacheDataset):
    """Sample: ``image``, ``target``, ``valid`` (each ``[1, H, W]``); with ``subpixel_weight > 0``
    also ``kpts`` float32 ``[K, 2]`` (the teacher's keypoints in the crop, highest scores first,
    zero-padded) and ``kpts_valid`` bool ``[K]``."""

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, index = key
        rng = self.rng(epoch, index)
        entry = self.cache[index]
        size = (entry.image.shape[1], entry.image.shape[0])
        M = sample_view_transform(size, self.config.crop, self.aug, rng)
        img, valid = self.view(entry, M, rng)
        target = view_target(self.config.target, entry, M, self.config.crop, self.config.blob_sigma)
        out = {"image": img[None], "target": target[None], "valid": valid[None]}
        if self.config.subpixel_weight > 0:
            order = (
                np.argsort(-entry.scores, kind="stable") if len(entry.scores) == len(entry.keypoints) else slice(None)
            )
            pts = transform_points(M, entry.keypoints[order], self.config.crop)
            out["kpts"], out["kpts_valid"] = padded_points(pts, self.config.subpixel_max_points)
        return out


class Phase2Dataset(_CacheDataset):
    """Sample: ``image0``, ``image1``, ``valid0``, ``valid1``, ``mask0``, ``mask1`` (blob masks
    of the matched keypoints, peak 0.9, floor 0.1), ``target0``, ``target1`` (direct targets,
    only when ``direct_weight > 0``), ``H`` (view 0 -> view 1 pixels) and, when
    ``subpixel_weight > 0``, ``kpts0``/``kpts1`` float32 ``[K, 2]`` with ``kpts0_valid``/``kpts1_valid``
    bool ``[K]`` (the matched teacher keypoints in each crop, zero-padded)."""

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, index = key
        cfg = self.config
        rng = self.rng(epoch, index)
        entry = self.cache[index]
        if len(entry.homographies) == 0:
            raise ValueError(
                f"cache entry {entry.source} has no homographic pairs; rebuild the cache with --pairs-per-image >= 1"
            )
        size = (entry.image.shape[1], entry.image.shape[0])
        p = int(rng.integers(len(entry.homographies)))
        Hp = entry.homographies[p]
        k0, k1 = entry.pairs[p]
        M0 = sample_view_transform(size, cfg.crop, self.aug, rng)
        A1 = sample_view_transform(size, cfg.crop, self.aug, rng)
        M1 = A1 @ Hp  # source -> warped copy -> crop of view 1: one resampling
        img0, valid0 = self.view(entry, M0, rng)
        img1, valid1 = self.view(entry, M1, rng)
        ch, cw = cfg.crop
        out = {
            "image0": img0[None],
            "image1": img1[None],
            "valid0": valid0[None],
            "valid1": valid1[None],
            "mask0": blob_mask(transform_points(M0, k0, cfg.crop), (cw, ch), sigma=cfg.blob_sigma)[None],
            "mask1": blob_mask(transform_points(A1, k1, cfg.crop), (cw, ch), sigma=cfg.blob_sigma)[None],
            "H": M1 @ np.linalg.inv(M0),
        }
        if cfg.direct_weight > 0:
            out["target0"] = view_target(cfg.target, entry, M0, cfg.crop, cfg.blob_sigma)[None]
            out["target1"] = view_target(cfg.target, entry, M1, cfg.crop, cfg.blob_sigma)[None]
        if cfg.subpixel_weight > 0:
            out["kpts0"], out["kpts0_valid"] = padded_points(
                transform_points(M0, k0, cfg.crop), cfg.subpixel_max_points
            )
            out["kpts1"], out["kpts1_valid"] = padded_points(
                transform_points(A1, k1, cfg.crop), cfg.subpixel_max_points
            )
        return out


def collate(samples: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Stack a list of samples into tensors (``[B, ...]``)."""
    torch = require("torch")
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}


class StepBatchSampler:
    """Batches of ``(epoch, cache_index)`` for one process, for optimiser steps ``[start, stop)``.

    Epoch ``e``'s order is a permutation seeded by ``(seed, e)``; step ``s`` is batch
    ``s mod steps_per_epoch`` of epoch ``s // steps_per_epoch``; global batch ``b`` is items
    ``[b*B*W, (b+1)*B*W)`` of the permutation and process ``rank`` takes its ``B`` of them
    (the last incomplete global batch of an epoch is dropped). So the data of a step depends
    only on (seed, step), and a resumed run sees exactly the batches it would have seen.
    """

    def __init__(
        self, indices: Sequence[int], batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1
    ) -> None:
        self.indices = np.asarray(indices, np.int64)
        self.batch_size, self.seed, self.start, self.stop = batch_size, seed, start, stop
        self.rank, self.world = rank, world
        self.per_epoch = self.steps_per_epoch(len(self.indices), batch_size, world)
        if self.per_epoch < 1:
            raise ValueError(f"{len(self.indices)} items are fewer than one global batch of {batch_size} x {world}")

    @staticmethod
    def steps_per_epoch(n: int, batch_size: int, world: int) -> int:
        return n // (batch_size * world)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        gb = self.batch_size * self.world
        perm, perm_epoch = None, -1
        for step in range(self.start, self.stop):
            epoch, b = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                perm = np.random.default_rng([self.seed, epoch, 7919]).permutation(self.indices)
                perm_epoch = epoch
            lo = b * gb + self.rank * self.batch_size
            yield [(epoch, int(i)) for i in perm[lo : lo + self.batch_size]]


def _worker_init(_: int) -> None:
    require("cv2").setNumThreads(1)
    require("torch").set_num_threads(1)


def make_loader(dataset: _CacheDataset, sampler: StepBatchSampler, workers: int, pin_memory: bool = False):
    """A DataLoader over ``sampler``'s batches.

    Worker processes are started with ``spawn``: forked workers can deadlock in OpenCV's
    thread pool once the parent has used it (e.g. for validation images). One loader serves
    the whole run, so the start-up cost is paid once.
    """
    torch = require("torch")
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=_worker_init if workers > 0 else None,
        multiprocessing_context="spawn" if workers > 0 else None,
        pin_memory=pin_memory,
    )


# ---------------------------------------------------------------------- validation pairs
@dataclass
class EvalPair:
    """Two grayscale views (uint8 ``[h, w]``) and ``H`` mapping view-1 pixels to view-2 pixels."""

    name: str
    image1: np.ndarray
    image2: np.ndarray
    H: np.ndarray


def synthetic_val_pairs(
    cache: LabelCache,
    indices: Sequence[int],
    seed: int,
    homography: Optional[HomographyConfig] = None,
    limit: int = 200,
) -> list[EvalPair]:
    """For each held-out image, itself and a copy warped by a fixed random homography
    (seeded by ``seed`` and the source path; drawn like the cache's labelling pairs)."""
    cv2 = require("cv2")
    hcfg = homography if homography is not None else HomographyConfig()
    pairs = []
    for i in list(indices)[:limit]:
        entry = cache[i]
        h, w = entry.image.shape
        H = sample_homography((w, h), hcfg, np.random.default_rng(image_seed(seed + 7, entry.source)))
        warped = cv2.warpPerspective(entry.image, H, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        pairs.append(EvalPair(entry.source, entry.image, warped, H))
    return pairs


def rotate_image(gray: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """``gray`` (uint8 ``[h, w]``) rotated about its centre by ``angle_deg`` degrees
    (counter-clockwise as displayed) on the same canvas, bilinear, black where the source is
    outside the image; and the exact homography ``H`` (original -> rotated pixels,
    :func:`~training.homography.rotation_homography`)."""
    torch = require("torch")
    h, w = gray.shape
    H = rotation_homography((w, h), angle_deg)
    out = warp_image(torch.from_numpy(np.ascontiguousarray(gray)).float()[None, None], H)[0, 0]
    return np.clip(np.rint(out.numpy()), 0, 255).astype(np.uint8), H


def rotated_val_pairs(pairs: Sequence[EvalPair], angle_deg: float) -> list[EvalPair]:
    """For each pair's first view (a held-out image, as :func:`synthetic_val_pairs` gives it),
    the image and its copy rotated about the centre by ``angle_deg`` (:func:`rotate_image`),
    with the exact homography."""
    out = []
    for p in pairs:
        rotated, H = rotate_image(p.image1, angle_deg)
        out.append(EvalPair(f"{p.name}@rot{angle_deg:g}", p.image1, rotated, H))
    return out


def _resize_matrix(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Pixel map of a resize from ``src = (w, h)`` to ``dst``: ``x' = (x + 0.5) s - 0.5``."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def dev_eval_pairs(root: str | Path, size_hw: tuple[int, int]) -> list[EvalPair]:
    """Pairs ``SEQ/1.*``, ``SEQ/2.*`` with ``SEQ/H_1_2`` (image-1 -> image-2, original pixels),
    resized to ``size_hw`` with H adjusted for the resize.

    Raises:
        FileNotFoundError: ``root`` is not a folder or holds no complete pair.
    """
    cv2 = require("cv2")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dev-eval folder not found: {root}")
    h_out, w_out = size_hw
    pairs = []
    for seq in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {f.stem: f for f in folder_images(seq, recursive=False)}
        hfile = seq / "H_1_2"
        if "1" not in files or "2" not in files or not hfile.is_file():
            continue
        im1 = cv2.imread(str(files["1"]), cv2.IMREAD_GRAYSCALE)
        im2 = cv2.imread(str(files["2"]), cv2.IMREAD_GRAYSCALE)
        if im1 is None or im2 is None:
            continue
        H = np.loadtxt(str(hfile)).reshape(3, 3)
        S1 = _resize_matrix((im1.shape[1], im1.shape[0]), (w_out, h_out))
        S2 = _resize_matrix((im2.shape[1], im2.shape[0]), (w_out, h_out))
        r1 = cv2.resize(im1, (w_out, h_out), interpolation=cv2.INTER_AREA)
        r2 = cv2.resize(im2, (w_out, h_out), interpolation=cv2.INTER_AREA)
        pairs.append(EvalPair(seq.name, r1, r2, S2 @ H @ np.linalg.inv(S1)))
    if not pairs:
        raise FileNotFoundError(f"no SEQ/1.jpg, SEQ/2.jpg, SEQ/H_1_2 pairs under {root}")
    return pairs
