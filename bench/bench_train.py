"""Training throughput: our train step (model, AdamW with layer-decay groups, CE + 0.4 aux, AMP, channels_last) fed
by our real data loader, and the same step with transformers' UperNet of the same configuration, in one run.

    python bench/bench_train.py                                     # CPU: demo model on the demo data, 256 px
    python bench/bench_train.py --device cuda --model upernet_convnext_tiny --size 512 --batch 8   # make gpu-check
    python bench/bench_train.py --device cuda --compile            # both models through torch.compile (same settings)

Prints samples/s of (a) the step alone on a resident batch for ours and for transformers (ratio > 1: ours faster),
(b) ours end to end with the loader (JPEG decode + masks + train preset), and on CUDA the model FLOP utilisation
against a measured bf16 matmul ceiling (training FLOPs ≈ 3 × forward, counted with torch.utils.flop_counter).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402
from bench_models import forward_flops, hf_model, sync, time_pair  # noqa: E402
from engine.evaluate import autocast, cpu_has_native_bf16  # noqa: E402


def matmul_ceiling(dev: torch.device) -> float:
    """Measured bf16 dense matmul TFLOP/s (the ceiling MFU is reported against)."""
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(dev)
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    sync(dev)
    return 2 * 8192 ** 3 * 20 / (time.perf_counter() - t) / 1e12


def make_step(model, opt, amp, dev, channels_last, hf=False):
    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(dev, amp):
            if hf:  # transformers computes the same loss itself: CE(ignore 255) + 0.4 × aux, logits upsampled
                loss = model(pixel_values=x, labels=y).loss
            else:
                main, aux = model(x)
                loss = F.cross_entropy(main.float(), y, ignore_index=255) + 0.4 * F.cross_entropy(
                    aux.float(), y, ignore_index=255)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="default: upernet_convnext_demo on CPU, _tiny on CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"])
    p.add_argument("--data-root", default=None, help="for the end-to-end row (default: generate a small demo set)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile both models (the comparison stays like for like; compile time is excluded)")
    a = p.parse_args()
    dev = torch.device("cuda" if (a.device == "auto" and torch.cuda.is_available()) else
                       ("cpu" if a.device == "auto" else a.device))
    gpu = dev.type == "cuda"
    name = a.model or ("upernet_convnext_tiny" if gpu else "upernet_convnext_demo")
    size, bs = a.size or (512 if gpu else 256), a.batch or (8 if gpu else 4)
    iters = a.iters or (20 if gpu else 4)
    amp = ("bf16" if gpu else "none") if a.amp == "auto" else a.amp
    cl = gpu
    torch.backends.cudnn.benchmark = gpu  # as train.py / infer.py set it on CUDA (engine.dist); both paths share it

    torch.manual_seed(0)
    ours = models.build_model(name).to(dev).train()
    theirs = hf_model(name, 11).to(dev).train()
    if cl:
        ours, theirs = ours.to(memory_format=torch.channels_last), theirs.to(memory_format=torch.channels_last)
    rec = models.recipe(name)
    opt_o = torch.optim.AdamW(models.param_groups(ours, rec["weight_decay"], rec["layer_decay"]), lr=1e-5,
                              fused=gpu)
    opt_t = torch.optim.AdamW(theirs.parameters(), lr=1e-5, weight_decay=rec["weight_decay"], fused=gpu)
    x = torch.randn(bs, 3, size, size, device=dev)
    y = torch.randint(0, 11, (bs, size, size), device=dev)
    # train.py --compile compiles the model module, not the optimiser step: the same here, for both.
    run_o, run_t = (torch.compile(ours), torch.compile(theirs)) if a.compile else (ours, theirs)
    so, st = make_step(run_o, opt_o, amp, dev, cl), make_step(run_t, opt_t, amp, dev, cl, hf=True)
    t_o, t_t = time_pair(lambda: so(x, y), lambda: st(x, y), iters, 2 if gpu else 1, dev)  # warm-up compiles
    # A CPU that computes bf16 natively: our step in bf16 autocast too, against transformers' fp32 step in the same
    # interleaved run (one row per precision; --amp auto trains in fp32 on every CPU, this says what bf16 would give).
    t_b = None
    if not gpu and amp == "none" and cpu_has_native_bf16():
        import copy
        ours_b = copy.deepcopy(ours)
        opt_b = torch.optim.AdamW(models.param_groups(ours_b, rec["weight_decay"], rec["layer_decay"]), lr=1e-5)
        sb = make_step(torch.compile(ours_b) if a.compile else ours_b, opt_b, "bf16", dev, cl)
        t_b, t_t2 = time_pair(lambda: sb(x, y), lambda: st(x, y), iters, 1, dev)

    # End to end: our loader feeding our step (the way train.py runs).
    from data.coco import CocoSegDataset
    from data.loader import build_train_loader
    from data.transforms import build_transform
    root = a.data_root
    if root is None:
        import tempfile
        from data.demo import make_demo
        root = tempfile.mkdtemp(prefix="bench_train_")
        make_demo(root, train=max(4 * bs, 16), val=1, test=1, extra=0, size=size, seed=0)
    ds = CocoSegDataset(root, os.path.join(root, "train.json"))
    workers = a.workers if a.workers is not None else (min(8, os.cpu_count() or 1) if gpu else 1)
    it = build_train_loader(ds, build_transform("train", crop_size=size), batch_size=bs, seed=0, workers=workers)
    for _ in range(2):
        b = next(it)
        so(ours.normalize(b["image"].to(dev)), b["mask"].to(dev))
    sync(dev)
    t = time.perf_counter()
    for _ in range(iters):
        b = next(it)
        so(ours.normalize(b["image"].to(dev, non_blocking=True)), b["mask"].to(dev, non_blocking=True))
    sync(dev)
    t_e2e = (time.perf_counter() - t) / iters

    flops = 3 * forward_flops(ours, x)
    print(f"\n{name} train step on {torch.cuda.get_device_name(dev) if gpu else 'CPU'} | {size}x{size}, batch {bs}, "
          f"amp {amp}, channels_last {cl}, compile {a.compile}, {iters} timed steps")
    print(f"{'':<28} {'s/step':>8} {'samples/s':>10} {'TFLOP/s':>8}")
    rows = (("ours (resident batch)", t_o), ("transformers (same)", t_t), ("ours end to end (loader)", t_e2e))
    for label, tt in rows:
        print(f"{label:<28} {tt:>8.4f} {bs / tt:>10.2f} {flops / tt / 1e12:>8.2f}")
    if t_b is not None:
        print(f"{'ours bf16 (resident batch)':<28} {t_b:>8.4f} {bs / t_b:>10.2f} {flops / t_b / 1e12:>8.2f}"
              f"   {t_t2 / t_b:.2f}x transformers fp32 in the same run ({bs / t_t2:.2f} samples/s)")
    mfu = ""
    if gpu:
        ceil = matmul_ceiling(dev)
        mfu = f", MFU {flops / t_o / 1e12 / ceil:.1%} of a measured {ceil:.0f} TFLOP/s bf16 matmul"
    print(f"summary{' (both compiled)' if a.compile else ''}: ours/transformers {t_t / t_o:.2f}x training speed, {bs / t_o:.1f} vs {bs / t_t:.1f} samples/s, "
          f"end to end {bs / t_e2e:.1f} samples/s{mfu}")


if __name__ == "__main__":
    main()
