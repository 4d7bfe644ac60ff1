"""How long train.py's checkpoint write takes for a large model, to size the stop path against torchrun's grace.

    python bench/bench_save.py                                   # Swin-L UperNet + AdamW state, into a temp folder
    python bench/bench_save.py --model upernet_convnext_tiny --out /scratch/runs --repeat 3

On SIGTERM a rank finishes its step and rank 0 writes last.pt: weights + AdamW's two moments (3 × fp32 parameters)
+ RNG states, through engine.checkpoint.atomic_save (torch.save to a temp file, fsync, rename). torchrun waits
--shutdown-timeout (TORCH_ELASTIC_SHUTDOWN_TIMEOUT, default 30 s) after forwarding SIGTERM before it sends SIGKILL.
Prints the checkpoint's size and each write's seconds (state_dict() gathering included).

Then the periodic checkpoint as train.py writes it, in the background (engine.run.save(background=True)): the
training stall (the copy to host memory and the thread's start), the write's own seconds while the main thread goes
on (--steps N: a forward/backward of a batch-2 crop each, timed against the same steps without a write), and the
worst SIGTERM-to-exit for a signal just after a periodic write began: the rest of that write, then the stop path's own.
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
    p.add_argument("--steps", type=int, default=0, help="training steps timed during the background write")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--keep-ckpts", type=int, default=1, help=argparse.SUPPRESS)
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
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": [ckpt.rng_state()], "iter": 1,
             "model_name": a.model}

    def steps(k: int) -> float:
        t0 = time.perf_counter()
        for _ in range(k):
            x = torch.randn(2, 3, a.crop, a.crop)
            logits, aux = model(x)
            (logits.float().mean() + aux.float().mean()).backward()
        return time.perf_counter() - t0

    base = steps(a.steps) if a.steps else 0.0
    t0 = time.perf_counter()
    job = {"error": None}
    snap = ckpt.host_copy(state)
    import threading
    job["thread"] = threading.Thread(target=ckpt.save_and_prune, args=(snap, [path], out, a.keep_ckpts, job))
    job["thread"].start()
    stall = time.perf_counter() - t0
    during = steps(a.steps) if a.steps else 0.0
    job["thread"].join()
    bg = time.perf_counter() - t0
    t1 = time.perf_counter()
    ckpt.atomic_save(state, path)
    sync = time.perf_counter() - t1
    print(f"{a.model}: periodic checkpoint in the background: training stall {stall:.2f} s (against a synchronous "
          f"write of {sync:.1f} s), background write {bg:.1f} s"
          + (f"; {a.steps} steps at crop {a.crop} took {during:.1f} s during it, {base:.1f} s without" if a.steps
             else ""), flush=True)
    print(f"{a.model}: SIGTERM-to-exit, signal just after a periodic write began: at most one step + {bg:.1f} s "
          f"(rest of that write) + {sync:.1f} s (the stop path's last.pt); synchronous periodic writes: one step + "
          f"{sync:.1f} s + {sync:.1f} s", flush=True)
    os.unlink(path)
    if a.out is None:
        os.rmdir(out)


if __name__ == "__main__":
    main()
