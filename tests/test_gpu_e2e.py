"""The user's CUDA paths end to end (make gpu-check; skipped without a GPU): train.py with bf16 / fp16 AMP,
channels_last, torch.compile and under torchrun; infer.py with the fused TTA merge and --eval; pseudo_label.py. The CPU
tests cover the same scripts' logic; these catch what only CUDA exercises (autocast, the GradScaler, pinned-memory
transfers, the CUDA op kernels inside the scripts). NCCL, DDP and SyncBatchNorm need two GPUs: on one, torchrun's
WORLD_SIZE is 1 and train.py starts no process group.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
TINY = ["--model", "upernet_convnext_demo", "--crop-size", "64", "--batch-size", "4", "--workers", "2",
        "--warmup-iters", "2", "--lr", "2e-3", "--log-interval", "5", "--no-progress", "--device", "cuda"]


@pytest.fixture(scope="module")
def demo(demo_data):
    return demo_data(train=16, val=4, test=4, extra=4, size=96, seed=3)


# bench/gpu_check.sh kills this whole pytest at its step limit; it sets GPU_CHECK_DEADLINE (epoch seconds) a little
# before that, and subprocesses are cut to it, so a slow test fails (or a later one skips) and pytest still reports.
_DEADLINE = float(os.environ.get("GPU_CHECK_DEADLINE") or 0)


def _run(args, launcher=None, timeout=240, env=None):
    if _DEADLINE:
        left = _DEADLINE - time.time()
        if left < 15:
            pytest.skip("bench/gpu_check.sh: this step's time is spent (rerun with GPU_CHECK_STEPS=test_e2e)")
        timeout = min(timeout, left)
    r = subprocess.run(([PY] if launcher is None else launcher) + args, cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env=None if env is None else {**os.environ, **env})
    expect = 75 if "--stop-after" in args else 0  # train.py --stop-after: EX_TEMPFAIL, a planned pause
    assert r.returncode == expect, " ".join(args) + "\n" + r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """bf16 + channels_last training with validation (the fused confusion matrix on CUDA)."""
    out = str(tmp_path_factory.mktemp("bf16"))
    _run(["train.py", "--data-root", demo, "--out", out, *TINY, "--iters", "40", "--eval-interval", "20",
          "--ckpt-interval", "20", "--amp", "bf16", "--channels-last"])
    return out


def test_train_bf16_channels_last_validates_and_checkpoints(trained):
    rows = _metrics(trained)
    losses = [r["loss"] for r in rows if "loss" in r]
    vals = [r for r in rows if "miou" in r]
    assert len(vals) == 2 and all(np.isfinite(losses)) and 0.0 <= vals[-1]["miou"] <= 1.0
    assert losses[-1] < losses[0]  # it learns
    ck = torch.load(os.path.join(trained, "best.pt"), map_location="cpu", weights_only=True)
    assert all(v.device.type == "cpu" for v in ck["model"].values())  # loadable on a CPU-only machine


def test_train_fp16_gradscaler_and_resume(demo, tmp_path):
    out = str(tmp_path / "fp16")
    _run(["train.py", "--data-root", demo, "--out", out, *TINY, "--iters", "6", "--ckpt-interval", "3",
          "--eval-interval", "1000", "--amp", "fp16", "--stop-after", "3"])
    r = _run(["train.py", "--data-root", demo, "--out", out, *TINY, "--iters", "6", "--ckpt-interval", "3",
              "--eval-interval", "1000", "--amp", "fp16", "--resume"])
    assert "resumed" in r.stdout
    ck = torch.load(os.path.join(out, "last.pt"), map_location="cpu", weights_only=True)
    assert ck["iter"] == 6 and ck.get("scaler")  # the GradScaler state travels with the checkpoint


def test_torchrun_launch(demo, tmp_path):
    # With one GPU, torchrun gives WORLD_SIZE=1, so train.py starts no process group: this checks the torchrun
    # launch (LOCAL_RANK device pick) only. NCCL, DDP and SyncBatchNorm need --nproc_per_node >= 2 on >= 2 GPUs.
    out = str(tmp_path / "ddp")
    _run(["train.py", "--data-root", demo, "--out", out, *TINY, "--iters", "6", "--eval-interval", "6",
          "--amp", "bf16"], launcher=[PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"])
    assert any("miou" in r for r in _metrics(out))


def test_infer_tta_eval_and_pseudo_on_cuda(demo, trained, tmp_path):
    ck = os.path.join(trained, "best.pt")
    gpu_csv, cpu_csv = str(tmp_path / "gpu.csv"), str(tmp_path / "cpu.csv")
    # --amp none is not yet fp32 on CUDA: cuDNN convolutions use TF32 by default (torch.backends.cudnn.allow_tf32),
    # which flips labels wherever the barely trained model's top two classes are close. NVIDIA_TF32_OVERRIDE=0
    # makes cuBLAS and cuDNN compute in full fp32.
    r = _run(["infer.py", "--ckpt", ck, "--data-root", demo, "--json", "val.json", "--out", gpu_csv, "--tta",
              "--eval", "--save-probs", str(tmp_path / "probs"), "--device", "cuda", "--amp", "none"],
             env={"NVIDIA_TF32_OVERRIDE": "0"})
    assert "mIoU" in r.stdout
    _run([PY, "-m", "data.submission", gpu_csv, "--json", os.path.join(demo, "val.json")], launcher=[])
    _run(["infer.py", "--ckpt", ck, "--data-root", demo, "--json", "val.json", "--out", cpu_csv, "--tta",
          "--device", "cpu", "--amp", "none"])
    from data.submission import read_submission
    g, c = read_submission(gpu_csv), read_submission(cpu_csv)
    assert list(g) == list(c) and len(g) == 4
    agree = np.mean([np.mean(g[k] == c[k]) for k in g])
    assert agree > 0.99, agree  # fp32 on both; only near-ties may flip (cuDNN vs CPU summation order)
    pl = str(tmp_path / "pl")
    _run(["pseudo_label.py", "--ckpt", ck, "--data-root", demo, "--json", "test.json", "--tta", "--out", pl,
          "--device", "cuda"])
    with open(os.path.join(pl, "pseudo.json")) as f:
        assert len(json.load(f)["images"]) == 4


# Last: the slowest (inductor compiles the train and the eval graphs), so a step limit cuts it rather than the others.
def test_train_compile(demo, tmp_path):
    out = str(tmp_path / "compiled")
    _run(["train.py", "--data-root", demo, "--out", out, *TINY, "--iters", "4", "--eval-interval", "4",
          "--amp", "bf16", "--channels-last", "--compile"], timeout=420)
    assert any("miou" in r for r in _metrics(out))
