"""The training loop shared by both phases: devices and DDP, checkpoints, resume, logging,
validation.

A phase supplies a :class:`Task` (its dataset and its loss); :class:`Trainer` does the rest:

* devices: CPU, or CUDA with automatic mixed precision (bf16 where supported, else fp16 with
  a gradient scaler); data-parallel over processes with ``torchrun`` (DistributedDataParallel,
  gloo on CPU, NCCL on GPU). Only rank 0 validates, logs and writes files.
* checkpoints (atomic writes, :func:`kpnet.io.atomic_path`): ``last.pt`` and ``step_XXXXXXX.pt`` hold the model in the
  :meth:`kpnet.model.KpNet.save_pretrained` format (so ``KpNet.from_pretrained`` and
  ``python -m export.onnx`` read them) plus a ``training`` section (optimiser, scheduler,
  gradient scaler, step, epoch, torch RNG, the resolved config, the cache's config);
  ``best.pt`` is model-only, kept by the synthetic-validation repeatability (with
  ``--val-rotation-deg``: by its mean with the rotated-validation repeatabilities).
* exact resume: the data order and augmentation are pure functions of (seed, epoch, index),
  so restoring the step restores the data stream; the rest is in the checkpoint.
* logs: ``log.csv`` (step, epoch, tag, value) always, TensorBoard too when installed;
  predicted-heatmap overlays as PNGs (and TensorBoard images); tqdm bars with loss and rate.
* validation each epoch and at the end: repeatability at 3 px (``kpnet.metrics``) of the
  top-K (NMS radius 4) detections on held-out images and a fixed synthetic homography of
  each, at the cache resolution padded to multiples of the model stride; and on ``dev_eval`` pairs at
  ``eval_size`` when that folder exists (reported, not used to pick ``best.pt``).
* rotated validation (``--val-rotation-deg 0,90,180``): each held-out image is also paired with
  its copy rotated about its centre by each angle (exact homography), scored the same way and
  logged as ``val/rep_rotN``; ``val/rep_combined``, the equally weighted mean of
  ``val/repeatability`` and the ``val/rep_rotN``, then picks ``best.pt``. Off by default.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import numpy as np

from kpnet.io import atomic_path

from ._deps import match_opencv_threads, require
from .cache import CacheConfig, LabelCache, check_config, load_cache
from .data import (
    EvalPair,
    StepBatchSampler,
    dev_eval_pairs,
    make_loader,
    rotated_val_pairs,
    split_indices,
    synthetic_val_pairs,
)
from .train_config import AUTO, STRIDE, TrainConfig, check_multiple, read_config_file, write_config_file

torch = require("torch")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEV_EVAL = REPO_ROOT.parent / "shared" / "data" / "dev_eval"
VAL_EPS = 3.0
VAL_NMS_RADIUS = 4
#: the scalar that picks ``best.pt`` without rotated validation (and in checkpoints from before it)
BEST_DEFAULT = "val/repeatability"
#: ... and with ``--val-rotation-deg``
BEST_COMBINED = "val/rep_combined"


def rotation_tag(angle_deg: float) -> str:
    """The logged scalar of one rotated-validation angle: ``val/rep_rot90``, ``val/rep_rot22.5``."""
    return f"val/rep_rot{angle_deg:g}"


def best_criterion(config: TrainConfig) -> str:
    """What ``best.pt`` is chosen by, as stored in checkpoints (``val/repeatability``, or
    ``val/rep_combined`` with its angles)."""
    if not config.val_rotation_deg:
        return BEST_DEFAULT
    return f"{BEST_COMBINED}({','.join(f'{a:g}' for a in config.val_rotation_deg)})"


Batch = dict[str, "torch.Tensor"]
Forward = Callable[["torch.Tensor"], "torch.Tensor"]


class Task(Protocol):
    """What a phase supplies to :class:`Trainer`."""

    phase: int
    #: network images per sample (1 for phase 1, 2 for phase 2), for the images/s rate
    images_per_sample: int

    def dataset(self, cache: LabelCache, config: TrainConfig) -> Any:
        """The training dataset, indexed by ``(epoch, cache_index)``."""

    def loss(
        self, forward: Forward, batch: Batch, config: TrainConfig
    ) -> tuple["torch.Tensor", dict[str, float], tuple]:
        """(scalar loss, extra scalars to log, (image, logits, target) ``[1, H, W]`` to visualise)."""


# ---------------------------------------------------------------------- runtime
@dataclass
class Runtime:
    """Where this process runs."""

    device: "torch.device"
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    amp_dtype: Optional["torch.dtype"] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup_runtime(config: TrainConfig) -> Runtime:
    """Pick the device and join the process group when launched by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise RuntimeError("--device cuda was requested but CUDA is not available; use --device cpu or auto")
    use_cuda = cuda and config.device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    amp_dtype = None
    if use_cuda and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(device, rank, world, local_rank, amp_dtype)


# ---------------------------------------------------------------------- schedule
class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio``
    at ``total`` steps. A plain object, so LambdaLR saves its (int/float) state."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup = int(min(warmup, max(total - 1, 0)))
        self.total = int(total)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


# ---------------------------------------------------------------------- logging
class RunLogger:
    """Scalars to ``log.csv`` (and TensorBoard when installed); images to PNG (and TensorBoard)."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.out = out
        self.tb = None
        self._csv = None
        if not enabled:
            return
        new = not (out / "log.csv").exists()
        self._file = open(out / "log.csv", "a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "epoch", "tag", "value"])
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except ImportError:
            SummaryWriter = None  # noqa: N806
        if SummaryWriter is not None:
            self.tb = SummaryWriter(str(out / "tb"))

    def scalars(self, step: int, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for tag, v in values.items():
            self._csv.writerow([step, epoch, tag, f"{float(v):.9g}"])
            if self.tb is not None:
                self.tb.add_scalar(tag, float(v), step)
        self._file.flush()

    def image(self, step: int, tag: str, bgr: np.ndarray) -> Path:
        cv2 = require("cv2")
        path = self.out / "overlays" / f"step_{step:07d}.png"
        with atomic_path(path) as tmp:
            cv2.imwrite(str(tmp), bgr)
        if self.tb is not None:
            self.tb.add_image(tag, bgr[:, :, ::-1].copy(), step, dataformats="HWC")
        return path

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self.tb is not None:
                self.tb.close()


def overlay(image: "torch.Tensor", logits: "torch.Tensor", target: "torch.Tensor") -> np.ndarray:
    """BGR uint8 ``[H, 2W, 3]``: the predicted probabilities (left) and the target (right),
    each divided by its maximum, colour-mapped and blended over the grey image. Inputs
    ``[1, H, W]``."""
    cv2 = require("cv2")
    gray = (image[0].float().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    panels = []
    for heat in (torch.sigmoid(logits[0].float()), target[0].float()):
        heat = heat.clamp(0, 1) / heat.max().clamp_min(1e-6)
        h = (heat.cpu().numpy() * 255).astype(np.uint8)
        panels.append(cv2.addWeighted(base, 0.5, cv2.applyColorMap(h, cv2.COLORMAP_JET), 0.5, 0))
    return np.concatenate(panels, axis=1)


# ---------------------------------------------------------------------- checkpoints
def _cpu_state(module: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def model_payload(model: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """The ``KpNet.save_pretrained`` dict (format, kpnet_version, config, state_dict, extra)."""
    from kpnet import __version__
    from kpnet.model import CHECKPOINT_FORMAT

    return {
        "format": CHECKPOINT_FORMAT,
        "kpnet_version": __version__,
        "config": model.config.to_dict(),
        "state_dict": _cpu_state(model),
        "extra": dict(extra),
    }


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by the trainer and check it holds a training state."""
    from kpnet.model import load_checkpoint

    ckpt = load_checkpoint(path)
    if "training" not in ckpt:
        raise ValueError(
            f"{path} holds no training state (a model-only checkpoint such as best.pt); resume from "
            "last.pt or step_*.pt, or start a new run from its weights with --init"
        )
    return ckpt


# ---------------------------------------------------------------------- validation
def _pad_to_stride(x: "torch.Tensor", stride: int) -> "torch.Tensor":
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


@torch.no_grad()
def evaluate_pairs(
    model: Any, pairs: list[EvalPair], device: "torch.device", max_keypoints: int, batch_pairs: int = 4
) -> dict[str, float]:
    """Mean repeatability at 3 px and mean localisation error over image pairs.

    Each view runs through the network at its own size padded (replicate) to multiples of the
    model's stride (32, or 64 for ``downsample=2``);
    the heatmap is cropped back and decoded (top-K, NMS radius 4, 4 px border).
    """
    from kpnet.config import DecodeConfig
    from kpnet.metrics import repeatability
    from kpnet.postprocess import decode

    dcfg = DecodeConfig(max_keypoints=max_keypoints, nms_radius=VAL_NMS_RADIUS)
    was_training = model.training
    model.eval()
    stride = model.config.stride
    reps, locs = [], []
    for s in range(0, len(pairs), batch_pairs):
        chunk = pairs[s : s + batch_pairs]
        imgs = [im for p in chunk for im in (p.image1, p.image2)]
        h, w = imgs[0].shape
        x = torch.from_numpy(np.stack(imgs)).float().div_(255.0)[:, None].to(device)
        heat = model(_pad_to_stride(x, stride))[:, 0, :h, :w].float().cpu().numpy()
        for j, p in enumerate(chunk):
            xy1, _ = decode(heat[2 * j], dcfg)
            xy2, _ = decode(heat[2 * j + 1], dcfg)
            r = repeatability(xy1, xy2, p.H, (w, h), (w, h), eps=VAL_EPS)
            reps.append(r.repeatability)
            if np.isfinite(r.loc_error):
                locs.append(r.loc_error)
    model.train(was_training)
    return {
        "repeatability": float(np.mean(reps)) if reps else 0.0,
        "loc_error": float(np.mean(locs)) if locs else float("nan"),
        "pairs": float(len(pairs)),
    }


# ---------------------------------------------------------------------- preparation
@dataclass
class Prepared:
    """Everything checked before training starts."""

    config: TrainConfig
    cache: LabelCache
    train_idx: list[int]
    val_idx: list[int]
    steps_per_epoch: int
    total_steps: int
    init: Optional[dict[str, Any]] = None
    resume: Optional[dict[str, Any]] = None
    dev_eval: Optional[Path] = None
    model_config: Any = None
    notes: list[str] = field(default_factory=list)


def _open_cache(config: TrainConfig) -> LabelCache:
    expected = None
    if config.expect_cache:
        expected = CacheConfig.from_dict(read_config_file(config.expect_cache))
    cache = load_cache(config.cache, expected, require_complete=not config.allow_incomplete_cache)
    if config.allow_incomplete_cache:
        keep = [i for i, p in enumerate(cache.paths) if p.is_file()]
        cache.sources = [cache.sources[i] for i in keep]
        cache.paths = [cache.paths[i] for i in keep]
    return cache


def _sources_digest(sources: list[str]) -> str:
    return hashlib.sha1("\n".join(sources).encode("utf-8")).hexdigest()


def prepare(config: TrainConfig, world: int = 1, resume: Optional[dict[str, Any]] = None) -> Prepared:
    """Validate paths and settings and open the data; raise before any work on a problem.

    Raises:
        FileNotFoundError: missing cache, init checkpoint or dev-eval folder.
        ValueError: unusable cache (incomplete, mismatched, no dense maps or pairs), empty
            split, or a checkpoint that does not fit the config.
    """
    from kpnet.config import ModelConfig
    from kpnet.model import load_checkpoint

    if config.phase == 2 and not config.init and resume is None:
        raise ValueError("phase 2 starts from a phase-1 model: pass --init PHASE1_CKPT (e.g. runs/phase1/best.pt)")
    cache = _open_cache(config)
    ccfg = cache.config
    if resume is not None:
        check_config(cache.manifest, resume["training"]["cache_config"], where=config.cache)
    needs_target = config.phase == 1 or config.direct_weight > 0
    if needs_target and config.target == "dense" and not ccfg.store_dense:
        raise ValueError(
            f"label cache {config.cache} has no dense teacher maps (built without --dense); use "
            "--target sparse --loss focal (binary masks at teacher keypoints) or --target blob, "
            "or rebuild the cache with python -m training.labels --dense"
        )
    if config.phase == 2 and ccfg.pairs_per_image < 1:
        raise ValueError(
            f"label cache {config.cache} has no homographic pairs (pairs_per_image=0); phase 2 needs a cache "
            "built with --pairs-per-image >= 1"
        )
    train_idx, val_idx = split_indices(cache.sources, config.val_fraction)
    if resume is not None:
        had = resume["training"].get("train_sources_sha1")
        now = _sources_digest([cache.sources[i] for i in train_idx])
        if had is not None and had != now:
            msg = (
                f"the training entries of {config.cache} changed since the checkpoint was written; "
                "the run will not continue exactly as it would have"
            )
            if not config.allow_incomplete_cache:
                raise ValueError(msg + " (pass --allow-incomplete-cache to continue anyway)")
            print(f"warning: {msg}", file=sys.stderr)
    spe = StepBatchSampler.steps_per_epoch(len(train_idx), config.batch_size, world)
    if spe < 1:
        raise ValueError(
            f"the training split has {len(train_idx)} images, fewer than one global batch "
            f"(batch_size {config.batch_size} x {world} processes); lower --batch-size or use a larger cache"
        )
    total = config.max_steps if config.max_steps is not None else config.epochs * spe

    init = load_checkpoint(config.init) if config.init else None
    src = resume or init
    # Fields a fine-tuning run may change: the weights stay and training adapts them.
    # input_norm: how a student trained with fixed ImageNet statistics became exposure invariant;
    # downsample and cell_head: how the fast variant is made from a full-resolution model (a new
    # cell head starts at zero, so the converted model starts exactly at its source's output).
    convertible = {"input_norm": config.input_norm, "downsample": config.downsample, "cell_head": config.cell_head}
    fields_ = {
        "backbone": config.backbone or "small",
        "fpn_width": config.fpn_width or 32,
        "input_norm": config.input_norm or "image",
        "downsample": config.downsample or 1,
        "cell_head": bool(config.cell_head),
    }
    if src is not None:
        sc = ModelConfig.from_dict(src["config"]).to_dict()
        wanted = [("backbone", config.backbone), ("fpn_width", config.fpn_width)]
        if resume is not None:
            wanted += list(convertible.items())
        for name, want in wanted:
            if want is not None and want != sc[name]:
                raise ValueError(
                    f"{config.init or 'the resumed checkpoint'} has {name}={sc[name]!r} but the config asks for "
                    f"{want!r}; drop --{name.replace('_', '-')} or pick a matching checkpoint"
                )
        fields_ = {k: sc[k] for k in fields_}
        for name, want in convertible.items():
            if resume is None and want is not None and want != sc[name]:
                print(
                    f"note: {config.init} was trained with {name}={sc[name]!r}; fine-tuning it with {name}={want!r}",
                    file=sys.stderr,
                )
                fields_[name] = want
    down = fields_["downsample"]
    for name in ("crop", "eval_size"):
        check_multiple(name, getattr(config, name), STRIDE * down, f" with downsample {down}")
    if config.init_backbone and not Path(config.init_backbone).is_file():
        raise FileNotFoundError(f"--init-backbone weights not found: {config.init_backbone}")
    model_config = ModelConfig(input_size=config.eval_size, **fields_)

    dev = None
    if config.dev_eval and config.dev_eval.lower() != "none":
        if config.dev_eval == AUTO:
            dev = DEFAULT_DEV_EVAL if DEFAULT_DEV_EVAL.is_dir() else None
        else:
            dev = Path(config.dev_eval)
            dev_eval_pairs(dev, (32, 32))  # raises now if the folder is missing or empty
    return Prepared(config, cache, train_idx, val_idx, spe, total, init, resume, dev, model_config)


def load_init_weights(model: Any, state_dict: dict[str, Any], source: str) -> None:
    """Load ``--init`` weights strictly, except for the sub-cell head: one the source lacks, or
    whose cells have another size (``downsample`` changed), starts at the model's zero
    initialisation (so a model given a new head computes exactly the source's output), and a
    source's head is dropped when the model has none (``--no-cell-head``)."""
    from kpnet.model import _strict_load

    sd = {k: v for k, v in state_dict.items() if not k.startswith("cell.")}
    if model.config.cell_head:
        own = {k: v for k, v in model.state_dict().items() if k.startswith("cell.")}
        theirs = {k: v for k, v in state_dict.items() if k.startswith("cell.")}
        same = set(theirs) == set(own) and all(theirs[k].shape == own[k].shape for k in own)
        sd.update(theirs if same else own)
    _strict_load(model, sd, source)


# ---------------------------------------------------------------------- the trainer
class Trainer:
    """Runs one phase: ``Trainer(prepared, task, runtime).fit()``."""

    def __init__(self, prep: Prepared, task: Task, rt: Runtime) -> None:
        from kpnet.model import KpNet

        self.prep, self.task, self.rt = prep, task, rt
        cfg = self.config = prep.config
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)
        model = KpNet(prep.model_config)
        if prep.init is not None:
            load_init_weights(model, prep.init["state_dict"], str(cfg.init))
        if cfg.init_backbone:
            model.load_imagenet_backbone(cfg.init_backbone)
        self.model = model.to(rt.device)
        self.net = self.model
        if rt.distributed:
            ids = [rt.device.index] if rt.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, WarmupCosine(cfg.warmup_steps, prep.total_steps, cfg.min_lr_ratio)
        )
        fp16 = rt.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda" if rt.device.type == "cuda" else "cpu", enabled=fp16)
        self.step = 0
        self.best = -1.0
        self.best_tag = BEST_COMBINED if cfg.val_rotation_deg else BEST_DEFAULT
        self.best_by = best_criterion(cfg)
        self.dataset = task.dataset(prep.cache, cfg)
        if prep.resume is not None:
            self._load_state(prep.resume)
        self.val_pairs: list[EvalPair] = []
        self.rot_pairs: dict[float, list[EvalPair]] = {}
        self.dev_pairs: list[EvalPair] = []
        if rt.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_config_file(cfg, self.out / "config.yaml")
            self.val_pairs = synthetic_val_pairs(
                prep.cache, prep.val_idx, cfg.seed, prep.cache.config.homography, cfg.val_max_images
            )
            self.rot_pairs = {a: rotated_val_pairs(self.val_pairs, a) for a in cfg.val_rotation_deg}
            if prep.dev_eval is not None:
                self.dev_pairs = dev_eval_pairs(prep.dev_eval, cfg.eval_size)
        self.log = RunLogger(self.out, rt.is_main)

    # -------------------------------------------------------------- state
    def _load_state(self, ckpt: dict[str, Any]) -> None:
        from kpnet.model import _strict_load

        tr = ckpt["training"]
        _strict_load(self.model, ckpt["state_dict"], "resumed checkpoint")
        self.opt.load_state_dict(tr["optimizer"])
        self.sched.load_state_dict(tr["scheduler"])
        self.scaler.load_state_dict(tr["scaler"])
        self.step = int(tr["step"])
        self.best = float(tr["best"])
        had = tr.get("best_by", BEST_DEFAULT)
        if had != self.best_by:
            # another selection score: the stored best is not comparable, so tracking restarts
            print(
                f"note: the resumed run chose best.pt by {had}, this one by {self.best_by}; the next validation "
                "replaces best.pt",
                file=sys.stderr,
            )
            self.best = -1.0
        torch.set_rng_state(tr["rng"]["torch"])
        if self.rt.device.type == "cuda" and tr["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(tr["rng"]["cuda"][0], self.rt.device)

    def _save(self, path: Path, metrics: dict[str, float], training: bool = True) -> None:
        extra = {
            "phase": self.config.phase,
            "step": self.step,
            "metrics": metrics,
            "train_config": self.config.to_dict(),
        }
        payload = model_payload(self.model, extra)
        if training:
            payload["training"] = {
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step": self.step,
                "epoch": self.step // self.prep.steps_per_epoch,
                "best": self.best,
                "best_by": self.best_by,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.rt.device.type == "cuda" else None,
                },
                "train_config": self.config.to_dict(),
                "cache_config": self.prep.cache.manifest["config"],
                "train_sources_sha1": _sources_digest([self.prep.cache.sources[i] for i in self.prep.train_idx]),
            }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    def _checkpoint(self, metrics: dict[str, float], numbered: bool) -> None:
        if not self.rt.is_main:
            return
        self._save(self.out / "last.pt", metrics)
        if numbered:
            self._save(self.out / f"step_{self.step:07d}.pt", metrics)
            old = sorted(self.out.glob("step_*.pt"))[: -self.config.keep_ckpts]
            for p in old:
                p.unlink(missing_ok=True)

    # -------------------------------------------------------------- steps
    def _forward(self, x: "torch.Tensor") -> "torch.Tensor":
        if self.rt.amp_dtype is None:
            return self.net(x)
        with torch.autocast("cuda", dtype=self.rt.amp_dtype):
            return self.net(x).float()

    def train_step(self, batch: Batch) -> tuple[float, dict[str, float], tuple]:
        """One optimiser step; returns (loss, extra scalars, visualisation tensors)."""
        self.net.train()
        batch = {k: v.to(self.rt.device, non_blocking=True) for k, v in batch.items()}
        loss, parts, vis = self.task.loss(self._forward, batch, self.config)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step + 1}; lower --lr")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.step += 1
        return float(loss.detach()), parts, vis

    def _mean_over_ranks(self, value: float) -> float:
        if not self.rt.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.rt.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.rt.world

    def validate(self) -> dict[str, float]:
        """Rank 0 evaluates; other ranks wait. Returns ``val/*`` and ``dev/*`` scalars (rank 0)."""
        metrics: dict[str, float] = {}
        if self.rt.is_main:
            k = self.config.val_max_keypoints
            if self.val_pairs:
                for key, v in evaluate_pairs(self.model, self.val_pairs, self.rt.device, k).items():
                    metrics[f"val/{key}"] = v
            if self.rot_pairs and self.val_pairs:
                scores = [metrics["val/repeatability"]]
                for angle, pairs in self.rot_pairs.items():
                    rep = evaluate_pairs(self.model, pairs, self.rt.device, k)["repeatability"]
                    metrics[rotation_tag(angle)] = rep
                    scores.append(rep)
                metrics[BEST_COMBINED] = float(np.mean(scores))
            if self.dev_pairs:
                for key, v in evaluate_pairs(self.model, self.dev_pairs, self.rt.device, k, batch_pairs=2).items():
                    metrics[f"dev/{key}"] = v
        if self.rt.distributed:
            torch.distributed.barrier()
        return metrics

    def _end_of_epoch(self, epoch: int, loss: float, bar: Any) -> dict[str, float]:
        """Validate, log, and keep ``best.pt`` by the synthetic-validation repeatability (or, with
        ``--val-rotation-deg``, by ``val/rep_combined``)."""
        metrics = self.validate()
        if self.rt.is_main:
            self.log.scalars(self.step, epoch, metrics)
            shown = " ".join(
                f"{k.split('/')[0]}_rep {v:.3f}" for k, v in metrics.items() if k.endswith("repeatability")
            )
            if BEST_COMBINED in metrics:
                shown += f" val_rep_combined {metrics[BEST_COMBINED]:.3f}"
            if shown:
                bar.write(f"step {self.step} (epoch {epoch + 1}): loss {loss:.4f} {shown}")
            rep = metrics.get(self.best_tag)
            if rep is not None and rep > self.best:
                self.best = rep
                self._save(self.out / "best.pt", metrics, training=False)
        return metrics

    # -------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps``; returns a summary (losses per step, rates, metrics)."""
        tqdm = require("tqdm").tqdm
        cfg, prep, rt = self.config, self.prep, self.rt
        spe, total = prep.steps_per_epoch, prep.total_steps
        per_step_images = cfg.batch_size * rt.world * self.task.images_per_sample
        losses: list[tuple[int, float]] = []
        metrics: dict[str, float] = {}
        train_time, timed_steps = 0.0, 0
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=not (rt.is_main and cfg.progress),
            unit="step",
            desc=f"phase {cfg.phase}",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        try:
            sampler = StepBatchSampler(prep.train_idx, cfg.batch_size, cfg.seed, self.step, total, rt.rank, rt.world)
            loader = make_loader(self.dataset, sampler, cfg.workers, pin_memory=rt.device.type == "cuda")
            t0 = time.perf_counter()
            for batch in loader:
                epoch = self.step // spe
                loss, parts, vis = self.train_step(batch)
                if rt.device.type == "cuda":
                    torch.cuda.synchronize(rt.device)
                dt = time.perf_counter() - t0
                if len(losses) > 0:  # the first step of a run includes start-up costs
                    train_time += dt
                    timed_steps += 1
                loss_all = self._mean_over_ranks(loss)
                losses.append((self.step, loss_all))
                rate = per_step_images / dt if dt > 0 else 0.0
                lr = self.sched.get_last_lr()[0]
                bar.set_postfix(loss=f"{loss_all:.4f}", img_s=f"{rate:.1f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == 1:
                    scal = {"train/loss": loss_all, "train/lr": lr, "train/images_per_s": rate}
                    scal.update({f"train/{k}": v for k, v in parts.items()})
                    self.log.scalars(self.step, epoch, scal)
                if rt.is_main and cfg.overlay_every and self.step % cfg.overlay_every == 0:
                    self.log.image(self.step, "train/overlay", overlay(*vis))
                epoch_end = self.step % spe == 0 or self.step == total
                if epoch_end:
                    metrics = self._end_of_epoch(epoch, loss_all, bar)
                if self.step % cfg.ckpt_every == 0 or epoch_end:
                    self._checkpoint(metrics, numbered=self.step % cfg.ckpt_every == 0 or self.step == total)
                t0 = time.perf_counter()
        finally:
            bar.close()
            self.log.close()
        if rt.is_main and not (self.out / "best.pt").exists():
            # no held-out images: the final model is the best we know
            self._save(self.out / "best.pt", metrics, training=False)
        rate = per_step_images * timed_steps / train_time if train_time > 0 else float("nan")
        summary = {
            "steps": self.step,
            "images_per_s": rate,
            "samples_per_s": rate / self.task.images_per_sample,
            "losses": losses,
            "metrics": metrics,
            "best": self.best,
        }
        return summary


# ---------------------------------------------------------------------- entry point
def run(task: Task, argv: Optional[list[str]], description: str) -> int:
    """Parse the command line, validate everything, train; exit status 2 on bad input."""
    import argparse

    from .train_config import add_config_arguments, overrides_from_args, resolve_config

    parser = argparse.ArgumentParser(prog=f"python -m training.phase{task.phase}", description=description)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    overrides = overrides_from_args(args)
    try:
        resume = None
        if args.resume:
            if args.resume == AUTO:
                from_file = read_config_file(args.config) if args.config else {}
                out = overrides.get("out") or from_file.get("out") or f"runs/phase{task.phase}"
                path = Path(out) / "last.pt"
            else:
                path = Path(args.resume)
            resume = read_training_checkpoint(path)
        base = resume["training"]["train_config"] if resume is not None else None
        config = resolve_config(task.phase, overrides, args.config, base=base)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        prep = prepare(config, world, resume)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    match_opencv_threads()
    rt = setup_runtime(config)
    try:
        summary = Trainer(prep, task, rt).fit()
    finally:
        if rt.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rt.is_main and not summary["losses"]:
        print(f"phase {task.phase}: nothing to do, the run is already at step {summary['steps']} of {prep.total_steps}")
    elif rt.is_main:
        m = " ".join(f"{k}={v:.4f}" for k, v in summary["metrics"].items())
        print(
            f"phase {task.phase}: {summary['steps']} steps, final loss {summary['losses'][-1][1]:.4f}, "
            f"{summary['images_per_s']:.2f} images/s ({rt.world} process(es), {rt.device.type}); {m}; "
            f"checkpoints in {config.out}"
        )
    return 0
