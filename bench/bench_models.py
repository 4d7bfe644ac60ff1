"""Our UperNet against transformers' UperNetForSemanticSegmentation: same configuration, same weights, same precision.

    python bench/bench_models.py                                   # CPU: ConvNeXt-T and Swin-T at 128 px, batch 2
    python bench/bench_models.py --models upernet_swin_tiny --size 256 --batch 4
    python bench/bench_models.py --device cuda                     # GPU (make gpu-check): bf16, channels_last, 512 px, batch 8
    python bench/bench_models.py --infer                           # CPU inference, 512 px, batch 1, vs transformers
    python bench/bench_models.py --infer --int8 --models upernet_convnext_tiny   # + infer.py --int8 (minutes to compile)

Prints, per model, the median over alternating runs of inference (forward, no grad) and training-step (forward + CE loss with the 0.4 auxiliary term +
backward + AdamW step) times for both implementations, the ratio (>1 means ours is faster), the max logit difference
after copying HF's weights into ours with models.convert, and achieved TFLOP/s (training ≈ 3 × forward FLOPs, counted
with torch.utils.flop_counter). On CUDA also each training step's peak memory beyond what was allocated before it.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import models  # noqa: E402
from models.convert import convert  # noqa: E402


def hf_model(name: str, num_classes: int):
    from transformers import ConvNextConfig, SwinConfig, UperNetConfig, UperNetForSemanticSegmentation
    cfg = models.MODELS[name]
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if cfg["backbone"] == "convnext":
        bb = ConvNextConfig(hidden_sizes=list(cfg["dims"]), depths=list(cfg["depths"]), out_features=stages,
                            drop_path_rate=cfg["drop_path_rate"], layer_scale_init_value=cfg["layer_scale_init"])
    else:
        bb = SwinConfig(embed_dim=cfg["embed_dims"], depths=list(cfg["depths"]), num_heads=list(cfg["num_heads"]),
                        window_size=cfg["window_size"], drop_path_rate=cfg["drop_path_rate"], out_features=stages)
    up = UperNetConfig(backbone_config=bb, hidden_size=cfg["channels"], auxiliary_channels=cfg["aux_channels"],
                       num_labels=num_classes)
    return UperNetForSemanticSegmentation(up)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pair(fa, fb, iters: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """Median seconds per call of fa and fb, measured alternately so that load from other processes hits both."""
    for _ in range(warmup):
        fa(), fb()
    ta, tb = [], []
    for _ in range(iters):
        for fn, ts in ((fa, ta), (fb, tb)):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            ts.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(x)
    return fc.get_total_flops()


def bench_one(name: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    hf = hf_model(name, args.num_classes)
    ours = models.build_model(name, args.num_classes)
    sd, _ = convert(hf.state_dict(), ours)
    ours.load_state_dict(sd, strict=True)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    hf.to(device, memory_format=fmt)
    ours.to(device, memory_format=fmt)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, args.num_classes, (args.batch, args.size, args.size), device=device)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16"
           else contextlib.nullcontext())

    with torch.no_grad(), amp:
        diff = (hf.eval()(x).logits.float() - ours.eval()(x).float()).abs().max().item()
    flops = forward_flops(ours, x)

    run_ours = torch.compile(ours) if args.compile else ours

    def fwd_ours():
        with torch.no_grad(), amp:
            run_ours(x)

    def fwd_hf():
        with torch.no_grad(), amp:
            hf(x)

    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-6)
    opt_h = torch.optim.AdamW(hf.parameters(), lr=1e-6)

    def step_ours():
        with amp:
            main, aux = run_ours(x)
            loss = F.cross_entropy(main.float(), y, ignore_index=255) + \
                0.4 * F.cross_entropy(aux.float(), y, ignore_index=255)
        loss.backward()
        opt_o.step()
        opt_o.zero_grad(set_to_none=True)

    def step_hf():
        with amp:
            loss = hf(x, labels=y).loss
        loss.backward()
        opt_h.step()
        opt_h.zero_grad(set_to_none=True)

    res = {"model": name, "diff": diff, "flops": flops}
    ours.eval(), hf.eval()
    res["fwd_hf"], res["fwd_ours"] = time_pair(fwd_hf, fwd_ours, args.iters, args.warmup, device)
    ours.train(), hf.train()
    res["train_hf"], res["train_ours"] = time_pair(step_hf, step_ours, args.iters, args.warmup, device)
    if device.type == "cuda":
        # Peak beyond what was live before the step: both models, both optimisers' states and the batch stay resident
        # throughout, and counting them in each figure would shrink the difference between the two implementations.
        for key, step in (("mem_ours", step_ours), ("mem_hf", step_hf)):
            sync(device)
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            sync(device)
            res[key] = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
    return res


def time_interleaved(fns: dict, iters: int, warmup: int) -> dict:
    """Median seconds per call of each function, called in turn each round so that load from other processes
    falls on all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    ts = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in ts.items()}


def matmul_peak(dtype: torch.dtype, n: int, reps: int = 3) -> float:
    """FLOP/s of a timed n x n matmul (best of reps): the machine's attainable peak for that precision."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def bench_infer(args: argparse.Namespace) -> int:
    """CPU inference, batch 1, every precision this CPU can run, each against transformers' UperNet fp32 eager in the
    same interleaved run: ours fp32 eager, fp32 with Winograd 3x3 convolutions (where NNPACK runs), bf16 autocast
    (where the CPU computes bf16 natively, or --amp bf16; there also NCHW and with the int8 head of infer.py
    --int8-head), compiled (--compile), int8 (--int8); the one infer.py's
    --amp / --winograd / --compile flags pick is marked `*`."""
    from engine.evaluate import autocast, cpu_has_native_bf16
    from engine.predict import apply_inference_layout, apply_winograd, inference_amp
    dev = torch.device("cpu")
    probe = argparse.Namespace(amp=args.amp, winograd=args.winograd, compile=args.compile)
    amp = inference_amp(probe, dev)[0]  # infer.py's choice on this CPU with these flags
    native = cpu_has_native_bf16()
    peak32 = matmul_peak(torch.float32, 2048)
    # emulated bf16 runs ~100x slower than fp32: a smaller matmul keeps the measurement short
    peak16 = matmul_peak(torch.bfloat16, 2048 if native else 512, reps=3 if native else 1)
    wino = apply_winograd([], probe, dev, amp)  # whether infer.py would use it, with these flags
    wino_any = apply_winograd([], argparse.Namespace(winograd=args.winograd, compile=False), dev, "none")
    chosen = ("compiled" if args.compile else "bf16 autocast" if amp == "bf16" else
              "fp32 Winograd" if wino else "fp32 eager")  # infer.py's path with these flags
    print(f"# CPU, {torch.get_num_threads()} threads, native bf16: {native}; {args.size}x{args.size}, batch 1; "
          f"infer.py's path (*): amp {amp}{', Winograd 3x3 convs' if wino else ''}"
          f"{', compiled' if args.compile else ''}; torch {torch.__version__}")
    print(f"# measured peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s (timed matmul); "
          f"GFLOP/s counts the direct convolution's FLOPs for every variant (Winograd and int8 do other work)")
    print(f"{'model':22s} {'variant':20s} {'s/image':>8s} {'GFLOP/s':>8s} {'% peak':>7s} {'vs HF':>7s} {'argmax=fp32':>11s}")
    ratios = []
    for name in args.models:
        torch.manual_seed(0)
        hf = hf_model(name, args.num_classes).eval()
        ours = models.build_model(name, args.num_classes)
        sd, _ = convert(hf.state_dict(), ours)
        ours.load_state_dict(sd, strict=True)
        ours.eval()
        x = torch.randn(1, 3, args.size, args.size)
        flops = forward_flops(ours, x)
        fns = {"fp32 eager": lambda: ours(x)}
        peaks = {"fp32 eager": peak32}
        if wino_any:
            fast = copy.deepcopy(ours)
            apply_winograd([fast], argparse.Namespace(winograd="on", compile=False), dev, "none")
            fns["fp32 Winograd"], peaks["fp32 Winograd"] = (lambda: fast(x)), peak32
        if native or amp == "bf16":
            # infer.py's bf16 path (engine.predict.apply_inference_layout): channels_last, bf16 weights cast once
            fast16 = copy.deepcopy(ours)
            cl = apply_inference_layout([fast16], argparse.Namespace(compile=False, channels_last="auto"), dev, "bf16")
            x16 = x.contiguous(memory_format=torch.channels_last) if cl else x

            def bf16():
                with autocast(dev, "bf16"):
                    return fast16(x16)

            def bf16_nchw():  # the plain autocast path: NCHW, weights cast on every call
                with autocast(dev, "bf16"):
                    return ours(x)
            fns["bf16 autocast"], peaks["bf16 autocast"] = bf16, peak16
            if native:
                fns["bf16 NCHW"], peaks["bf16 NCHW"] = bf16_nchw, peak16
                # infer.py --int8-head: the head's 3x3 convolutions in oneDNN int8 inside the bf16 model
                from models.int8 import use_int8_head
                h8 = copy.deepcopy(ours)
                use_int8_head(h8)
                apply_inference_layout([h8], argparse.Namespace(compile=False, channels_last="auto"), dev, "bf16")

                def bf16_int8_head():
                    with autocast(dev, "bf16"):
                        return h8(x16)
                fns["bf16 + int8 head"], peaks["bf16 + int8 head"] = bf16_int8_head, peak16
        if args.compile:
            comp = copy.deepcopy(ours)
            run = torch.compile(comp)

            def compiled():
                with autocast(dev, amp):
                    return run(x)
            fns["compiled"], peaks["compiled"] = compiled, (peak16 if amp == "bf16" else peak32)
        # infer.py --int8 (ConvNeXt exports only): PT2E int8, compiled ahead of time (random calibration: speed only)
        if args.int8 and type(ours.backbone).__name__ == "ConvNeXt":
            from models.int8 import int8_segmentor
            g = torch.Generator().manual_seed(1)
            q8 = int8_segmentor(copy.deepcopy(ours),
                                [torch.randn(1, 3, args.size, args.size, generator=g) for _ in range(4)],
                                log=lambda m: print(f"# {name}: {m}", flush=True))
            fns["int8"], peaks["int8"] = (lambda: q8(x)), peak32  # % of the fp32 peak
        with torch.no_grad():
            lab_fp32 = ours(x).argmax(1)
            agree = {k: (fn().float().argmax(1) == lab_fp32).float().mean().item() for k, fn in fns.items()}
            fns["transformers fp32"] = lambda: hf(x)
            t = time_interleaved(fns, args.iters, args.warmup)
        base = t["transformers fp32"]
        for k in fns:
            star = "*" if k == chosen else ""
            pk = peaks.get(k, peak32)
            print(f"{name:22s} {k + star:20s} {t[k]:8.3f} {flops / t[k] / 1e9:8.1f} {100 * flops / t[k] / pk:6.0f}% "
                  f"{base / t[k]:6.2f}x {agree.get(k, float('nan')):11.4f}", flush=True)
        if chosen not in t:
            raise SystemExit(f"error: infer.py's path ({chosen}) was not timed")
        r = base / t[chosen]
        ratios.append(r)
        fastest = min((k for k in t if k != "transformers fp32"), key=t.get)
        print(f"{name:22s} ours ({chosen}) vs transformers {r:.2f}x; fastest here: {fastest} "
              f"({base / t[fastest]:.2f}x); {flops / 1e9:.1f} GFLOP (random weights)", flush=True)
    print(f"CPU inference vs transformers: {min(ratios):.2f}×")
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("bench_models", description="ours vs transformers UperNet, same config/precision")
    p.add_argument("--models", nargs="+", default=["upernet_convnext_tiny", "upernet_swin_tiny"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=None, help="default 128 on CPU, 512 on CUDA")
    p.add_argument("--batch", type=int, default=None, help="default 2 on CPU, 8 on CUDA")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default fp32 on CPU, bf16 on CUDA")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="default off on CPU, on on CUDA (applied to both models)")
    p.add_argument("--compile", action="store_true", help="torch.compile our model (not HF's)")
    p.add_argument("--iters", type=int, default=None, help="default 3 on CPU, 20 on CUDA")
    p.add_argument("--warmup", type=int, default=None, help="default 1 on CPU, 5 on CUDA")
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--infer", action="store_true",
                   help="CPU inference at 512 px, batch 1: every precision this CPU runs (fp32 eager, fp32 Winograd, "
                        "bf16 where native, compiled, int8) against transformers fp32 in one run, GFLOP/s, share of "
                        "the measured peak; ends with 'CPU inference vs transformers: X.XX×' (infer.py's path)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"],
                   help="--infer: infer.py's precision (the row marked *)")
    p.add_argument("--winograd", default="auto", choices=["auto", "on", "off"], help="--infer: as infer.py's flag")
    p.add_argument("--int8", action="store_true", help="--infer: also infer.py --int8's program (needs torchao)")
    return p


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.infer:
        args.size = args.size or 512
        args.iters = args.iters or 3
        args.warmup = 1 if args.warmup is None else args.warmup
        return bench_infer(args)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device", file=sys.stderr)
        return 2
    for k, cpu, gpu in (("size", 128, 512), ("batch", 2, 8), ("dtype", "fp32", "bf16"), ("channels_last", False, True),
                        ("iters", 3, 20), ("warmup", 1, 5)):
        if getattr(args, k) is None:
            setattr(args, k, gpu if cuda else cpu)
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dev = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {dev}; {args.size}x{args.size}, batch {args.batch}, {args.dtype}, "
          f"channels_last={args.channels_last}, compile={args.compile}, torch {torch.__version__}")
    head = (f"{'model':24s} {'fwd HF ms':>10s} {'fwd ours':>9s} {'ratio':>6s} {'train HF ms':>12s} "
            f"{'train ours':>11s} {'ratio':>6s} {'TFLOP/s':>8s} {'max|Δ|':>8s}")
    if cuda:
        head += f" {'GiB HF':>7s} {'GiB ours':>8s}"
    print(head)
    for name in args.models:
        r = bench_one(name, args)
        tflops = 3 * r["flops"] / r["train_ours"] / 1e12
        line = (f"{name:24s} {r['fwd_hf'] * 1e3:10.1f} {r['fwd_ours'] * 1e3:9.1f} {r['fwd_hf'] / r['fwd_ours']:6.2f} "
                f"{r['train_hf'] * 1e3:12.1f} {r['train_ours'] * 1e3:11.1f} {r['train_hf'] / r['train_ours']:6.2f} "
                f"{tflops:8.2f} {r['diff']:8.1e}")
        if cuda:
            line += f" {r['mem_hf']:7.2f} {r['mem_ours']:8.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
