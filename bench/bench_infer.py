"""Inference throughput: single-scale and multi-scale flip TTA through our streaming fused merge, against the same
views merged the plain way (per-view F.interpolate + softmax + un-flip, all views kept, then mean), in one run.

    python bench/bench_infer.py                                    # CPU: demo model, 256 px
    python bench/bench_infer.py --device cuda --model upernet_convnext_tiny --images 819 --size 512 --batch 8
        # the competition's test set: 819 images, 4 scales × flip (the team's TTA pass took 3365 s)

Prints images/s, total time and peak memory of each path, and the ratio. Images are random uint8 tensors already in
memory: this times the model and the merge, not JPEG decoding (bench/bench_data.py times that).

    python bench/bench_infer.py --mode slide                       # CPU: demo model, 2000x1500, 512-px windows
    python bench/bench_infer.py --mode slide --height 3000 --width 4000 --device cuda --model upernet_convnext_tiny

--mode slide: one large image slid with --crop-size / --stride, ours (slide_accumulate_ into one float32 sum, divided
in place, through the fused TTA merge) against the plain loop (each window through the model, F.pad to full size and
add, a count plane, divide, softmax), alternating, same windows; time and peak memory of each. On the CPU each run
is its own process (the peak is its high-water mark above what it held before the call).
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

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import models  # noqa: E402
from engine.evaluate import autocast  # noqa: E402
from csrc import ops  # noqa: E402
from engine.predict import TTA_SCALES, forward_padded, tta_accumulate, view_size  # noqa: E402


@torch.no_grad()
def reference_tta(model, img, scales, flip, amp):
    """mmseg 1.x's way: every view's full-size probability map alive, then the mean."""
    b, _, h, w = img.shape
    x0 = model.normalize(img)
    maps = []
    for s in scales:
        vh, vw = view_size(h, w, s)
        x = x0 if (vh, vw) == (h, w) else F.interpolate(x0, size=(vh, vw), mode="bilinear", align_corners=False)
        for fl in ((False, True) if flip else (False,)):
            with autocast(img.device, amp):
                out = model(x.flip(-1) if fl else x)
            p = F.interpolate(out.float(), size=(h, w), mode="bilinear", align_corners=False).softmax(1)
            maps.append(p.flip(-1) if fl else p)
    probs = torch.stack(maps).mean(0)  # (B, C, H, W)
    return probs.max(1)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run(name, fn, batches, dev):
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    # Warm-up on every distinct batch shape, not only the first: with cudnn.benchmark each new input shape autotunes
    # every convolution (seconds on a large model), and 819 images in batches of 8 end with a batch of 3. Timing that
    # autotune in one path and not the other made fused TTA look 0.74x the reference on an H200 (gpu-check, 2026-12-04).
    seen = set()
    for b in batches:
        if tuple(b.shape) not in seen:
            seen.add(tuple(b.shape))
            fn(b)
    sync(dev)
    t = time.perf_counter()
    for b in batches:
        fn(b)
    sync(dev)
    dt = time.perf_counter() - t
    n = sum(b.shape[0] for b in batches)
    if dev.type == "cuda":
        mem = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark, MiB
    return {"name": name, "images": n, "s": dt, "img_per_s": n / dt, "peak_mib": mem}


@torch.no_grad()
def plain_slide(model, img, crop, stride, amp):
    """mmseg's slide_inference: windows through the model one at a time, F.pad + add into preds, a count plane."""
    b, _, h, w = img.shape
    x = model.normalize(img)
    preds = count = None
    for y0, y1, x0, x1 in ops.slide_grid((h, w), crop, stride):
        logits = forward_padded(model, x[:, :, y0:y1, x0:x1], amp).float()  # (B, C, eh, ew)
        if preds is None:
            preds = torch.zeros((b, logits.shape[1], h, w), device=img.device)
            count = torch.zeros((b, 1, h, w), device=img.device)
        preds += F.pad(logits, (x0, w - x1, y0, h - y1))
        count[:, :, y0:y1, x0:x1] += 1
    return (preds / count).softmax(1).max(1)


def slide_once(path, model, img, crop, stride, amp):
    if path == "ours":
        return tta_accumulate([model], img, [None], False, amp, mode="slide", crop_size=crop, stride=stride).argmax()
    return plain_slide(model, img, crop, stride, amp)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def slide_child(a, dev, name, amp) -> None:
    """One measured run in this process: JSON {s, peak_mib} on the last line."""
    torch.set_num_threads(a.threads or torch.get_num_threads())
    model = models.build_model(name).to(dev).eval()
    img = torch.randint(0, 256, (1, 3, a.height, a.width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    crop, stride = tuple(a.crop_size), tuple(a.stride)
    slide_once(a.child, model, img[..., :crop[0], :crop[1]].contiguous(), crop, stride, amp)  # warm-up
    base = _rss()
    t = time.perf_counter()
    slide_once(a.child, model, img, crop, stride, amp)
    dt = time.perf_counter() - t
    # VmHWM: this process's own peak RSS (ru_maxrss also counts the parent's RSS at fork)
    hwm = int([ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]) * 1024
    peak = (hwm - base) / 2**20
    print(json.dumps({"s": dt, "peak_mib": peak}))


def slide_bench(a, dev, name, amp) -> None:
    crop, stride = tuple(a.crop_size), tuple(a.stride)
    nwin = len(ops.slide_grid((a.height, a.width), crop, stride))
    res = {"ours": [], "plain": []}
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = models.build_model(name).to(dev).eval().to(memory_format=torch.channels_last)
        img = torch.randint(0, 256, (1, 3, a.height, a.width), dtype=torch.uint8, device=dev)
        for path in res:
            slide_once(path, model, img, crop, stride, amp)  # warm-up (cudnn autotune, extension load)
        for _ in range(a.repeats):
            for path in res:
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
                t = time.perf_counter()
                slide_once(path, model, img, crop, stride, amp)
                torch.cuda.synchronize(dev)
                res[path].append({"s": time.perf_counter() - t,
                                  "peak_mib": (torch.cuda.max_memory_allocated(dev) - base) / 2**20})
    else:
        for _ in range(a.repeats):
            for path in res:  # alternating, each in a fresh process: its own memory high-water mark
                cmd = [sys.executable, os.path.abspath(__file__), "--mode", "slide", "--child", path, "--model", name,
                       "--device", "cpu", "--amp", amp, "--height", str(a.height), "--width", str(a.width),
                       "--crop-size", *map(str, crop), "--stride", *map(str, stride), "--threads", str(a.threads or 0)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    sys.exit(f"{path} run failed:\n{r.stderr[-2000:]}")
                res[path].append(json.loads(r.stdout.strip().splitlines()[-1]))
    med = {k: (statistics.median(x["s"] for x in v), max(x["peak_mib"] for x in v)) for k, v in res.items()}
    fmap = 4 * 11 * a.height * a.width / 2**20
    print(f"\n{name} on {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'} | one {a.height}x{a.width} "
          f"image, windows {crop} stride {stride} ({nwin} windows), amp {amp}, {a.repeats} alternating runs each; "
          f"one (11, H, W) float32 map = {fmap:.0f} MiB")
    print(f"{'path':<34} {'median s':>9} {'peak MiB':>9}")
    for k, label in (("ours", "ours (slide_accumulate_ + TTA op)"), ("plain", "plain loop (F.pad + add, divide)")):
        print(f"{label:<34} {med[k][0]:>9.2f} {med[k][1]:>9.0f}")
    print(f"summary: slide {med['plain'][0] / med['ours'][0]:.2f}x the plain loop's speed, "
          f"{med['plain'][1] / max(med['ours'][1], 1e-9):.2f}x less peak memory ({med['ours'][1]:.0f} vs "
          f"{med['plain'][1]:.0f} MiB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", default="whole", choices=["whole", "slide"])
    p.add_argument("--height", type=int, default=1500, help="--mode slide: image height")
    p.add_argument("--width", type=int, default=2000, help="--mode slide: image width")
    p.add_argument("--crop-size", type=int, nargs=2, default=[512, 512])
    p.add_argument("--stride", type=int, nargs=2, default=[341, 341])
    p.add_argument("--repeats", type=int, default=2, help="--mode slide: alternating runs of each path")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the CPU runs (0: torch's default)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help="default: upernet_convnext_demo on CPU, _tiny on CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--ref-images", type=int, default=None,
                   help="images for the reference TTA (its images/s is the ratio's base; default: all on CPU, "
                        "160 on CUDA, where the full 819 would add minutes for the same ratio)")
    a = p.parse_args()
    dev = torch.device("cuda" if (a.device == "auto" and torch.cuda.is_available()) else
                       ("cpu" if a.device == "auto" else a.device))
    gpu = dev.type == "cuda"
    name = a.model or ("upernet_convnext_tiny" if gpu else "upernet_convnext_demo")
    n, size, bs = a.images or (819 if gpu else 8), a.size or (512 if gpu else 256), a.batch or (8 if gpu else 2)
    amp = ("bf16" if gpu else "none") if a.amp == "auto" else a.amp
    if a.mode == "slide":
        return slide_child(a, dev, name, amp) if a.child else slide_bench(a, dev, name, amp)
    torch.backends.cudnn.benchmark = gpu  # as train.py / infer.py set it on CUDA (engine.dist); both paths share it
    model = models.build_model(name).to(dev).eval()
    if a.channels_last or gpu:
        model = model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (min(bs, n - i), 3, size, size), dtype=torch.uint8, generator=g).to(dev)
               for i in range(0, n, bs)]
    ref_n = a.ref_images or (min(n, 160) if gpu else n)
    scales = [round(s * size / 512) for s in TTA_SCALES]  # the team's 256..640 at 512, scaled to --size
    rows = [
        run("single-scale", lambda b: tta_accumulate([model], b, [None], False, amp).argmax(), batches, dev),
        run(f"TTA {len(scales)}x2 fused", lambda b: tta_accumulate([model], b, scales, True, amp).argmax(),
            batches, dev),
        run(f"TTA {len(scales)}x2 reference", lambda b: reference_tta(model, b, scales, True, amp),
            batches[:max(1, -(-ref_n // bs))], dev),
    ]
    if rows[2]["images"] != n:  # the ratio compares the same images: the fused path again over the reference's
        rows.append(run(f"TTA {len(scales)}x2 fused, same", lambda b: tta_accumulate([model], b, scales, True,
                                                                                     amp).argmax(),
                        batches[:max(1, -(-ref_n // bs))], dev))
    fused = rows[-1] if len(rows) == 4 else rows[1]
    print(f"\n{name} on {torch.cuda.get_device_name(dev) if gpu else 'CPU'} | {n} images {size}x{size}, batch {bs}, "
          f"amp {amp}, TTA scales {scales} x flip")
    print(f"{'path':<24} {'images':>7} {'images/s':>9} {'total s':>9} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['name']:<24} {r['images']:>7} {r['img_per_s']:>9.2f} {r['s']:>9.2f} {r['peak_mib']:>9.0f}")
    print(f"fused TTA / reference (the same {rows[2]['images']} images): "
          f"{fused['img_per_s'] / rows[2]['img_per_s']:.2f}x speed"
          + (f", {rows[2]['peak_mib'] / max(fused['peak_mib'], 1e-9):.1f}x less peak memory" if gpu else
             " (CPU peak memory is the process high-water mark; see bench_ops.py for per-op memory)"))
    print(f"summary: fused TTA {fused['img_per_s'] / rows[2]['img_per_s']:.2f}x the reference; 819 images with TTA "
          f"in {819 / rows[1]['img_per_s']:.1f} s (the team: 3365 s); single-scale {rows[0]['img_per_s']:.1f} img/s")


if __name__ == "__main__":
    main()
