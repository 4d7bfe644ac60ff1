"""How long train.py's checkpoint write takes for a large model, to size the stop path against torchrun's grace.

    python bench/bench_save.py                                   # Swin-L UperNet + AdamW state, into a temp folder
    python bench/bench_save.py --model upernet_convnext_tiny --out /scratch/runs --repeat 3

On SIGTERM a rank finishes its step and rank 0 writes last.pt: weights + AdamW's two moments (3 × fp32 parameters)
+ RNG states, through engine.checkpoint.atomic_save (torch.save to a temp file, fsync, rename). torchrun waits
--shutdown-timeout (TORCH_ELASTIC_SHUTDOWN_TIMEOUT, default 30 s) after forwarding SIGTERM before it sends SIGKILL.
Prints the checkpoint's size and each write's seconds (state_dict() gathering included).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import models  # noqa: E402
from engine import checkpoint as ckpt  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="upernet_swin_large")
    p.add_argument("--out", default=None, help="folder to write into (default: a temp folder on /tmp's disk)")
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    model = models.build_model(a.model, 11)
    opt = torch.optim.AdamW(models.param_groups(model, weight_decay=0.01, layer_decay=0.9), lr=1e-4, fused=True)
    for q in model.parameters():
        q.grad = torch.zeros_like(q)
    opt.step()  # allocates both moments, as in a running job
    n = sum(q.numel() for q in model.parameters())
    out = a.out or tempfile.mkdtemp(prefix="bench_save_")
    path = os.path.join(out, "last.pt")
    for r in range(a.repeat):
        t0 = time.perf_counter()
        ckpt.atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": [ckpt.rng_state()],
                          "iter": 1, "model_name": a.model}, path)
        dt = time.perf_counter() - t0
        print(f"{a.model}: {n / 1e6:.0f} M params, checkpoint {os.path.getsize(path) / 2**30:.2f} GiB, "
              f"write {dt:.1f} s (run {r + 1})", flush=True)
    os.unlink(path)
    if a.out is None:
        os.rmdir(out)


if __name__ == "__main__":
    main()
