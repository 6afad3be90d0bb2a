"""Training loops: config validation, early errors, smoke runs of both phases, exact resume.

Uses a tiny synthetic label cache (drawn shapes, corners as the "teacher" keypoints) written
in the real cache format, so no teacher, download or shared data is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kornia")
pytest.importorskip("tqdm")
pytest.importorskip("yaml")
cv2 = pytest.importorskip("cv2")

from training.cache import ENTRIES, FORMAT, VERSION, CacheConfig, entry_key, write_entry, write_manifest  # noqa: E402
from training.homography import HomographyConfig, sample_homography, warp_points  # noqa: E402
from training.masks import blob_mask  # noqa: E402

CACHE_SIZE = (128, 96)  # (width, height) of the cached images
N_IMAGES = 10


def make_cache(root: Path, n: int = N_IMAGES, dense: bool = True, pairs: int = 2, size=CACHE_SIZE) -> Path:
    """Write a label cache of ``n`` synthetic images (polygons on a gradient) to ``root``."""
    cfg = CacheConfig(size=size, pairs_per_image=pairs, store_dense=dense)
    (root / ENTRIES).mkdir(parents=True, exist_ok=True)
    w, h = size
    sources = [f"synthetic/{i:03d}.png" for i in range(n)]
    for i, src in enumerate(sources):
        rng = np.random.default_rng(i)
        img = np.tile(np.linspace(40, 90, w, dtype=np.float32), (h, 1))
        for _ in range(5):
            pts = rng.uniform([0, 0], [w, h], (int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.fillPoly(img, [cv2.convexHull(pts)], float(rng.uniform(120, 250)))
        img = cv2.GaussianBlur(img, (3, 3), 0.8).astype(np.uint8)
        corners = cv2.goodFeaturesToTrack(img, 60, 0.05, 4)
        kp = corners.reshape(-1, 2).astype(np.float32) if corners is not None else np.zeros((0, 2), np.float32)
        hs, k0s, k1s, splits = [], [], [], [0]
        for _ in range(pairs):
            H = sample_homography(size, HomographyConfig(max_angle_deg=15.0), rng)
            k1 = warp_points(H, kp.astype(np.float64))
            ok = (k1[:, 0] >= 0) & (k1[:, 0] <= w - 1) & (k1[:, 1] >= 0) & (k1[:, 1] <= h - 1)
            hs.append(H)
            k0s.append(kp[ok])
            k1s.append(k1[ok].astype(np.float32))
            splits.append(splits[-1] + int(ok.sum()))
        arrays = {
            "source": np.array(src),
            "image": img,
            "keypoints": kp,
            "scores": np.ones(len(kp), np.float32),
            "homographies": np.array(hs, np.float64).reshape(-1, 3, 3),
            "match_kpts0": np.concatenate(k0s) if k0s else np.zeros((0, 2), np.float32),
            "match_kpts1": np.concatenate(k1s) if k1s else np.zeros((0, 2), np.float32),
            "match_splits": np.array(splits, np.int64),
        }
        if dense:
            arrays["dense"] = np.rint(255 * blob_mask(kp, size, sigma=1.5, peak=1.0, floor=0.0)).astype(np.uint8)
        write_entry(root / ENTRIES / f"{entry_key(src)}.npz", arrays)
    write_manifest(
        root,
        {
            "format": FORMAT,
            "version": VERSION,
            "config": cfg.to_dict(),
            "teacher_settings": None,
            "image_root": "synthetic",
            "images": sources,
            "skipped": {},
            "complete": True,
        },
    )
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("cache") / "synthetic")


def tiny_args(cache: Path, out: Path, *extra: str) -> list[str]:
    """Flags of a tiny, fast run: 64x96 crops, batch 2, small network."""
    return [
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--crop",
        "64x96",
        "--eval-size",
        "96x128",
        "--fpn-width",
        "8",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--val-fraction",
        "0.2",
        "--dev-eval",
        "none",
        "--no-progress",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "2",
        "--scale-range",
        "0.9,1.1",
        "--max-rotation-deg",
        "5",
        "--overlay-every",
        "8",
        *extra,
    ]


def read_log(out: Path, tag: str) -> dict[int, str]:
    """step -> value (as written, 9 significant digits) of one tag of log.csv."""
    rows = (out / "log.csv").read_text().splitlines()[1:]
    return {int(r.split(",")[0]): r.split(",")[3] for r in rows if r.split(",")[2] == tag}


def epoch_means(out: Path, steps_per_epoch: int) -> np.ndarray:
    losses = read_log(out, "train/loss")
    vals = np.array([float(losses[s]) for s in sorted(losses)])
    return vals.reshape(-1, steps_per_epoch).mean(axis=1)


# ---------------------------------------------------------------------- config
def test_config_yaml_flags_and_validation(tmp_path, cache_dir):
    from training.train_config import TrainConfig, resolve_config

    cfg_file = tmp_path / "train.yaml"
    # YAML 1.1 reads 1e-2 as a string: it is accepted as a number
    cfg_file.write_text(f"lr: 1e-2\nweight_decay: 1e-5\ncrop: 96x128\ntarget: sparse\ncache: {cache_dir}\n")
    assert resolve_config(1, {}, str(cfg_file)).weight_decay == 1e-5
    cfg = resolve_config(1, {"lr": 0.002}, str(cfg_file))
    assert cfg.lr == 0.002 and cfg.crop == (96, 128) and cfg.target == "sparse"
    assert cfg.loss == "focal" and cfg.out == "runs/phase1"  # default loss follows the target
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert resolve_config(1, {"cache": "c"}).loss == "bce"  # dense target -> bce
    assert resolve_config(2, {"cache": "c"}).loss == "huber"

    with pytest.raises(ValueError, match="unknown loss 'l3' for phase 2; choose from: huber, kl"):
        TrainConfig(phase=2, cache="c", loss="l3")
    with pytest.raises(ValueError, match="unknown loss 'huber' for phase 1; choose from: focal, bce"):
        TrainConfig(phase=1, cache="c", loss="huber")
    with pytest.raises(ValueError, match="unknown target 'dots'; choose from: sparse, blob, dense"):
        TrainConfig(cache="c", target="dots")
    with pytest.raises(ValueError, match="crop must be HxW with positive multiples of 32; got 100x96"):
        TrainConfig(cache="c", crop=(100, 96))
    # sizes are kpnet.sizing.parse_hw's HxW: a camera resolution written width first is refused
    with pytest.raises(ValueError, match="eval_size '640x480' looks like WIDTHxHEIGHT.*use 480x640"):
        TrainConfig(cache="c", eval_size="640x480")
    with pytest.raises(ValueError, match="crop must be HEIGHTxWIDTH, e.g. 480x640, got 'wide'"):
        TrainConfig(cache="c", crop="wide")
    with pytest.raises(ValueError, match="unknown training config key 'learning_rate'; choose from: phase, cache"):
        TrainConfig.from_dict({"cache": "c", "learning_rate": 1})
    with pytest.raises(ValueError, match="lr must be a number; got 'fast'"):
        TrainConfig(cache="c", lr="fast")
    with pytest.raises(ValueError, match="batch_size must be an int; got 2.5"):
        TrainConfig(cache="c", batch_size=2.5)
    with pytest.raises(ValueError, match="no label cache given; pass --cache"):
        TrainConfig()
    with pytest.raises(ValueError, match="unknown input_norm 'batch'; choose from: image, imagenet"):
        TrainConfig(cache="c", input_norm="batch")
    with pytest.raises(ValueError, match=r"photometric_extreme must be a probability in \[0, 1\]"):
        TrainConfig(cache="c", photometric_extreme=1.5)
    with pytest.raises(ValueError, match="this config is for phase 2"):
        resolve_config(1, {"cache": "c"}, base={"phase": 2})


def _short_phase2_args(cache: Path, init: Path, out: Path, *extra: str) -> list[str]:
    """Flags of a two-step phase-2 run from ``init`` (batch 2, a checkpoint every step)."""
    fixed = "--no-progress --dev-eval none --batch-size 2 --max-steps 2 --ckpt-every 1 --val-max-images 2".split()
    return ["--cache", str(cache), "--init", str(init), "--out", str(out), *fixed, *extra]


# ---------------------------------------------------------------------- early errors
def _fails(main, args, capsys, *needles):
    assert main(args) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err


def test_bad_paths_and_config_fail_before_any_work(tmp_path, cache_dir, capsys):
    from training import phase1, phase2

    out = tmp_path / "never"
    base = ["--out", str(out), "--no-progress", "--dev-eval", "none", "--batch-size", "2"]
    _fails(
        phase1.main, ["--cache", str(tmp_path / "missing"), *base], capsys, "no label cache at", "manifest.json missing"
    )
    # a cache without dense maps: the default dense target says which flag to use
    sparse_cache = make_cache(tmp_path / "nodense", n=4, dense=False)
    _fails(
        phase1.main,
        ["--cache", str(sparse_cache), *base],
        capsys,
        "no dense teacher maps",
        "--target sparse --loss focal",
    )
    # a manifest that does not match what the run expects names the differing fields
    expect = tmp_path / "expect.yaml"
    expect.write_text(json.dumps({"size": [320, 240], "store_dense": True, "pairs_per_image": 2}))
    _fails(
        phase1.main,
        ["--cache", str(cache_dir), "--expect-cache", str(expect), *base],
        capsys,
        "different configuration",
        "size: cache has [128, 96], expected [320, 240]",
    )
    # an incomplete cache (labelling still running)
    manifest = json.loads((sparse_cache / "manifest.json").read_text())
    (sparse_cache / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    _fails(phase1.main, ["--cache", str(sparse_cache), "--target", "sparse", *base], capsys, "incomplete", "resume")
    _fails(
        phase1.main,
        ["--cache", str(cache_dir), "--loss", "l3", *base],
        capsys,
        "unknown loss 'l3' for phase 1; choose from: focal, bce",
    )
    _fails(phase2.main, ["--cache", str(cache_dir), *base], capsys, "pass --init PHASE1_CKPT")
    _fails(
        phase2.main,
        ["--cache", str(cache_dir), "--init", str(tmp_path / "nope.pt"), *base],
        capsys,
        "checkpoint not found",
    )
    nopairs = make_cache(tmp_path / "nopairs", n=4, pairs=0)
    _fails(
        phase2.main,
        ["--cache", str(nopairs), "--init", str(tmp_path / "nope.pt"), *base],
        capsys,
        "no homographic pairs",
    )
    _fails(phase1.main, ["--cache", str(cache_dir), *base, "--batch-size", "64"], capsys, "fewer than one global batch")
    _fails(
        phase1.main,
        ["--cache", str(cache_dir), *base, "--dev-eval", str(tmp_path / "nodev")],
        capsys,
        "dev-eval folder not found",
    )
    _fails(
        phase1.main,
        ["--cache", str(cache_dir), "--resume", str(tmp_path / "nope.pt"), *base],
        capsys,
        "checkpoint not found",
    )
    with pytest.raises(SystemExit):  # argparse shows kpnet.sizing.parse_hw's message
        phase1.main(["--cache", str(cache_dir), *base, "--eval-size", "640x480"])
    assert "argument --eval-size: size '640x480' looks like WIDTHxHEIGHT" in capsys.readouterr().err
    assert not out.exists()  # nothing was written


# ---------------------------------------------------------------------- smoke runs
@pytest.fixture(scope="module")
def phase1_run(cache_dir, tmp_path_factory):
    """Phase 1, 32 steps (8 epochs of 4 steps), dense targets + BCE; checkpoints every 12."""
    from training import phase1

    out = tmp_path_factory.mktemp("runs") / "p1"
    rc = phase1.main(
        tiny_args(cache_dir, out, "--max-steps", "32", "--ckpt-every", "12", "--log-every", "1", "--keep-ckpts", "2")
    )
    assert rc == 0
    return out


def test_phase1_trains_checkpoints_and_logs(phase1_run):
    from kpnet.model import KpNet

    out = phase1_run
    means = epoch_means(out, 4)
    assert means[-1] < 0.9 * means[0], means  # same images each epoch: the loss clearly went down
    assert {p.name for p in out.glob("*.pt")} == {"last.pt", "best.pt", "step_0000024.pt", "step_0000032.pt"}
    cfg = (out / "config.yaml").read_text()
    assert "crop:\n- 64\n- 96" in cfg and "loss: bce" in cfg and "target: dense" in cfg
    assert len(read_log(out, "val/repeatability")) == 8  # validation every epoch
    assert sorted(p.name for p in (out / "overlays").glob("*.png")) == [f"step_{s:07d}.png" for s in (8, 16, 24, 32)]
    assert cv2.imread(str(out / "overlays" / "step_0000008.png")).shape == (64, 192, 3)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["training"]["step"] == 32 and ckpt["training"]["train_config"]["crop"] == [64, 96]
    assert ckpt["extra"]["train_config"]["target"] == "dense"
    best = torch.load(out / "best.pt", weights_only=True)
    assert "training" not in best and 0 <= best["extra"]["metrics"]["val/repeatability"] <= 1
    model = KpNet.from_pretrained(out / "best.pt")
    assert model.config.fpn_width == 8 and model.config.input_size == (96, 128)


def test_phase1_resume_continues_exactly(phase1_run, tmp_path):
    from training import phase1

    out = tmp_path / "resumed"
    # no other flags: the config comes from the checkpoint (only --out is changed here)
    assert phase1.main(["--resume", str(phase1_run / "step_0000024.pt"), "--out", str(out), "--no-progress"]) == 0
    a, b = read_log(phase1_run, "train/loss"), read_log(out, "train/loss")
    assert sorted(b) == list(range(25, 33))
    assert [b[s] for s in range(25, 33)] == [a[s] for s in range(25, 33)]  # identical losses
    wa = torch.load(phase1_run / "last.pt", weights_only=True)["state_dict"]
    wb = torch.load(out / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # and identical weights at the end
    # --resume without a path continues OUT/last.pt; a finished run has nothing left to do
    assert phase1.main(["--resume", "--out", str(out), "--no-progress"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["training"]["step"] == 32


def test_resume_refuses_a_changed_cache(phase1_run, cache_dir, tmp_path, capsys):
    import shutil

    from training import phase1

    other = tmp_path / "other"
    shutil.copytree(cache_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["skipped"] = {manifest["images"][0]: "removed for the test"}
    (other / "manifest.json").write_text(json.dumps(manifest))
    ckpt = str(phase1_run / "step_0000024.pt")
    _fails(
        phase1.main,
        ["--resume", ckpt, "--cache", str(other), "--out", str(tmp_path / "r")],
        capsys,
        "changed since the checkpoint",
    )
    # a cache built with another configuration is refused too
    manifest["skipped"] = {}
    manifest["config"]["seed"] = 5
    (other / "manifest.json").write_text(json.dumps(manifest))
    _fails(
        phase1.main,
        ["--resume", ckpt, "--cache", str(other), "--out", str(tmp_path / "r")],
        capsys,
        "seed: cache has 5, expected 0",
    )


def test_phase1_sparse_focal_seed_variant(cache_dir, tmp_path):
    from training import phase1

    out = tmp_path / "sparse"
    assert (
        phase1.main(
            tiny_args(cache_dir, out, "--target", "sparse", "--loss", "focal", "--max-steps", "8", "--lr", "1e-2")
        )
        == 0
    )
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["extra"]["train_config"]["loss"] == "focal"


def test_input_normalisation_from_init_or_converted(phase1_run, cache_dir, tmp_path, capsys):
    from training import phase2
    from training.train_config import resolve_config
    from training.trainer import prepare

    assert torch.load(phase1_run / "best.pt", weights_only=True)["config"]["input_norm"] == "image"
    base = {"cache": str(cache_dir), "init": str(phase1_run / "best.pt"), "dev_eval": "none", "batch_size": 2}
    assert prepare(resolve_config(2, base)).model_config.input_norm == "image"  # inherited
    converted = prepare(resolve_config(2, {**base, "input_norm": "imagenet"}))
    assert converted.model_config.input_norm == "imagenet"
    assert "fine-tuning it with input_norm='imagenet'" in capsys.readouterr().err
    # a resumed run keeps its normalisation
    out = tmp_path / "p2"
    args = _short_phase2_args(cache_dir, phase1_run / "best.pt", out)
    assert phase2.main(args) == 0
    _fails(
        phase2.main,
        ["--resume", str(out / "last.pt"), "--input-norm", "imagenet"],
        capsys,
        "has input_norm='image' but the config asks for 'imagenet'",
        "drop --input-norm",
    )


def test_fast_variant_converted_from_init_and_trained(phase1_run, cache_dir, tmp_path, capsys):
    import dataclasses

    from kpnet.model import KpNet
    from training import phase2
    from training.train_config import TrainConfig, resolve_config
    from training.trainer import load_init_weights, prepare

    with pytest.raises(ValueError, match="crop 224x320 must be multiples of 64 with downsample 2; e.g. --crop"):
        TrainConfig(cache="c", downsample=2)
    with pytest.raises(ValueError, match="downsample must be one of 1, 2; got 3"):
        TrainConfig(cache="c", downsample=3)
    base = {
        "cache": str(cache_dir),
        "init": str(phase1_run / "best.pt"),
        "dev_eval": "none",
        "batch_size": 2,
        "crop": (64, 128),
        "eval_size": (128, 192),
    }
    assert prepare(resolve_config(2, base)).model_config.downsample == 1  # inherited
    converted = prepare(resolve_config(2, {**base, "downsample": 2}))
    assert converted.model_config.downsample == 2 and converted.model_config.stride == 64
    assert "fine-tuning it with downsample=2" in capsys.readouterr().err
    # inherited from --init, the crop is checked against the model's stride too
    out = tmp_path / "fast"
    args = _short_phase2_args(
        cache_dir, phase1_run / "best.pt", out, "--crop", "64x128", "--eval-size", "128x192", "--downsample", "2"
    )
    assert phase2.main(args) == 0
    fast = KpNet.from_pretrained(out / "last.pt")
    # phase 2 adds the sub-cell head by default (64 logits per 8x8 cell with downsample 2)
    assert fast.config.downsample == 2 and fast.config.input_size == (128, 192) and fast.config.cell_head
    assert fast.cell.out_channels == 64
    assert not prepare(resolve_config(2, {**base, "cell_head": False})).model_config.cell_head
    # added at zero: the converted model computes exactly its source's output
    converted = prepare(resolve_config(2, base))
    assert converted.model_config.cell_head and not converted.model_config.downsample == 2
    source = KpNet.from_pretrained(phase1_run / "best.pt")
    assert not source.config.cell_head
    with_cell = KpNet(converted.model_config).eval()
    load_init_weights(with_cell, converted.init["state_dict"], "init")
    x = torch.rand(1, 1, 128, 192)
    with torch.no_grad():
        torch.testing.assert_close(with_cell(x), source(x))
    assert with_cell.cell.out_channels == 16
    # back to the plain head, and a head of another cell size (downsample 2 -> 1) restarts at zero
    plain = KpNet(dataclasses.replace(converted.model_config, cell_head=False))
    load_init_weights(plain, fast.state_dict(), "fast")
    full = KpNet(converted.model_config).eval()
    load_init_weights(full, fast.state_dict(), "fast")
    assert torch.count_nonzero(full.cell.weight) == 0 and not hasattr(plain, "cell")
    capsys.readouterr()
    _fails(
        phase2.main,
        [
            "--cache",
            str(cache_dir),
            "--init",
            str(out / "last.pt"),
            "--out",
            str(tmp_path / "x"),
            "--dev-eval",
            "none",
            "--batch-size",
            "2",
            "--crop",
            "96x128",
        ],
        capsys,
        "crop 96x128 must be multiples of 64 with downsample 2",
    )
    _fails(
        phase2.main,
        ["--resume", str(out / "last.pt"), "--downsample", "1", "--crop", "64x128"],
        capsys,
        "has downsample=2 but the config asks for 1",
        "drop --downsample",
    )


def test_best_checkpoint_exports_to_onnx(phase1_run, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from export.onnx import ExportOptions, export_onnx

    out = tmp_path / "p1.onnx"
    export_onnx(phase1_run / "best.pt", out, ExportOptions(exporter="torchscript"))
    assert out.stat().st_size > 10_000


def test_phase2_huber_trains_and_resumes_exactly(phase1_run, cache_dir, tmp_path):
    from training import phase2

    out = tmp_path / "p2"
    args = tiny_args(
        cache_dir,
        out,
        "--init",
        str(phase1_run / "best.pt"),
        "--max-steps",
        "24",
        "--ckpt-every",
        "8",
        "--log-every",
        "1",
    )
    assert phase2.main(args) == 0
    means = epoch_means(out, 4)
    assert means[-1] < 0.9 * means[0], means
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["extra"]["phase"] == 2 and ckpt["training"]["train_config"]["loss"] == "huber"
    resumed = tmp_path / "p2r"
    assert phase2.main(["--resume", str(out / "step_0000016.pt"), "--out", str(resumed), "--no-progress"]) == 0
    a, b = read_log(out, "train/loss"), read_log(resumed, "train/loss")
    assert sorted(b) == list(range(17, 25)) and [b[s] for s in b] == [a[s] for s in b]


def test_phase2_kl_with_direct_term(phase1_run, cache_dir, tmp_path):
    from training import phase2

    out = tmp_path / "p2kl"
    args = tiny_args(
        cache_dir,
        out,
        "--init",
        str(phase1_run / "best.pt"),
        "--loss",
        "kl",
        "--direct-weight",
        "0.5",
        "--max-steps",
        "16",
        "--log-every",
        "1",
    )
    assert phase2.main(args) == 0
    means = epoch_means(out, 4)
    assert means[-1] < 0.9 * means[0], means
    assert len(read_log(out, "train/consistency")) == 16 and len(read_log(out, "train/direct")) == 16
