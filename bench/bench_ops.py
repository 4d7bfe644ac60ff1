"""Benchmark the fused ops (csrc/) against their pure-PyTorch references on the current device.

    python bench/bench_ops.py                     # CPU (or --device cuda); full sizes
    python bench/bench_ops.py --quick             # smaller batches and a 64-image stream, for a smoke run
    python bench/bench_ops.py --device cuda --tsv out.tsv   # rows for bench/gpu_check.sh's table

Sizes (SPEC §3, §4): confusion matrix from 16x512x512 labels and 16x11x512x512 logits, 11 classes, and the 655-image
validation set streamed in batches of 16; TTA merge of 4 scales (256, 384, 512, 640) x flip, B=8, C=11, 512x512.

Times are medians of several runs (CUDA: events after warm-up, L2 flushed before each). Peak memory is what the op
allocates beyond its inputs: on CUDA torch.cuda.max_memory_allocated; on the CPU tracemalloc cannot see torch's
allocations, so each variant runs in a fresh subprocess that builds the inputs, resets its RSS high-water mark
(/proc/self/clear_refs), makes one call and reports VmHWM minus the RSS before the call (big tensors are mmap'd and
returned on free, so this is the op's own high-water mark, within a few MB). On CUDA, GB/s counts the fewest bytes
each op must move (inputs read once, output written once) and is compared with a measured device-to-device copy
(read + write).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from csrc import ops  # noqa: E402

C = 11
SCALES = (256, 384, 512, 640)


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU peak-memory subprocesses")
    p.add_argument("--only", default="", help="comma list of rows to run: labels,logits,bf16,stream,tta,tta_stream")
    p.add_argument("--json", default="", help="write the rows as JSON here")
    p.add_argument("--tsv", default="", help="write table rows (item, status, time, details) here")
    p.add_argument("--_mem", default="", help=argparse.SUPPRESS)  # internal: one CPU memory measurement
    return p


# ------------------------------------------------------------------------------------------------ inputs

def sizes(quick: bool) -> dict:
    return {"cm_batch": 4 if quick else 16, "stream_images": 64 if quick else 655, "tta_batch": 2 if quick else 8}


def make_confusion_inputs(batch: int, device, kind: str):
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, C, (batch, 512, 512), generator=g, dtype=torch.uint8)
    t[:, :8] = 255  # some ignore pixels
    if kind == "labels":
        pred = torch.randint(0, C, (batch, 512, 512), generator=g, dtype=torch.int64)
    else:
        pred = torch.randn(batch, C, 512, 512, generator=g)
        if kind == "bf16":
            pred = pred.bfloat16()
    return pred.to(device), t.to(device)


def make_tta_inputs(batch: int, device):
    g = torch.Generator().manual_seed(1)
    views, flips = [], []
    for s in SCALES:
        for f in (False, True):
            views.append(torch.randn(batch, C, s, s, generator=g).to(device))
            flips.append(f)
    return views, flips


# ------------------------------------------------------------------------------------------------ timing

def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


_L2_FLUSH: dict = {}


def flush_l2(device) -> None:
    """Overwrite the GPU's L2 (50 MB on an H100) before a timed call: the int64-labels inputs (16 x 512^2 x 9 B =
    38 MB) would otherwise be partly cache-resident from the previous repeat, and GB/s could beat the copy ceiling."""
    buf = _L2_FLUSH.get(str(device))
    if buf is None:
        buf = _L2_FLUSH[str(device)] = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device=device)
    buf.zero_()


def timeit(fn, device, repeat: int, warmup: int = 1) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    cuda = torch.device(device).type == "cuda"
    for _ in range(repeat):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            flush_l2(device)  # before the start event: not timed
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(device) -> float:
    """Device-to-device copy, bytes read + written per second."""
    n = 256 * 2 ** 20  # 1 GiB of float32
    a = torch.empty(n, device=device).uniform_()
    b = torch.empty_like(a)
    t = timeit(lambda: b.copy_(a), device, repeat=20, warmup=3)
    del a, b
    return 2 * n * 4 / t


def gpu_peak(fn, device) -> float:
    """Bytes the call allocates beyond what was live before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return peak


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset this process's RSS high-water mark where Linux allows it; return the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    rss = _status_kb("VmRSS")
    return (rss if rss is not None else peak_rss() // 1024) * 1024


def peak_rss() -> int:
    """RSS high-water mark in bytes. VmHWM belongs to this process image; ru_maxrss would be no use here, as
    Linux carries it across execve from the parent that spawned us."""
    hwm = _status_kb("VmHWM")
    return (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ------------------------------------------------------------------------------------------------ variants

def variant_fn(name: str, impl: str, s: dict, device):
    """-> (setup() -> state, run(state) -> result, bytes moved at minimum)."""
    if name in ("labels", "logits", "bf16"):
        def setup():
            return make_confusion_inputs(s["cm_batch"], device, name)

        def run(st):
            pred, t = st
            f = ops.confusion_matrix if impl == "ours" else ops.ref_confusion_matrix
            return f(pred, t, C)

        def nbytes(st):
            pred, t = st
            return pred.numel() * pred.element_size() + t.numel() + C * C * 8
        return setup, run, nbytes
    if name == "stream":
        batch = 16
        n_img = s["stream_images"]

        def setup():
            # two distinct batches, alternated (the full set would not fit in host memory as logits)
            return [make_confusion_inputs(batch, device, "logits") for _ in range(2)]

        def run(st):
            cm = torch.zeros(C, C, dtype=torch.int64, device=device)
            for i in range(0, n_img, batch):
                pred, t = st[(i // batch) % 2]
                k = min(batch, n_img - i)
                if impl == "ours":
                    cm += ops.confusion_matrix(pred[:k], t[:k], C)
                else:
                    cm += ops.ref_confusion_matrix(pred[:k], t[:k], C)
            return ops.miou(cm)["miou"]  # one host sync at the end

        def nbytes(st):
            return n_img * (C * 512 * 512 * 4 + 512 * 512)
        return setup, run, nbytes
    if name in ("tta", "tta_stream"):
        def setup():
            return make_tta_inputs(s["tta_batch"], device)

        def run(st):
            views, flips = st
            if name == "tta":
                f = ops.tta_merge if impl == "ours" else ops.ref_tta_merge
                return f(views, flips, (512, 512))
            # streaming: one view at a time into an accumulator, then argmax labels + max prob
            if impl == "ours":
                acc = ops.TTAAccumulator(views[0].shape[0], C, (512, 512), device)
                for v, fl in zip(views, flips):
                    acc.add(v, flip=fl)
                return acc.argmax()
            p = ops.ref_tta_merge(views, flips, (512, 512))
            return p.max(1)

        def nbytes(st):
            views, _ = st
            pixels = views[0].shape[0] * 512 * 512
            out = pixels * C * 4 if name == "tta" else pixels * 5  # probabilities, or uint8 labels + f32 max
            return sum(v.numel() * v.element_size() for v in views) + out
        return setup, run, nbytes
    raise ValueError(name)


def cpu_peak_subprocess(name: str, impl: str, quick: bool, threads: int) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--device", "cpu", "--_mem", f"{name}:{impl}"]
    if quick:
        cmd.append("--quick")
    if threads:
        cmd += ["--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return float(r.stdout.strip().splitlines()[-1])


def mem_child(spec: str, quick: bool) -> None:
    name, impl = spec.split(":")
    s = sizes(quick)
    setup, run, _ = variant_fn(name, impl, s, "cpu")
    # load the library and touch every code path on tiny inputs first, so that is not counted
    t = torch.zeros(1, 4, 4, dtype=torch.uint8)
    ops.confusion_matrix(torch.zeros(1, C, 4, 4), t, C)
    ops.tta_merge([torch.zeros(1, C, 2, 2)], [False], (4, 4))
    st = setup()
    before = reset_peak_rss()
    if peak_rss() > before + (64 << 20):  # could not reset: fall back to the high-water mark after setup
        before = peak_rss()
    out = run(st)
    after = peak_rss()
    del out
    print(max(0, after - before))


# ------------------------------------------------------------------------------------------------ main

ROWS = {
    "labels": "confusion, labels 16x512x512 int64",
    "logits": "confusion, logits 16x11x512x512 f32",
    "bf16": "confusion, logits 16x11x512x512 bf16",
    "stream": "confusion, 655 images streamed (logits f32)",
    "tta": "TTA merge, 4 scales x flip, B=8 C=11 512^2",
    "tta_stream": "TTA accumulator + argmax, same views",
}


def main(args) -> list[dict]:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._mem:
        mem_child(args._mem, args.quick)
        return []
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    s = sizes(args.quick)
    be = ops.backend()
    names = [n for n in ROWS if not args.only or n in args.only.split(",")]
    cuda = device.type == "cuda"
    copy_bw = copy_bandwidth(device) if cuda else None
    repeat = 3 if args.quick else (10 if cuda else 5)
    rows = []
    for name in names:
        setup, run_ours, nbytes = variant_fn(name, "ours", s, device)
        _, run_ref, _ = variant_fn(name, "ref", s, device)
        st = setup()
        r = {"op": name, "desc": ROWS[name].replace("16x", f"{s['cm_batch']}x").replace("655", str(s["stream_images"]))
             .replace("B=8", f"B={s['tta_batch']}")}
        rep_ref = 1 if (not cuda and name == "stream") else repeat
        r["ours_ms"] = timeit(lambda: run_ours(st), device, repeat) * 1e3
        r["ref_ms"] = timeit(lambda: run_ref(st), device, rep_ref, warmup=0 if rep_ref == 1 else 1) * 1e3
        r["speedup"] = r["ref_ms"] / r["ours_ms"]
        if cuda:
            r["ours_peak_mb"] = gpu_peak(lambda: run_ours(st), device) / 2 ** 20
            r["ref_peak_mb"] = gpu_peak(lambda: run_ref(st), device) / 2 ** 20
            r["gbps"] = nbytes(st) / (r["ours_ms"] / 1e3) / 1e9
            r["pct_copy"] = 100 * nbytes(st) / (r["ours_ms"] / 1e3) / copy_bw
        elif not args.no_memory and name != "stream":
            del st
            r["ours_peak_mb"] = cpu_peak_subprocess(name, "ours", args.quick, args.threads) / 2 ** 20
            r["ref_peak_mb"] = cpu_peak_subprocess(name, "ref", args.quick, args.threads) / 2 ** 20
        rows.append(r)
        print(f"  {r['desc']}: ours {r['ours_ms']:.2f} ms, ref {r['ref_ms']:.2f} ms, x{r['speedup']:.1f}", flush=True)

    head = (f"trashseg ops on {torch.cuda.get_device_name(device) if cuda else 'CPU'} "
            f"(ops: cpu={be['cpu']}{'/' + be['cpu_isa'] if be['cpu_isa'] else ''} cuda={be['cuda']}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
            + (f", copy {copy_bw / 1e9:.0f} GB/s" if cuda else "") + ")")
    print("\n" + head)
    cols = f"{'op':48s} {'ours ms':>9s} {'ref ms':>9s} {'speedup':>8s} {'peak MB ours/ref':>18s}"
    if cuda:
        cols += f" {'GB/s':>7s} {'% copy':>7s}"
    print(cols)
    print("-" * len(cols))
    for r in rows:
        mem = (f"{r['ours_peak_mb']:.0f}/{r['ref_peak_mb']:.0f}" if "ours_peak_mb" in r else "-")
        line = f"{r['desc']:48s} {r['ours_ms']:9.2f} {r['ref_ms']:9.2f} {r['speedup']:7.1f}x {mem:>18s}"
        if cuda:
            line += f" {r['gbps']:7.0f} {r['pct_copy']:6.0f}%"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "header": head, "copy_gbps": copy_bw and copy_bw / 1e9, "rows": rows},
                      f, indent=1)
    if args.tsv:
        with open(args.tsv, "w") as f:
            for r in rows:
                mem = (f"peak {r['ours_peak_mb']:.0f}/{r['ref_peak_mb']:.0f} MB" if "ours_peak_mb" in r else "")
                bw = f"{r['gbps']:.0f} GB/s = {r['pct_copy']:.0f}% copy" if cuda else ""
                details = f"ref {r['ref_ms']:.2f} ms, x{r['speedup']:.1f}; {mem}; {bw}".strip("; ")
                f.write(f"bench_ops: {r['op']}\tok\t{r['ours_ms']:.2f} ms\t{details}\n")
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
