"""Data-parallel training: ``torchrun --nproc_per_node 2`` on CPU (gloo) completes a few steps
and only rank 0 writes logs and checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("kornia")
pytest.importorskip("tqdm")
pytest.importorskip("yaml")
if not torch.distributed.is_available():  # pragma: no cover - depends on the torch build
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

from test_training_loop_smoke import make_cache, read_log, tiny_args  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_cpu(tmp_path):
    cache = make_cache(tmp_path / "cache", n=12)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training.phase1",
        *tiny_args(cache, out, "--max-steps", "4", "--ckpt-every", "2", "--log-every", "1"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(2 process(es), cpu)" in proc.stdout  # printed once, by rank 0
    assert proc.stdout.count("phase 1: 4 steps") == 1
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["training"]["step"] == 4
    assert {p.name for p in out.glob("step_*.pt")} == {"step_0000002.pt", "step_0000004.pt"}
    # one log row per step (rank 0 only), losses averaged over the two processes
    assert sorted(read_log(out, "train/loss")) == [1, 2, 3, 4]
    # 12 images, 3 held out: 9 // (2 per process x 2 processes) = 2 steps per epoch -> 2 validations
    assert len(read_log(out, "val/repeatability")) == 2
