"""TensorRT: engine building (export.trt), engine metadata, the TensorRT backend and INT8 Q/DQ.

Everything that needs no GPU runs here: argument validation (before any TensorRT import),
metadata round trip and version refusal, the missing-TensorRT messages, TensorRT operator
support of the in-graph post-processing graph, the Q/DQ INT8 model under ONNX Runtime on the
CPU, and the device pre-processing/decoding code run on CPU tensors. Tests marked ``gpu``
build and run real engines; they skip without an NVIDIA GPU and the tensorrt package.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from kpnet.backends.tensorrt.metadata import (
    EngineIncompatibleError,
    EngineMetadata,
    ShapeProfile,
    check_engine_compatible,
    read_engine_metadata,
    sidecar_path,
    write_engine_metadata,
)
from kpnet.config import TENSORRT_MAX_TOPK, DecodeConfig
from kpnet.errors import MissingDependencyError, ModelLoadError, ModelNotFoundError, ProviderUnavailableError

pytest.importorskip("onnx")

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"
TINY_HW = (128, 160)


def _gpu_ready() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


GPU_REASON = "needs an NVIDIA GPU and the tensorrt package"
gpu = pytest.mark.skipif(not _gpu_ready(), reason=GPU_REASON)


class _TensorRTTripwire(types.ModuleType):
    """Stands in for ``tensorrt``: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"tensorrt.{name} was used before the arguments were validated")


@pytest.fixture
def no_tensorrt(monkeypatch):
    """``import tensorrt`` raises ImportError, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def _meta(**kw) -> EngineMetadata:
    base = dict(
        kpnet_version="0.1.0",
        tensorrt_version="10.3.0",
        precision="fp16",
        input_name="image",
        output_names=("heatmap",),
        profiles=(ShapeProfile((1, 1, 480, 640), (2, 1, 480, 640), (8, 1, 480, 640)),),
        model_config={"backbone": "small", "fpn_width": 64, "input_size": [480, 640]},
        gpu_name="NVIDIA Jetson Orin",
        compute_capability="8.7",
        built_at="2026-01-01T00:00:00+00:00",
        build_command="python -m export.trt student.onnx -o student.engine --fp16",
        source="student.onnx",
        onnx_metadata={"kpnet_version": "0.1.0"},
    )
    base.update(kw)
    return EngineMetadata(**base)


# ---------------------------------------------------------------------------- CLI and argument validation
def test_help_works_without_tensorrt(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    from export import trt as trt_cli

    with pytest.raises(SystemExit) as e:
        trt_cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--fp16",
        "--int8",
        "--best",
        "--calib-images",
        "--min",
        "--opt",
        "--max",
        "--workspace",
        "--timing-cache",
        "--with-postprocess",
        "--max-keypoints",
    ):
        assert flag in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--best", "--fp16"], r"--best already means fp16 \+ int8"),
        (["--calib-images", "{tmp}"], r"--calib-images is only used with --int8"),
        (["--int8"], r"--int8 needs --calib-images DIR.*no Q/DQ nodes"),
        (["--int8", "--calib-images", "{tmp}/nope"], r"--calib-images folder not found"),
        (["--min", "1x128x160"], r"pass all of --min, --opt and --max"),
        (["--min", "2x128x160", "--opt", "1x128x160", "--max", "4x128x160"], r"min <= opt <= max"),
        (["--min", "1x100x160", "--opt", "1x128x160", "--max", "1x128x160"], r"multiples of 32"),
        (["--min", "1x128x160", "--opt", "1x128x160", "--max", "1x128x160", "--static"], r"--static conflicts"),
        (["--min", "1x128", "--opt", "1x128x160", "--max", "1x128x160"], r"BxHxW"),
        (["-o", "{tmp}/x.trt"], r"must end in .engine or .plan"),
        (["--with-postprocess"], r"--with-postprocess exports NMS \+ top-k from a checkpoint"),
        (["--workspace", "0"], r"--workspace must be a positive"),
        (["--opt-level", "9"], r"--opt-level must be 0..5"),
    ],
)
def test_argument_errors_before_tensorrt(tiny_onnx, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setitem(sys.modules, "tensorrt", _TensorRTTripwire("tensorrt"))
    from export import trt as trt_cli

    args = [str(tiny_onnx), "-o", str(tmp_path / "x.engine")] + [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert trt_cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("export.trt: error: ") and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_k_over_tensorrt_limit_and_missing_files(tiny_ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", _TensorRTTripwire("tensorrt"))
    from export.trt import TrtBuildOptions, main

    with pytest.raises(ValueError, match=rf"--max-keypoints 5000 exceeds TensorRT's TopK limit of {TENSORRT_MAX_TOPK}"):
        TrtBuildOptions(source=tiny_ckpt, with_postprocess=True, max_keypoints=5000)
    TrtBuildOptions(
        source=tiny_ckpt, with_postprocess=True, max_keypoints=TENSORRT_MAX_TOPK
    )  # the limit itself is fine
    assert main([str(tiny_ckpt), "--with-postprocess", "--max-keypoints", "3841"]) == 2
    assert "TopK limit of 3840" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.onnx")]) == 2
    assert "input model not found" in capsys.readouterr().err
    assert main([str(tmp_path / "model.tflite")]) == 2
    assert "must be an .onnx model" in capsys.readouterr().err
    # A checkpoint has no Q/DQ nodes: INT8 needs calibration images.
    with pytest.raises(ValueError, match="needs --calib-images DIR"):
        TrtBuildOptions(source=tiny_ckpt, int8=True)
    # NMS inside the graph must not be quantised.
    with pytest.raises(ValueError, match="must stay unquantised"):
        TrtBuildOptions(source=tiny_ckpt, int8=True, calib_images=tmp_path, with_postprocess=True)


def test_precision_and_rebuild_command(tiny_onnx, tmp_path):
    from export.trt import TrtBuildOptions

    o = TrtBuildOptions(source=tiny_onnx)
    assert o.precision == "fp32" and o.output == tiny_onnx.with_suffix(".engine")
    assert TrtBuildOptions(source=tiny_onnx, fp16=True).precision == "fp16"
    assert TrtBuildOptions(source=tiny_onnx, fp16=True, int8=True, calib_images=tmp_path).precision == "best"
    o = TrtBuildOptions(
        source=tiny_onnx,
        fp16=True,
        min_shape=(1, 128, 160),
        opt_shape=(2, 128, 160),
        max_shape=(4, 128, 160),
        timing_cache=tmp_path / "t.cache",
    )
    cmd = o.rebuild_command()
    assert (
        cmd.startswith("python -m export.trt ")
        and "--fp16" in cmd
        and "--max 4x128x160" in cmd
        and "--timing-cache" in cmd
    )


def test_profile_resolution_against_the_onnx(tiny_onnx_fixed, tmp_path):
    tiny_onnx = tiny_onnx_fixed
    from export.trt import TrtBuildOptions, check_onnx, inspect_onnx, resolve_profile

    facts = inspect_onnx(tiny_onnx)  # dynamic batch, fixed 128x160
    assert facts.input_dims == (None, 1, 128, 160) and facts.output_names == ("heatmap",) and not facts.is_qdq
    check_onnx(facts, wants_int8=False)
    p = resolve_profile(TrtBuildOptions(source=tiny_onnx), facts)
    assert (p.min, p.opt, p.max) == ((1, 1, 128, 160), (1, 1, 128, 160), (8, 1, 128, 160))
    p = resolve_profile(TrtBuildOptions(source=tiny_onnx, static=True), facts)
    assert p.is_static and p.min == (1, 1, 128, 160)
    p = resolve_profile(
        TrtBuildOptions(source=tiny_onnx, min_shape=(1, 128, 160), opt_shape=(2, 128, 160), max_shape=(4, 128, 160)),
        facts,
    )
    assert p.opt == (2, 1, 128, 160) and p.contains((3, 1, 128, 160)) and not p.contains((5, 1, 128, 160))
    with pytest.raises(ValueError, match="fixed height of 128.*--dynamic-hw"):
        resolve_profile(
            TrtBuildOptions(
                source=tiny_onnx, min_shape=(1, 128, 160), opt_shape=(1, 256, 160), max_shape=(1, 256, 160)
            ),
            facts,
        )
    # a fast-variant model (input pooled 2x2) needs multiples of 64; 128x160 is not one
    import dataclasses

    cfg = json.loads(facts.metadata["kpnet_model_config"])
    fast = dataclasses.replace(
        facts, metadata={**facts.metadata, "kpnet_model_config": json.dumps({**cfg, "downsample": 2})}
    )
    with pytest.raises(ValueError, match="pools its input 2x, so height and width must be multiples of 64"):
        resolve_profile(TrtBuildOptions(source=tiny_onnx), fast)


def test_missing_tensorrt_message_from_cli(tiny_onnx, tmp_path, no_tensorrt, capsys):
    from export.trt import main

    assert main([str(tiny_onnx), "-o", str(tmp_path / "tiny.engine"), "--fp16"]) == 1
    err = capsys.readouterr().err
    assert "pip install tensorrt (in a kpnet clone: pip install -e '.[gpu]')" in err and "Traceback" not in err
    assert not (tmp_path / "tiny.engine").exists()


def test_no_gpu_message(tiny_onnx, tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the no-GPU message cannot be exercised")
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    from export.trt import main

    assert main([str(tiny_onnx), "-o", str(tmp_path / "tiny.engine")]) == 1
    err = capsys.readouterr().err
    assert "no NVIDIA GPU is usable here" in err and "--onnx-only" in err


def test_precision_checks_never_fall_back():
    from export.trt import GpuFacts, PrecisionUnsupportedError, check_precision_supported, verify_precision

    trt10 = types.SimpleNamespace(__version__="10.3.0", BuilderFlag=types.SimpleNamespace(FP16=1, INT8=2))
    maxwell = GpuFacts("GeForce GTX 970", (5, 2))
    with pytest.raises(PrecisionUnsupportedError, match="no fast FP16"):
        check_precision_supported(trt10, maxwell, "fp16")
    with pytest.raises(PrecisionUnsupportedError, match="no INT8"):
        check_precision_supported(trt10, maxwell, "int8")
    check_precision_supported(trt10, maxwell, "fp32")
    check_precision_supported(trt10, GpuFacts("Orin", (8, 7)), "best")
    trt11 = types.SimpleNamespace(__version__="11.4.0", BuilderFlag=types.SimpleNamespace())
    if importlib.util.find_spec("modelopt") is None:
        with pytest.raises(PrecisionUnsupportedError, match=r"removed BuilderFlag.FP16.*nvidia-modelopt"):
            check_precision_supported(trt11, GpuFacts("H100", (9, 0)), "fp16")
    check_precision_supported(trt11, GpuFacts("H100", (9, 0)), "int8")  # Q/DQ, strongly typed: no flag needed
    # An engine whose layer report has only fp32 layers is refused when fp16 was asked.
    with pytest.raises(PrecisionUnsupportedError, match="no FP16 layer"):
        verify_precision('{"Layers": [{"Outputs": [{"Format/Datatype": "Row major linear FP32"}]}]}', "fp16")
    verify_precision('{"Layers": [{"Outputs": [{"Format/Datatype": "Channel major FP16 format"}]}]}', "fp16")


# ---------------------------------------------------------------------------- metadata
def test_metadata_round_trip(tmp_path):
    engine = tmp_path / "student.engine"
    engine.write_bytes(b"engine bytes")
    meta = _meta()
    side = write_engine_metadata(engine, meta)
    assert side == sidecar_path(engine) == tmp_path / "student.engine.json"
    got = read_engine_metadata(engine)
    assert got == meta
    assert got.input_size == (480, 640) and got.input_shape == (None, 1, 480, 640)
    doc = json.loads(side.read_text())
    for key in (
        "kpnet_version",
        "model_config",
        "input_name",
        "output_names",
        "profiles",
        "precision",
        "postprocess_in_graph",
        "decode",
        "tensorrt_version",
        "gpu",
        "built_at",
    ):
        assert key in doc
    assert doc["gpu"] == {"name": "NVIDIA Jetson Orin", "compute_capability": "8.7"}
    assert all(isinstance(v, str) for v in got.flat().values())
    # in-graph decoding round-trips too, and K is checked against TensorRT's limit
    pp = _meta(
        output_names=("keypoints", "scores", "counts"),
        postprocess_in_graph=True,
        decode=DecodeConfig(max_keypoints=512).to_dict(),
    )
    write_engine_metadata(engine, pp)
    assert read_engine_metadata(engine).decode["max_keypoints"] == 512
    with pytest.raises(ValueError, match="max_keypoints in 1..3840"):
        _meta(output_names=("keypoints", "scores", "counts"), postprocess_in_graph=True, decode={"max_keypoints": 5000})
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile((2, 1, 480, 640), (1, 1, 480, 640), (4, 1, 480, 640))


def test_metadata_missing_corrupt_or_stale(tmp_path):
    engine = tmp_path / "student.engine"
    engine.write_bytes(b"engine bytes")
    with pytest.raises(
        ModelLoadError, match=r"no kpnet metadata sidecar \(student.engine.json\).*python -m export.trt"
    ):
        read_engine_metadata(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read the engine metadata.*Rebuild"):
        read_engine_metadata(engine)
    from dataclasses import replace

    from kpnet.backends.tensorrt.metadata import file_sha256

    write_engine_metadata(engine, replace(_meta(), engine_sha256=file_sha256(engine)))
    read_engine_metadata(engine, verify_hash=True)
    engine.write_bytes(b"another engine")
    with pytest.raises(ModelLoadError, match="does not belong to student.engine"):
        read_engine_metadata(engine, verify_hash=True)


def test_engine_from_another_tensorrt_is_refused():
    meta = _meta(tensorrt_version="10.3.0")
    check_engine_compatible(meta, "10.3.0.26")  # same release, other build number: fine
    with pytest.raises(EngineIncompatibleError) as e:
        check_engine_compatible(meta, "11.4.0", engine_path="student.engine")
    msg = str(e.value)
    assert "student.engine was built with TensorRT 10.3.0 but 11.4.0 is installed" in msg
    assert "rebuild it with: python -m export.trt student.onnx -o student.engine --fp16" in msg.lower()
    with pytest.raises(
        EngineIncompatibleError,
        match=r"compute capability 8.7\) but this GPU has compute capability 9.0.*Rebuild it on this machine",
    ):
        check_engine_compatible(meta, "10.3.0", compute_capability="9.0")


# ---------------------------------------------------------------------------- backend errors (no GPU needed)
def _engine_with_sidecar(tmp_path, **kw) -> Path:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    write_engine_metadata(engine, _meta(**kw))
    return engine


def test_backend_error_order(tmp_path, no_tensorrt):
    from kpnet.backends import create_backend

    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="no kpnet metadata sidecar.*python -m export.trt"):
        create_backend(bare)
    engine = _engine_with_sidecar(tmp_path)
    with pytest.raises(
        MissingDependencyError, match=r"pip install tensorrt \(in a kpnet clone: pip install -e '.\[gpu\]'\)"
    ):
        create_backend(engine)
    with pytest.raises(
        ModelNotFoundError,
        match=r"model file not found: .*missing.engine. Build a TensorRT engine .*python -m export.trt MODEL.onnx",
    ):
        create_backend(tmp_path / "missing.engine")
    with pytest.raises(ValueError, match="providers=.*only apply to .onnx"):
        create_backend(engine, providers=["cuda"])
    from kpnet import KeypointDetector

    with pytest.raises(MissingDependencyError, match=r"\[gpu\]"):
        KeypointDetector(engine)


def test_backend_needs_cuda(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the no-CUDA path cannot be exercised")
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    from kpnet.backends import create_backend

    engine = _engine_with_sidecar(tmp_path)
    with pytest.raises(ProviderUnavailableError, match="CUDA is not available"):
        create_backend(engine)
    with pytest.raises(ValueError, match="TensorRT engines run on NVIDIA GPUs"):
        create_backend(engine, device="cpu")


def test_onnxruntime_tensorrt_provider_caches_engines(tmp_path, monkeypatch):
    from kpnet.backends.onnxruntime_backend import resolve_providers

    monkeypatch.setenv("KPNET_TRT_CACHE", str(tmp_path / "cache"))
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    (trt_name, trt_opts), (cuda_name, cuda_opts) = resolve_providers(["tensorrt", "cuda"], avail)
    assert trt_name == "TensorrtExecutionProvider" and cuda_name == "CUDAExecutionProvider"
    assert trt_opts["trt_engine_cache_enable"] is True and trt_opts["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert "trt_fp16_enable" not in trt_opts  # precision is never changed silently
    assert (tmp_path / "cache").is_dir()
    ((_, opts),) = resolve_providers(
        [("tensorrt", {"trt_fp16_enable": True, "trt_engine_cache_path": str(tmp_path / "mine")})], avail
    )
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_path"] == str(tmp_path / "mine")
    assert resolve_providers(["cpu"], avail) == ["CPUExecutionProvider"]


# ---------------------------------------------------------------------------- graph support
#: Operators TensorRT's ONNX parser supports (onnx-tensorrt docs/operators.md, TensorRT 10.x),
#: limited to the ones a kpnet graph may contain, plus the restrictions checked below.
TENSORRT_ONNX_OPS = frozenset(
    """Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant ConstantOfShape
    Conv ConvTranspose CumSum DepthToSpace DequantizeLinear Div Equal Erf Exp Expand Flatten Floor Gather
    GatherElements GatherND Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual HardSigmoid HardSwish
    Identity IsInf IsNaN LeakyRelu Less LessOrEqual Log MatMul Max MaxPool Min Mod Mul Neg NonZero Not Or Pad
    Pow QuantizeLinear Range Reciprocal ReduceMax ReduceMean ReduceMin ReduceSum Relu Reshape Resize ScatterElements
    ScatterND Shape Sigmoid Sign Slice Softmax SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh Tile TopK Transpose
    Unsqueeze Where Xor""".split()
)


def _check_tensorrt_ops(path: Path) -> set[str]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    ops = {n.op_type for n in model.graph.node}
    assert ops <= TENSORRT_ONNX_OPS, f"operators without TensorRT support: {sorted(ops - TENSORRT_ONNX_OPS)}"
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Resize":
            assert attrs.get("mode", b"nearest") in (b"nearest", b"linear"), (
                f"{n.name}: TensorRT Resize supports nearest/linear"
            )
        if n.op_type == "TopK":
            assert n.input[1] in consts, f"{n.name}: TensorRT needs a constant K"
            assert int(np.asarray(consts[n.input[1]]).reshape(-1)[0]) <= TENSORRT_MAX_TOPK
        if n.op_type == "MaxPool":
            assert len([o for o in n.output if o]) == 1, "TensorRT MaxPool has no Indices output"
        if n.op_type == "ScatterND":
            assert attrs.get("reduction", b"none") == b"none"
    return ops


def test_in_graph_postprocess_uses_tensorrt_ops(tiny_onnx_pp, tiny_onnx):
    ops = _check_tensorrt_ops(tiny_onnx_pp)
    assert {"TopK", "MaxPool"} <= ops  # NMS and top-k are really inside
    _check_tensorrt_ops(tiny_onnx)
    from export.trt import check_onnx, inspect_onnx

    facts = inspect_onnx(tiny_onnx_pp)
    assert facts.postprocess_in_graph and facts.decode["max_keypoints"] == 200
    check_onnx(facts, wants_int8=False)


# ---------------------------------------------------------------------------- INT8 Q/DQ
def _astronaut_views(n: int = 8) -> list[np.ndarray]:
    img = cv2.imread(str(SAMPLE), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    views = [img]
    rng = np.random.default_rng(0)
    while len(views) < n:
        s = rng.uniform(0.5, 0.9)
        ch, cw = int(h * s), int(w * s)
        y, x = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
        views.append(img[y : y + ch, x : x + cw])
    return views


@pytest.fixture(scope="module")
def tiny_qdq(tiny_onnx, tmp_path_factory):
    from export.trt import quantize_for_tensorrt
    from kpnet.preprocess import prepare

    calib = [prepare(v, TINY_HW)[0][None, None] for v in _astronaut_views()]
    out = tmp_path_factory.mktemp("int8") / "tiny.int8.onnx"
    kept = quantize_for_tensorrt(tiny_onnx, out, calib)
    assert kept, "the head/upsampling tail should stay in fp32"
    return out


def test_qdq_int8_is_tensorrt_compatible(tiny_qdq):
    import onnx
    from onnx import numpy_helper

    from export.trt import check_onnx, inspect_onnx

    facts = inspect_onnx(tiny_qdq)
    assert facts.is_qdq and facts.qdq_problems == ()
    assert facts.metadata["kpnet_precision"] == "int8" and facts.metadata["kpnet_input_size"] == "[128, 160]"
    model = onnx.load(str(tiny_qdq))
    inits = {t.name: t for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 20
    for n in qdq:  # symmetric signed int8: what TensorRT's explicit quantisation accepts
        zp = inits[n.input[2]]
        assert zp.data_type == onnx.TensorProto.INT8 and not numpy_helper.to_array(zp).any()
    check_onnx(facts, wants_int8=True)
    with pytest.raises(ValueError, match="INT8-quantised.*--int8"):
        check_onnx(facts, wants_int8=False)
    _check_tensorrt_ops(tiny_qdq)


def test_qdq_int8_runs_on_cpu_and_agrees_with_fp32(tiny_onnx, tiny_qdq):
    """Tolerance: repeatability >= 0.8 at 3 px between the int8 and fp32 keypoints (identity
    homography) on the sample image, as the issue asks; measured about 0.9 on the tiny model."""
    from kpnet import KeypointDetector
    from kpnet.metrics import repeatability

    img = cv2.imread(str(SAMPLE), cv2.IMREAD_COLOR)
    with (
        KeypointDetector(tiny_onnx, threads=1) as fp32,
        KeypointDetector(tiny_qdq, threads=1, providers=["cpu"]) as int8,
    ):
        assert int8.info.precision == "int8" and int8.info.device == "CPUExecutionProvider"
        a, b = fp32.detect(img), int8.detect(img)
    assert len(a) > 50 and len(b) > 50
    size = (img.shape[1], img.shape[0])
    rep = repeatability(a.xy, b.xy, np.eye(3), size, size, eps=3.0 * size[0] / TINY_HW[1])
    assert rep.repeatability >= 0.8, rep


def test_onnxruntime_flavoured_int8_is_rejected_for_tensorrt(tiny_onnx, tmp_path):
    """export.quantize writes asymmetric uint8 activations and int32 biases, which run in
    ONNX Runtime but not in TensorRT; export.trt names the problem and the fix."""
    from export.quantize import quantize
    from export.trt import check_onnx, inspect_onnx

    rng = np.random.default_rng(0)
    out = tmp_path / "ort.int8.onnx"
    quantize(tiny_onnx, out, [rng.random((1, 1, *TINY_HW), dtype=np.float32) for _ in range(2)])
    facts = inspect_onnx(out)
    assert facts.qdq_problems
    with pytest.raises(ValueError, match="TensorRT cannot build.*--int8 --calib-images"):
        check_onnx(facts, wants_int8=True)


def test_cli_onnx_only_int8(tiny_onnx, tmp_path, monkeypatch, capsys):
    """python -m export.trt MODEL --int8 --calib-images DIR --onnx-only: the Q/DQ model is
    prepared without TensorRT or a GPU."""
    monkeypatch.setitem(sys.modules, "tensorrt", _TensorRTTripwire("tensorrt"))
    from export.trt import main

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, v in enumerate(_astronaut_views(4)):
        cv2.imwrite(str(calib / f"{i}.png"), v)
    out = tmp_path / "tiny.engine"
    assert main([str(tiny_onnx), "-o", str(out), "--int8", "--calib-images", str(calib), "--onnx-only"]) == 0
    printed = capsys.readouterr().out
    assert "4 calibration images" in printed and "--onnx-only" in printed
    from export.trt import inspect_onnx

    facts = inspect_onnx(out.with_suffix(".int8.onnx"))
    assert facts.is_qdq and not facts.qdq_problems and not out.exists()


# ---------------------------------------------------------------------------- device pipeline, run on CPU tensors
def test_device_preprocessing_matches_host(sample_bgr):
    torch = pytest.importorskip("torch")
    from kpnet.device import preprocess_device, to_device_image
    from kpnet.preprocess import prepare

    for img, size in (
        (sample_bgr, TINY_HW),
        (sample_bgr, (480, 640)),
        (cv2.cvtColor(sample_bgr, cv2.COLOR_BGR2GRAY), (256, 256)),
        (sample_bgr[:100, :120].astype(np.float32) / 255.0, (128, 160)),
        (sample_bgr, (96, 640)),
    ):
        ref, rs_ref = prepare(img, size)
        got, rs = preprocess_device(to_device_image(img, "cpu"), size)
        assert got.shape == (1, 1, *size) and got.dtype == torch.float32 and rs == rs_ref
        diff = np.abs(got[0, 0].numpy() - ref)
        # OpenCV works in fixed point on uint8: at most one grey level apart, rarely.
        assert diff.mean() < 0.25 / 255 and diff.max() <= 1.01 / 255, (img.shape, size, diff.mean(), diff.max())


def test_torch_frames_decode_on_the_device_like_host_frames(tiny_ckpt, sample_bgr):
    """A torch frame goes through prepare (torch resize), the torch backend and device decoding
    (run here on CPU tensors) and gives what a numpy frame gives, as the same Keypoints type."""
    torch = pytest.importorskip("torch")
    from kpnet import KeypointDetector, Keypoints
    from kpnet.metrics import repeatability

    det = KeypointDetector(tiny_ckpt, max_keypoints=300, nms_radius=3, min_contrast=0.0, threshold=0.0)
    ref = det.detect(sample_bgr)
    got = det.detect(torch.from_numpy(sample_bgr))
    assert isinstance(got, Keypoints) and got.is_torch and got.xy.device.type == "cpu"
    size = (sample_bgr.shape[1], sample_bgr.shape[0])
    assert got.image_size == size and bool((got.scores[1:] <= got.scores[:-1]).all())
    rep = repeatability(ref.xy, got.numpy().xy, np.eye(3), size, size, eps=3.0)
    assert rep.repeatability > 0.9, rep
    # the contrast gate runs on the device too: a flat frame gives nothing either way
    flat = np.full((256, 320), 90, np.uint8)
    assert (
        len(det.detect(flat, min_contrast=1.0)) == 0 and len(det.detect(torch.from_numpy(flat), min_contrast=1.0)) == 0
    )
    # anything else than plain top-k decodes on the host and comes back as tensors
    g = det.detect(torch.from_numpy(sample_bgr), distribution="grid", grid=(2, 2), max_keypoints=40)
    assert g.is_torch and len(g) == 40


# ---------------------------------------------------------------------------- with a GPU
@pytest.fixture(scope="module")
def engines(tiny_onnx, tiny_ckpt, tmp_path_factory):
    """fp32 engines built from the random-weight tiny model: static-size heatmap engine
    (batch 1..4), a dynamic-size engine from the checkpoint, and an in-graph-decoding one."""
    if not _gpu_ready():
        pytest.skip(GPU_REASON)
    from export.trt import TrtBuildOptions, build_engine

    d = tmp_path_factory.mktemp("engines")
    cache = d / "timing.cache"
    heat = build_engine(
        TrtBuildOptions(
            source=tiny_onnx,
            output=d / "tiny.engine",
            min_shape=(1, 128, 160),
            opt_shape=(2, 128, 160),
            max_shape=(4, 128, 160),
            timing_cache=cache,
        )
    )
    assert cache.is_file() and cache.stat().st_size > 0
    dyn = build_engine(
        TrtBuildOptions(
            source=tiny_ckpt,
            output=d / "tiny_dyn.engine",
            min_shape=(1, 96, 128),
            opt_shape=(1, 128, 160),
            max_shape=(2, 192, 256),
            timing_cache=cache,
            exporter="torchscript",
        )
    )
    pp = build_engine(
        TrtBuildOptions(
            source=tiny_ckpt,
            output=d / "tiny_pp.engine",
            with_postprocess=True,
            max_keypoints=200,
            nms_radius=3,
            border=4,
            static=True,
        )
    )
    return {"heat": heat.engine, "dyn": dyn.engine, "pp": pp.engine, "d": d}


@gpu
@pytest.mark.gpu
def test_gpu_engine_parity_with_onnxruntime(engines, tiny_onnx, sample_bgr):
    from export.onnx import keypoint_agreement
    from kpnet import KeypointDetector
    from kpnet.backends import create_backend

    meta = read_engine_metadata(engines["heat"], verify_hash=True)
    assert meta.precision == "fp32" and meta.compute_capability and meta.tensorrt_version
    with create_backend(engines["heat"]) as be, create_backend(tiny_onnx) as ort:
        assert (
            be.info.name == "tensorrt"
            and be.info.input_shape == (None, 1, 128, 160)
            and be.info.input_size == (128, 160)
        )
        x = np.random.default_rng(0).random((2, 1, 128, 160), dtype=np.float32)
        a, b = be.run(x).heatmap, ort.run(x).heatmap
        assert a.shape == b.shape == (2, 1, 128, 160)
        assert np.abs(a - b).max() < 5e-2 * max(1.0, np.abs(b).max())  # TF32 convolutions
    with (
        KeypointDetector(engines["heat"], max_keypoints=300) as trt_det,
        KeypointDetector(tiny_onnx, max_keypoints=300) as ort_det,
    ):
        ka, kb = trt_det.detect(sample_bgr), ort_det.detect(sample_bgr)
    agree, _ = keypoint_agreement(kb.xy, ka.xy, tol=1.0)
    assert agree > 0.95


@gpu
@pytest.mark.gpu
def test_gpu_dynamic_shapes_within_profile_and_errors_outside(engines):
    from kpnet.backends import create_backend

    with create_backend(engines["dyn"]) as be:
        assert be.info.input_shape == (None, 1, None, None)
        for shape in ((1, 1, 96, 128), (2, 1, 128, 160), (2, 1, 192, 256), (1, 1, 160, 224)):
            out = be.run(np.random.default_rng(1).random(shape, dtype=np.float32))
            assert out.heatmap.shape == shape
        with pytest.raises(ValueError, match="outside the optimisation profile"):
            be.run(np.zeros((3, 1, 128, 160), np.float32))
        with pytest.raises(ValueError, match="outside the optimisation profile"):
            be.run(np.zeros((1, 1, 256, 320), np.float32))


@gpu
@pytest.mark.gpu
def test_gpu_device_path_zero_copy_and_in_graph_decoding(engines, tiny_onnx_pp, sample_bgr):
    import torch

    from kpnet import KeypointDetector
    from kpnet.backends import create_backend

    with create_backend(engines["heat"]) as be:
        x = torch.rand(2, 1, 128, 160, device="cuda")
        out = be.run(x)  # torch in, torch out, on the GPU
        assert out.heatmap.is_cuda and out.heatmap.shape == (2, 1, 128, 160)
        np.testing.assert_allclose(out.heatmap.cpu().numpy(), be.run(x.cpu().numpy()).heatmap, rtol=1e-5, atol=1e-5)
    with KeypointDetector(engines["heat"], max_keypoints=100) as det:
        frame = torch.from_numpy(sample_bgr).cuda()
        kps = det.detect_batch([frame, frame])
        assert (
            len(kps) == 2
            and len(kps[0]) == 100
            and kps[0].xy.is_cuda
            and kps[0].image_size == (sample_bgr.shape[1], sample_bgr.shape[0])
        )
    with KeypointDetector(engines["pp"]) as trt_det, KeypointDetector(tiny_onnx_pp) as ort_det:
        assert trt_det.info.postprocess_in_graph and trt_det.config.max_keypoints == 200
        a, b = trt_det.detect(sample_bgr), ort_det.detect(sample_bgr)
    assert abs(len(a) - len(b)) <= 2
    from export.onnx import keypoint_agreement

    assert keypoint_agreement(b.xy, a.xy, tol=1.0)[0] > 0.95


@gpu
@pytest.mark.gpu
def test_gpu_int8_engine_from_qdq(tiny_qdq, tmp_path, sample_bgr):
    from export.trt import TrtBuildOptions, build_engine
    from kpnet import KeypointDetector

    res = build_engine(TrtBuildOptions(source=tiny_qdq, output=tmp_path / "tiny.int8.engine", int8=True))
    assert res.metadata.precision == "int8"
    with KeypointDetector(res.engine) as det:
        assert det.info.precision == "int8" and len(det.detect(sample_bgr)) > 0
