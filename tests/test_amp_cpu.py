"""--amp on the CPU: auto picks bf16 only where the CPU computes it natively, once per run and the same on every rank;
the bf16 path against the fp32 one; --amp bf16 trains and infers end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.evaluate import cpu_has_native_bf16, resolve_amp

from helpers import read_masks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def test_resolve_amp(monkeypatch):
    from engine.evaluate import run_precision
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setenv("TRASHSEG_CPU_BF16", "1")  # train.py: bf16 training and validation where bf16 is native
    assert run_precision("auto", cpu) == ("bf16", "bf16") and run_precision("auto", cuda) == ("bf16", "bf16")
    assert run_precision("none", cpu) == ("none", "none") and run_precision("fp16", cuda) == ("fp16", "fp16")
    monkeypatch.setenv("TRASHSEG_CPU_BF16", "0")
    assert run_precision("auto", cpu) == ("none", "none") and run_precision("bf16", cpu) == ("bf16", "bf16")
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


def test_inference_auto_precision_per_cpu_kind(monkeypatch, capsys):
    """infer.py / pseudo_label.py --amp auto on the CPU: bf16 with AMX; with avx512_bf16 alone fp32 where Winograd
    applies (as fast there, exact), bf16 where it does not (--winograd off, --compile, no NNPACK); fp32 without
    native bf16. --amp bf16 / none force either way."""
    import argparse
    from engine import predict
    cpu = torch.device("cpu")
    monkeypatch.setattr(predict.winograd, "available", lambda: True)

    def pick(bf16, amx, amp="auto", winograd="auto", compile=False, nnpack=True):
        monkeypatch.setenv("TRASHSEG_CPU_BF16", bf16)
        monkeypatch.setenv("TRASHSEG_CPU_AMX", amx)
        monkeypatch.setattr(predict.winograd, "available", lambda: nnpack)
        a = argparse.Namespace(amp=amp, winograd=winograd, compile=compile, mode="whole", crop_size=None,
                               stride=None)
        return predict.inference_settings(a, cpu)[0]
    assert pick("1", "1") == "bf16"  # AMX
    assert pick("1", "0") == "none"  # avx512_bf16 alone: fp32 + Winograd
    assert "Winograd" in capsys.readouterr().out
    assert pick("1", "0", winograd="off") == "bf16" and pick("1", "0", compile=True) == "bf16"
    assert pick("1", "0", nnpack=False) == "bf16"
    assert pick("0", "0") == "none" and pick("0", "1") == "none"  # no native bf16 (AMX alone is no such CPU)
    assert pick("1", "0", amp="bf16") == "bf16" and pick("1", "1", amp="none") == "none"
    monkeypatch.delenv("TRASHSEG_CPU_AMX")
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    if flags:
        from engine.evaluate import cpu_has_amx
        assert cpu_has_amx() == ("amx_bf16" in flags.split())


@pytest.mark.heavy
def test_bf16_trains_and_infers_end_to_end_on_cpu(tmp_path, demo_data):
    """train.py --amp bf16 (forward, loss, backward and validation under CPU bf16 autocast), then infer.py with
    --amp bf16 and --amp none on the same checkpoint: argmax agreement between them (printed; -s shows it)."""
    data = Path(demo_data(train=4, val=2, test=2, extra=0, size=48, seed=5, fresh=True))
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


def _demo(demo_data, size=48):
    data = Path(demo_data(train=2, val=2, test=2, extra=0, size=size, seed=5, fresh=True))
    return data


@pytest.mark.bf16_heavy
def test_auto_inference_precision_against_fp32(tmp_path, cpu_bf16, demo_data):
    """infer.py --amp auto against the fp32 path (--amp none --winograd off) on the same model and images. Where the
    CPU has no native bf16, auto is fp32 (Winograd's ~1e-5 apart); where it has, auto is bf16, and the stated
    tolerance holds: probabilities within 5e-3, and the same class on every pixel whose fp32 top-2 margin exceeds
    0.02 (bf16 moves these probabilities by ~1.5e-3 on this model)."""
    from data.probs import load_probs
    import models
    data = _demo(demo_data)
    torch.manual_seed(0)
    ck = str(tmp_path / "model.pt")
    torch.save({"model": models.build_model("upernet_convnext_demo", 11).state_dict(),
                "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    probs = {}
    for name, flags in (("auto", ["--amp", "auto"]), ("fp32", ["--amp", "none", "--winograd", "off"])):
        probs[name] = tmp_path / name
        r = subprocess.run([PY, "infer.py", "--ckpt", ck, "--data-root", str(data), "--json", "val.json", "--out", "",
                            "--save-probs", str(probs[name]), "--probs-size", "0", "--probs-dtype", "float16",
                            "--workers", "0", *flags], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        if name == "auto":
            assert f"--amp auto: {'bf16' if cpu_bf16 else 'fp32'} on cpu" in r.stdout, r.stdout
    clear_total = 0
    for rec in json.load(open(data / "val.json"))["images"]:
        got = load_probs(str(probs["auto"]), rec["file_name"])[0].astype(np.float32)  # (C, H, W)
        want = load_probs(str(probs["fp32"]), rec["file_name"])[0].astype(np.float32)
        top2 = np.sort(want, 0)[-2:]
        clear = top2[1] - top2[0] > 0.02
        clear_total += clear.mean() / 2
        assert np.abs(got - want).max() < (5e-3 if cpu_bf16 else 1e-3)  # float16 storage: ~5e-4
        assert np.array_equal(got.argmax(0)[clear], want.argmax(0)[clear])
    assert clear_total > 0.3, clear_total  # enough clear pixels for the agreement to mean something


def _train(data, out, *extra, bf16: str):
    r = subprocess.run([PY, "train.py", "--data-root", str(data), "--out", str(out), "--model", "upernet_convnext_demo",
                        "--crop-size", "48", "--batch-size", "2", "--workers", "0", "--warmup-iters", "1",
                        "--eval-interval", "2", "--ckpt-interval", "2", "--no-progress", *extra],
                       cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "TRASHSEG_CPU_BF16": bf16, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    saved = json.load(open(out / "args.json"))
    return r.stdout, (saved["amp_request"], saved["amp"], saved["val_amp"])


def test_train_amp_auto_resolved_once_recorded_and_kept(tmp_path, demo_data):
    """--amp auto is resolved at the start (training and validation in bf16 where the CPU has native bf16, else fp32),
    written to args.json and the checkpoints, and kept when the run continues on a CPU that would choose otherwise:
    a --resume from its checkpoint, and a bare restart of a run killed before its first checkpoint."""
    data = _demo(demo_data)
    run = tmp_path / "run"
    log, amp = _train(data, run, "--iters", "2", bf16="1")  # started on a native-bf16 CPU
    assert amp == ("auto", "bf16", "bf16") and "amp bf16 (validation bf16)" in log
    assert torch.load(run / "last.pt", weights_only=True)["args"]["val_amp"] == "bf16"
    log, amp = _train(data, run, "--iters", "4", "--resume", bf16="0")  # continued on an AVX2 one
    assert amp == ("auto", "bf16", "bf16"), amp
    assert "keeping the run's recorded precision (training bf16, validation bf16)" in log
    assert "amp" not in log.partition("changed settings")[2].partition("\n")[0], log  # iters 2 → 4 only
    for f in ("last.pt", "best.pt", "iter_2.pt"):  # killed before its first checkpoint: args.json, log, no .pt
        (run / f).unlink(missing_ok=True)
    log, amp = _train(data, run, "--iters", "4", "--resume", bf16="0")
    assert "restarting this run from scratch" in log and amp == ("auto", "bf16", "bf16"), log[-2000:]
    _, amp = _train(data, tmp_path / "fresh", "--iters", "2", bf16="0")  # a new run resolves on its own CPU
    assert amp == ("auto", "none", "none")


_RANK_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import infer, train
from engine import run as R
from engine import dist as D
from engine.predict import inference_settings
args = train.resolve_args(train.get_args_parser().parse_args(["--data-root", {data!r}, "--out", {out!r}]))
info = D.init("cpu")
R.settle_precision(args, info)
amp, _ = inference_settings(infer.get_args_parser().parse_args(["--ckpt", "x", "--data-root", {data!r}]), info.device)
print(f"rank {{info.rank}}: training {{args.amp}} validation {{args.val_amp}} inference {{amp}}", flush=True)
D.cleanup(info)
"""


@pytest.mark.heavy
def test_ranks_on_different_cpus_use_rank0_precision(tmp_path):
    """Two torchrun nodes on one machine, one with native bf16 and one without (TRASHSEG_CPU_BF16 per launcher):
    every rank trains, validates and infers in rank 0's resolution of --amp auto, whichever node is rank 0."""
    import socket
    script = tmp_path / "ranks.py"
    script.write_text(_RANK_SCRIPT.format(root=ROOT, data=str(tmp_path), out=str(tmp_path / "out")))
    for node0, want in (("1", "training bf16 validation bf16 inference bf16"),
                        ("0", "training none validation none inference none")):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs = [subprocess.Popen(
            [PY, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(n),
             "--master_addr", "127.0.0.1", "--master_port", str(port), str(script)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "TRASHSEG_CPU_BF16": node0 if n == 0 else str(1 - int(node0)), "OMP_NUM_THREADS": "1"})
            for n in (0, 1)]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        for n, out in enumerate(outs):
            assert f"rank {n}: {want}" in out, out


def test_cpu_bf16_inference_layout():
    """apply_inference_layout (infer.py's and pseudo_label.py's bf16 CPU path): convolution and linear weights cast
    once give autocast's values bit for bit (same layout), norms stay fp32; channels_last then moves the result only by bf16's
    rounding; it stays off for fp32, CUDA, --compile, --int8 and --channels-last off."""
    import argparse
    import copy
    import models
    from engine.predict import apply_inference_layout
    from models.layers import bf16_matmul_weights
    torch.manual_seed(0)
    net = models.build_model("upernet_swin_tiny", 11).eval()  # Linear layers (attention, MLP) and convolutions
    x = torch.randn(1, 3, 64, 80)
    cast = copy.deepcopy(net)
    n = bf16_matmul_weights(cast)
    assert n == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in net.modules()) > 10
    assert all(p.dtype == torch.float32 for m in cast.modules() if isinstance(m, torch.nn.LayerNorm)
               for p in m.parameters())
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        want = net(x)
        assert torch.equal(cast(x), want)
    on = argparse.Namespace(compile=False, int8=False, channels_last="auto")
    cpu = torch.device("cpu")
    for args, dev, amp in ((on, cpu, "none"), (on, torch.device("cuda", 0), "bf16"),
                           (argparse.Namespace(compile=True, channels_last="auto"), cpu, "bf16"),
                           (argparse.Namespace(compile=False, int8=True, channels_last="auto"), cpu, "bf16"),
                           (argparse.Namespace(compile=False, channels_last="off"), cpu, "bf16")):
        untouched = copy.deepcopy(net)
        assert not apply_inference_layout([untouched], args, dev, amp)
        assert next(untouched.parameters()).dtype == torch.float32
    fast = copy.deepcopy(net)
    assert apply_inference_layout([fast], on, cpu, "bf16")
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == want.shape
    scale = want.float().abs().max()
    assert (got.float() - want.float()).abs().max() < 0.05 * scale
