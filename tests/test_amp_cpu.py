"""--amp on the CPU: auto picks bf16 only where the CPU computes it natively; --amp bf16 trains and infers end to end."""
import os
import subprocess
import sys

import pytest
import torch

from engine.evaluate import cpu_has_native_bf16, resolve_amp

from helpers import read_masks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def test_resolve_amp(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setenv("TRASHSEG_CPU_BF16", "1")
    assert resolve_amp("auto", cpu) == "bf16" and resolve_amp("none", cpu) == "none"  # --amp none forces fp32
    monkeypatch.setenv("TRASHSEG_CPU_BF16", "0")
    assert resolve_amp("auto", cpu) == "none" and resolve_amp("bf16", cpu) == "bf16"  # --amp bf16 forces bf16
    assert resolve_amp("auto", cuda) == "bf16"
    monkeypatch.delenv("TRASHSEG_CPU_BF16")
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    if flags:  # the detection reads the flags a native-bf16 CPU has
        assert cpu_has_native_bf16() == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


@pytest.mark.slow
def test_bf16_trains_and_infers_end_to_end_on_cpu(tmp_path):
    """train.py --amp bf16 (forward, loss, backward and validation under CPU bf16 autocast), then infer.py with
    --amp bf16 and --amp none on the same checkpoint: argmax agreement between them (printed; -s shows it)."""
    data = tmp_path / "demo"
    subprocess.run([PY, "-m", "data.demo", "--out", str(data), "--train", "4", "--val", "2", "--test", "2",
                    "--extra", "0", "--size", "48", "--seed", "5"], cwd=ROOT, check=True, capture_output=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    r = subprocess.run([PY, "train.py", "--data-root", str(data), "--out", str(tmp_path / "run"), "--model",
                        "upernet_convnext_demo", "--crop-size", "48", "--batch-size", "2", "--workers", "0",
                        "--warmup-iters", "1", "--lr", "1e-3", "--iters", "3", "--eval-interval", "3",
                        "--ckpt-interval", "3", "--log-interval", "1", "--no-progress", "--amp", "bf16"],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "amp bf16" in r.stdout and "nan" not in r.stdout.lower().split("amp bf16")[1]
    masks = {}
    for amp in ("bf16", "none"):
        out = tmp_path / f"masks_{amp}"
        r = subprocess.run([PY, "infer.py", "--ckpt", str(tmp_path / "run" / "best.pt"), "--data-root", str(data),
                            "--json", "val.json", "--out", "", "--save-masks", str(out), "--amp", amp,
                            "--workers", "0", "--eval"], cwd=ROOT, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        masks[amp] = read_masks(out)
    assert masks["bf16"].size == masks["none"].size == 2 * 48 * 48
    agree = float((masks["bf16"] == masks["none"]).mean())
    print(f"argmax agreement bf16 vs fp32 (3-iteration model, 2 val images of 48 px): {agree:.4f}")
    assert agree >= 0.9, agree
