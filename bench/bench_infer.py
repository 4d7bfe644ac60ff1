"""Inference throughput: single-scale and multi-scale flip TTA through our streaming fused merge, against the same
views merged the plain way (per-view F.interpolate + softmax + un-flip, all views kept, then mean), in one run.

    python bench/bench_infer.py                                    # CPU: demo model, 256 px
    python bench/bench_infer.py --device cuda --model upernet_convnext_tiny --images 819 --size 512 --batch 8
        # the competition's test set: 819 images, 4 scales × flip (the team's TTA pass took 3365 s)

Prints images/s, total time and peak memory of each path, and the ratio. Images are random uint8 tensors already in
memory: this times the model and the merge, not JPEG decoding (bench/bench_data.py times that).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import models  # noqa: E402
from engine.evaluate import autocast  # noqa: E402
from engine.predict import TTA_SCALES, tta_accumulate, view_size  # noqa: E402


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
    fn(batches[0])  # warm-up (cudnn autotune, extension load)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
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
    print(f"\n{name} on {torch.cuda.get_device_name(dev) if gpu else 'CPU'} | {n} images {size}x{size}, batch {bs}, "
          f"amp {amp}, TTA scales {scales} x flip")
    print(f"{'path':<24} {'images':>7} {'images/s':>9} {'total s':>9} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['name']:<24} {r['images']:>7} {r['img_per_s']:>9.2f} {r['s']:>9.2f} {r['peak_mib']:>9.0f}")
    print(f"fused TTA / reference: {rows[1]['img_per_s'] / rows[2]['img_per_s']:.2f}x speed"
          + (f", {rows[2]['peak_mib'] / max(rows[1]['peak_mib'], 1e-9):.1f}x less peak memory" if gpu else
             " (CPU peak memory is the process high-water mark; see bench_ops.py for per-op memory)"))
    print(f"summary: fused TTA {rows[1]['img_per_s'] / rows[2]['img_per_s']:.2f}x the reference; 819 images with TTA "
          f"in {819 / rows[1]['img_per_s']:.1f} s (the team: 3365 s); single-scale {rows[0]['img_per_s']:.1f} img/s")


if __name__ == "__main__":
    main()
