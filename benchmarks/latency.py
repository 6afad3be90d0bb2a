"""Latency benchmark: kpnet models against classical and learned detectors, per stage.

    python benchmarks/latency.py                                  # models/*.onnx + baselines
    python benchmarks/latency.py --models models/kpnet-small.onnx --baselines orb,gftt --threads 2
    python benchmarks/latency.py --sizes 480x640,376x1241,480x752,720x1280 --baselines ''   # speed vs working size
    python benchmarks/latency.py --before /tmp/kpnet-before       # the same entries with another checkout's code
    python benchmarks/latency.py --profile                        # + ONNX Runtime node profile

Sizes are HxW (height first). Each frame runs at the detector's working size (by default the
frame's own aspect at the model's pixel budget); the table shows it.

Every entry runs in its own process (so peak memory is its own and thread pools do not
interfere), warms up, then times pre-processing, network and post-processing separately and
the whole `detect` call end to end. It prints a markdown table and writes JSON + markdown to
--out. Timings are wall-clock medians and percentiles over --runs iterations.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ("orb", "fast", "gftt", "harris", "sift", "superpoint-arch", "xfeat-arch", "aliked-n16", "aliked-t16")
DEFAULT_BASELINES = "orb,fast,gftt,superpoint-arch,xfeat-arch,aliked-n16"


# --------------------------------------------------------------------------- timing helpers
def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
    }


def _time_stages(
    pre: Callable[[], Any],
    net: Callable[[Any], Any],
    post: Callable[[Any], Any],
    total: Callable[[], Any],
    warmup: int,
    runs: int,
) -> dict[str, Any]:
    """Host-side pre / net / post stage times and the end-to-end ``total`` (see :func:`_time_chain`)."""
    return _time_chain([("pre", lambda _: pre()), ("net", net), ("post", post)], total, _HostClock(), warmup, runs)


class _HostClock:
    """Wall-clock stage marks (host-side work)."""

    def mark(self) -> float:
        return time.perf_counter()

    def elapsed_ms(self, a: float, b: float) -> float:
        return (b - a) * 1e3

    def sync(self) -> None:
        pass


class _CudaClock:
    """CUDA events recorded on the current stream: each stage's GPU time, without the host
    waiting between stages (``elapsed_ms`` synchronises on the stage's end event)."""

    def __init__(self, torch: Any, device: Any) -> None:
        self.torch, self.device = torch, device

    def mark(self) -> Any:
        e = self.torch.cuda.Event(enable_timing=True)
        e.record(self.torch.cuda.current_stream(self.device))
        return e

    def elapsed_ms(self, a: Any, b: Any) -> float:
        b.synchronize()
        return float(a.elapsed_time(b))

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.device)


def _time_chain(
    stages: list[tuple[str, Callable[[Any], Any]]], total: Callable[[], Any], clock: Any, warmup: int, runs: int
) -> dict[str, Any]:
    """Time ``stages`` (each takes the previous stage's output) with ``clock`` marks between
    them, then ``total`` end to end in wall-clock time with the device synchronised on both sides."""

    def chain() -> Any:
        x = None
        for _, f in stages:
            x = f(x)
        return x

    for _ in range(warmup):
        chain()
        total()
    clock.sync()
    per: dict[str, list[float]] = {name: [] for name, _ in stages}
    out = None
    for _ in range(runs):
        marks = [clock.mark()]
        x = None
        for _, f in stages:
            x = f(x)
            marks.append(clock.mark())
        for i, (name, _) in enumerate(stages):
            per[name].append(clock.elapsed_ms(marks[i], marks[i + 1]))
        out = x
    tot = []
    for _ in range(runs):
        clock.sync()
        t0 = time.perf_counter()
        total()
        clock.sync()
        tot.append((time.perf_counter() - t0) * 1e3)
    r: dict[str, Any] = {name: _stats(v) for name, v in per.items()}
    r["total"] = _stats(tot)
    r["keypoints"] = len(out) if out is not None else 0
    return r


def run_kpnet_device(det: Any, image: np.ndarray, a: dict[str, Any]) -> dict[str, Any]:
    """Stage times of the on-device path (a torch frame through the public stages): host->device
    copy of the uint8 frame (from pinned memory), ``prepare``, ``infer``, ``decode``,
    device->host copy of the keypoints. On CUDA each stage is timed with CUDA events; "total"
    is the whole path, frame in host memory to keypoints in host memory, in wall-clock time with
    device synchronisation."""
    import torch

    device = torch.device(det.info.torch_device)
    cuda = device.type == "cuda"
    host = torch.from_numpy(np.ascontiguousarray(image))
    if cuda:
        host = host.pin_memory()
    clock = _CudaClock(torch, device) if cuda else _HostClock()

    def d2h(k: Any) -> np.ndarray:
        return k.xy.cpu().numpy()

    stages = [
        ("h2d", lambda _: host.to(device, non_blocking=True)),
        ("pre", lambda x: det.prepare(x)),
        ("net", lambda p: (det.infer(p), p)),
        ("post", lambda o: det.decode(*o)),
        ("d2h", d2h),
    ]
    with torch.inference_mode():
        r = _time_chain(
            stages, lambda: d2h(det.detect(host.to(device, non_blocking=True))), clock, a["warmup"], a["runs"]
        )
    r["timer"] = "CUDA events per stage" if cuda else "wall clock per stage"
    return r


def _gray(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.resize(g, size, interpolation=cv2.INTER_AREA) if g.shape[::-1] != size else g


# --------------------------------------------------------------------------- runners
def run_kpnet(path: str, image: np.ndarray, a: dict[str, Any]) -> dict[str, Any]:
    """Per-image stage times of a kpnet model at batch size a['batch'], through the
    detector's public stages (prepare, infer, decode)."""
    from kpnet import KeypointDetector

    bsz = a.get("batch", 1)
    kw = {"device": a["device"]} if path.endswith((".pt", ".pth")) and a.get("device") else {}
    if a.get("distribution"):
        kw["distribution"] = a["distribution"]
    det = KeypointDetector(path, max_keypoints=a["k"], threads=a["threads"], **kw)
    wh, ww = det.working_size(image.shape[:2])
    # the working size (HxW): the frame itself, or the size it is resized to
    at = f", resized to {wh}x{ww}" if (wh, ww) != tuple(image.shape[:2]) else f", at {wh}x{ww}"
    if bsz > 1 and not det.info.dynamic_batch:
        raise ValueError(f"{path} has a fixed batch size; re-export without --static-batch to benchmark batch {bsz}")
    dev = det.info.torch_device
    if (dev is not None and dev.startswith("cuda")) or a.get("device_path"):
        if bsz > 1:
            raise ValueError("the on-device path runs one frame at a time; use --batch 1")
        if dev is None:
            raise ValueError(f"{path} runs numpy arrays; the on-device path needs a .pt or .engine model")
        r = run_kpnet_device(det, image, a)
        info = det.info
        r.update(
            backend=f"{info.name} ({info.device}, {info.precision}), {det.config.distribution}{at}, on-device path (torch frame, as detect_torch)",
            threads=info.threads,
            batch=1,
            working_size=[wh, ww],
        )
        return r
    images = [image] * bsz

    def pre():
        ps = [det.prepare(im) for im in images]
        return ps if bsz == 1 else (ps, np.concatenate([p.batch for p in ps]))

    def net(ps):
        if bsz == 1:
            return det.infer(ps[0]), ps
        return det.infer(ps[1]), ps[0]

    def post(o):
        out, ps = o
        return [det.decode(out, p, i) for i, p in enumerate(ps)][0]

    total = (lambda: det.detect(image)) if bsz == 1 else (lambda: det.detect_batch(images))
    r = _time_stages(pre, net, post, total, a["warmup"], a["runs"])
    for stage in ("pre", "net", "post", "total"):
        r[stage] = {k: v / bsz for k, v in r[stage].items()}
    info = det.info
    r.update(
        backend=f"{info.name} ({info.device}, {info.precision}), {det.config.distribution}{at}",
        threads=info.threads,
        batch=bsz,
        working_size=[wh, ww],
    )
    return r


def run_opencv(name: str, image: np.ndarray, a: dict[str, Any]) -> dict[str, Any]:
    """A classical detector from :func:`kpnet.baselines.make_classical` on the frame (gray
    conversion is the pre-processing stage; the detectors return their top-k sorted)."""
    import cv2

    from kpnet.baselines import make_classical

    cv2.setNumThreads(a["threads"])
    fn = make_classical(name, a["k"])
    h, w = image.shape[:2]
    r = _time_stages(
        lambda: _gray(image, (w, h)),
        lambda g: fn(g),
        lambda out: out[0],
        lambda: fn(_gray(image, (w, h)))[0],
        a["warmup"],
        a["runs"],
    )
    r.update(backend=f"OpenCV {cv2.__version__} (kpnet.baselines)", threads=a["threads"])
    return r


def _arch_net(name: str):
    """(torch network with random weights, index of its 65-channel keypoint logits, index of a
    reliability map or None) for the ``*-arch`` baselines."""
    if name == "superpoint-arch":
        from training.teachers.superpoint import SuperPointNet

        return SuperPointNet().eval(), 0, None
    if name == "xfeat-arch":
        from kornia.feature.xfeat import XFeatModel

        return XFeatModel().eval(), 1, 2
    raise ValueError(f"unknown architecture baseline {name!r}")


def run_onnx_arch(name: str, image: np.ndarray, a: dict[str, Any]) -> dict[str, Any]:
    """SuperPoint's or XFeat's architecture (random weights: latency only) under ONNX Runtime,
    the whole network (detector and descriptor heads), then host decoding of the 65-channel
    keypoint logits as in those papers (softmax, drop the dustbin, depth-to-space; XFeat also
    weights by its reliability map), NMS and top-k. Descriptor sampling is not included."""
    import onnxruntime as ort
    import torch

    from kpnet.config import DecodeConfig
    from kpnet.postprocess import decode

    w, h = a["size"]
    net_t, kp_out, rel_out = _arch_net(name)
    tmp = Path(tempfile.mkdtemp()) / f"{name}.onnx"
    with torch.no_grad():
        n_out = len(net_t(torch.rand(1, 1, 64, 64)))
        torch.onnx.export(
            net_t,
            (torch.rand(1, 1, h, w),),
            str(tmp),
            dynamo=False,
            input_names=["image"],
            output_names=[f"out{i}" for i in range(n_out)],
            opset_version=17,
        )
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = a["threads"]
    sess = ort.InferenceSession(str(tmp), so, providers=["CPUExecutionProvider"])
    cfg = DecodeConfig(max_keypoints=a["k"], nms_radius=4, threshold=0.0, border=4)

    def pre():
        return (_gray(image, (w, h)).astype(np.float32) / 255.0)[None, None]

    def net(x):
        return sess.run(None, {"image": x})

    def post(o):
        logits = o[kp_out][0]
        e = np.exp(logits - logits.max(axis=0, keepdims=True))
        p = (e / e.sum(axis=0, keepdims=True))[:64]
        hc, wc = p.shape[1:]
        prob = p.reshape(8, 8, hc, wc).transpose(2, 0, 3, 1).reshape(hc * 8, wc * 8)
        if rel_out is not None:
            prob = prob * np.repeat(np.repeat(o[rel_out][0, 0], 8, axis=0), 8, axis=1)
        return decode(np.ascontiguousarray(prob, dtype=np.float32), cfg, logits=False)[0]

    r = _time_stages(pre, net, post, lambda: post(net(pre())), a["warmup"], a["runs"])
    r.update(backend=f"onnxruntime {ort.__version__} (CPU, fp32), random weights", threads=a["threads"])
    return r


def run_aliked(name: str, image: np.ndarray, a: dict[str, Any]) -> dict[str, Any]:
    import torch

    from training.teachers.aliked import ALIKEDTeacher

    torch.set_num_threads(a["threads"])
    w, h = a["size"]
    t = ALIKEDTeacher(name, max_keypoints=a["k"])

    def pre():
        return torch.from_numpy(_gray(image, (w, h)).astype(np.float32) / 255.0)[None, None]

    r = _time_stages(
        pre, lambda x: t.detect(x), lambda f: f[0].keypoints, lambda: t.detect(pre()), a["warmup"], a["runs"]
    )
    r.update(backend=f"torch {torch.__version__} (CPU, fp32), shipped weights", threads=a["threads"])
    return r


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM belongs to the process image (ru_maxrss
    would carry over the parent's high-water mark across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(kind: str, target: str, a: dict[str, Any]) -> dict[str, Any]:
    import cv2

    try:
        image = cv2.imread(a["image"], cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read {a['image']}")
        fh, fw = a["frame_hw"]
        image = cv2.resize(image, (fw, fh), interpolation=cv2.INTER_AREA)
        if kind == "model":
            r = run_kpnet(target, image, a)
        elif target in ("orb", "fast", "gftt", "harris", "sift"):
            r = run_opencv(target, image, a)
        elif target.endswith("-arch"):
            r = run_onnx_arch(target, image, a)
        elif target.startswith("aliked"):
            r = run_aliked(target, image, a)
        else:
            raise ValueError(f"unknown baseline {target!r}")
        r["peak_rss_mb"] = peak_rss_mb()
        return r
    except Exception as exc:  # reported in the table, the benchmark goes on
        return {"error": f"{type(exc).__name__}: {exc}"}


def run_isolated(kind: str, target: str, a: dict[str, Any], code_root: Path = ROOT) -> dict[str, Any]:
    """Run one entry in a fresh interpreter with the kpnet code of ``code_root`` (its own
    benchmarks/latency.py runs the entry); its last stdout line is the JSON result."""
    if kind == "skip":
        return {"error": target}
    script = Path(code_root) / "benchmarks" / "latency.py"
    cmd = [sys.executable, str(script), "--child", json.dumps([kind, target, a])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code_root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"child failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


SUFFIX = {"onnxruntime": ".onnx", "torch": ".pt", "tensorrt": ".engine"}


def model_for_backend(model: str, backend: str) -> tuple[str, str | None]:
    """The file to run ``model`` with ``backend`` (a sibling with the backend's suffix), or a
    reason why that backend is skipped here."""
    path = Path(model).with_suffix(SUFFIX[backend])
    if backend == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return str(path), "TensorRT is not installed (pip install 'kpnet[gpu]') and needs an NVIDIA GPU"
        if not path.is_file():
            return str(path), f"no engine next to {model}; build one with python -m export.trt {model}"
    if not path.is_file():
        return str(path), f"no {path.suffix} file next to {model}"
    if backend == "torch":
        if importlib.util.find_spec("torch") is None:
            return str(path), "torch is not installed (pip install 'kpnet[torch]')"
    return str(path), None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Stacked bars of pre / net / post medians per entry."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; skipping the plot")
        return
    names = [
        f"{r['name']} {r.get('frame', '')} b{r.get('batch', 1)}"
        if "batch" in r
        else f"{r['name']} {r.get('frame', '')}"
        for r in ok
    ]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(ok) + 1.2))
    left = np.zeros(len(ok))
    for stage, colour in (("pre", "#9ecae1"), ("net", "#3182bd"), ("post", "#fd8d3c")):
        v = np.array([r[stage]["median"] for r in ok])
        ax.barh(names, v, left=left, color=colour, label=stage)
        left += v
    ax.set_xscale("log")
    ax.set_xlabel("ms per image (median)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------- profile
def profile_onnx(path: str, a: dict[str, Any], top: int = 10) -> list[dict[str, Any]]:
    """ONNX Runtime profile of the network alone: time per node, slowest first."""
    import onnxruntime as ort

    w, h = a["size"]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = a["threads"]
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    dims = sess.get_inputs()[0].shape
    if isinstance(dims[2], int) and isinstance(dims[3], int):
        h, w = dims[2], dims[3]  # a model with a fixed size of its own
    else:
        from kpnet import KeypointDetector

        with KeypointDetector(path, warmup=0) as det:
            h, w = det.working_size((h, w))  # what detect() runs a frame of this size at
    x = np.random.default_rng(0).random((1, 1, h, w), dtype=np.float32)
    for _ in range(a["warmup"]):
        sess.run(None, {sess.get_inputs()[0].name: x})
    runs = max(10, a["runs"] // 2)
    for _ in range(runs):
        sess.run(None, {sess.get_inputs()[0].name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        d = per.setdefault(name, {"node": name, "op": e["args"].get("op_name", "?"), "us": 0.0})
        d["us"] += e["dur"]
    total = sum(d["us"] for d in per.values()) or 1.0
    rows = sorted(per.values(), key=lambda d: -d["us"])[:top]
    for d in rows:
        d["ms_per_run"] = d["us"] / runs / 1e3
        d["share"] = d["us"] / total
        del d["us"]
    return rows


# --------------------------------------------------------------------------- main
def _fmt(r: dict[str, Any], stage: str) -> str:
    return f"{r[stage]['median']:.2f}" if stage in r else "-"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| detector | frame HxW | working HxW | backend | threads | batch | h2d ms | pre ms | net ms | post ms | d2h ms | total ms (median) | total p90 | total p99 | FPS | keypoints | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        frame = r.get("frame", "")
        if "error" in r:
            lines.append(f"| {r['name']} | {frame} | | skipped: {r['error']} |  |  |  |  |  |  |  |  |  |  |  |  |  |")
            continue
        ws = "x".join(map(str, r["working_size"])) if r.get("working_size") else frame
        lines.append(
            f"| {r['name']} | {frame} | {ws} | {r['backend']} | {r['threads']} | {r.get('batch', 1)} | {_fmt(r, 'h2d')} | {_fmt(r, 'pre')} | {_fmt(r, 'net')} | {_fmt(r, 'post')} | {_fmt(r, 'd2h')} | "
            f"**{r['total']['median']:.2f}** | {r['total']['p90']:.2f} | {r['total']['p99']:.2f} | {1e3 / r['total']['median']:.0f} | {r['keypoints']} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, target, a = json.loads(argv[1])
        print(json.dumps(_child(kind, target, a)))
        return 0
    from kpnet.io import atomic_write_text
    from kpnet.sizing import format_hw, parse_hw

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False, formatter_class=fmt)
    p.add_argument("--models", "--model", nargs="*", help="kpnet model files (default: models/*.onnx)")
    p.add_argument(
        "--backends",
        default="onnxruntime",
        help="comma-separated: onnxruntime (.onnx), torch (.pt next to it), tensorrt (.engine next to it)",
    )
    p.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,4 (times are per image)")
    p.add_argument(
        "--device",
        help="torch device for the torch backend (default cpu); on cuda the on-device path is timed with CUDA events",
    )
    p.add_argument(
        "--device-path",
        action="store_true",
        help="time the on-device path (torch frame: h2d, pre, net, post, d2h) for .pt/.engine models also on CPU",
    )
    p.add_argument(
        "--distribution",
        default="topk",
        help="kpnet keypoint distribution: topk, grid, anms (comma-separated to compare)",
    )
    p.add_argument(
        "--baselines", default=DEFAULT_BASELINES, help=f"comma-separated, from: {', '.join(BASELINES)}; '' for none"
    )
    p.add_argument("--size", default="480x640", help="frame size HxW (height first)")
    p.add_argument(
        "--sizes",
        help="comma-separated frame sizes HxW to sweep (overrides --size), e.g. 480x640,376x1241,480x752,720x1280",
    )
    p.add_argument(
        "--before",
        help="also run the kpnet model entries with the code and models/ of this checkout (e.g. a git worktree of the previous commit), in the same run",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="intra-op threads for every detector (default: all cores)",
    )
    p.add_argument("--runs", type=int, default=50, help="timed iterations per entry")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    p.add_argument("--max-keypoints", "-k", type=int, default=1000, help="keypoint budget")
    p.add_argument(
        "--image", default=str(ROOT / "examples" / "astronaut.jpg"), help="source image, resized to each frame size"
    )
    p.add_argument("--profile", action="store_true", help="also profile ONNX models node by node")
    p.add_argument("--out", default="runs/latency", help="folder for latency.json and latency.md")
    a = p.parse_args(argv)

    try:
        frames = [parse_hw(t, "--sizes") for t in a.sizes.split(",")] if a.sizes else [parse_hw(a.size, "--size")]
    except ValueError as exc:
        p.error(str(exc))
    models = a.models if a.models is not None else sorted(str(x) for x in (ROOT / "models").glob("*.onnx"))
    baselines = [b for b in a.baselines.split(",") if b]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        p.error(f"unknown baselines {unknown}; choose from: {', '.join(BASELINES)}")
    for m in models:
        if not Path(m).is_file():
            p.error(f"model not found: {m}")
    before = Path(a.before).resolve() if a.before else None
    if before is not None and not (before / "benchmarks" / "latency.py").is_file():
        p.error(f"--before {a.before} is not a kpnet checkout (no benchmarks/latency.py)")
    distributions = [d for d in a.distribution.split(",") if d]
    backends = [b for b in a.backends.split(",") if b]
    bad = [b for b in backends if b not in SUFFIX]
    if bad:
        p.error(f"unknown backends {bad}; choose from: {', '.join(SUFFIX)}")
    batches = [int(b) for b in a.batch.split(",")]

    import cv2
    import onnxruntime as ort

    env = {
        "machine": cpu_model(),
        "gpu": gpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "sizes": [format_hw(f) for f in frames],
        "threads": a.threads,
        "runs": a.runs,
        "max_keypoints": a.max_keypoints,
        "image": a.image,
        "before": str(before) if before else None,
    }
    print(
        f"latency at {', '.join(env['sizes'])} (HxW), {a.threads} threads, K={a.max_keypoints}, {a.runs} runs after {a.warmup} warm-up; {os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    for fh, fw in frames:
        frame = format_hw((fh, fw))
        # "size" (width, height) is what older checkouts' children read.
        args = {
            "size": (fw, fh),
            "frame_hw": (fh, fw),
            "threads": a.threads,
            "runs": a.runs,
            "warmup": a.warmup,
            "k": a.max_keypoints,
            "image": a.image,
            "device": a.device,
            "device_path": a.device_path,
        }
        for m in models:
            for be in backends:
                path, reason = model_for_backend(m, be)
                for bsz in batches:
                    for dist in distributions:
                        runs = [("", ROOT, path)]
                        if before is not None:
                            runs.append((" (before)", before, str(before / "models" / Path(path).name)))
                        for label, root, mpath in runs:
                            if reason is not None:
                                r = {"error": reason}
                            elif not Path(mpath).is_file():
                                r = {"error": f"{mpath} not found"}
                            else:
                                r = run_isolated("model", mpath, {**args, "batch": bsz, "distribution": dist}, root)
                            r["name"] = f"{Path(path).name} [{be}]{label}"
                            r["frame"] = frame
                            results.append(r)
                            print(
                                f"  {r['name']} {frame} batch {bsz}: {r['total']['median']:.2f} ms/img"
                                if "error" not in r
                                else f"  {r['name']} {frame}: {r['error']}",
                                flush=True,
                            )
        for b in baselines:
            r = run_isolated("baseline", b, args)
            r["name"] = b
            r["frame"] = frame
            results.append(r)
            print(
                f"  {b} {frame}: {r['total']['median']:.2f} ms" if "error" not in r else f"  {b}: {r['error']}",
                flush=True,
            )
    md = [
        f"Latency, {a.threads} threads, K={a.max_keypoints}, median of {a.runs} runs ({env['machine']}, {env['cpus']} CPUs); sizes HxW",
        "",
        table(results),
    ]
    profiles = {}
    if a.profile:
        fw_hw = frames[0]
        for m in models:
            rows = profile_onnx(
                m, {"size": (fw_hw[1], fw_hw[0]), "threads": a.threads, "warmup": a.warmup, "runs": a.runs}
            )
            profiles[Path(m).name] = rows
            md += [
                "",
                f"Slowest nodes of {Path(m).name} (ONNX Runtime profiler, network only):",
                "",
                "| node | op | ms/run | share |",
                "|---|---|---|---|",
            ]
            md += [f"| {r['node']} | {r['op']} | {r['ms_per_run']:.3f} | {100 * r['share']:.1f}% |" for r in rows]
    text = "\n".join(md)
    plot(results, Path(a.out) / "latency.png")
    print()
    print(text)
    out = Path(a.out)
    atomic_write_text(
        out / "latency.json", json.dumps({"env": env, "results": results, "profiles": profiles}, indent=2)
    )
    atomic_write_text(out / "latency.md", text + "\n")
    print(f"\nwrote {out / 'latency.json'} and {out / 'latency.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
