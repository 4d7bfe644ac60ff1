"""Fault injection: a 2-process torchrun training run with DataLoader workers, killed at random moments and restarted
with the same command until it is done; its final weights must equal an uninterrupted run's bit for bit.

    make chaos                                       # CHAOS_TRIALS=20 CHAOS_SEED=0 by default
    python -m bench.chaos --trials 3 --seed 7        # or CHAOS_TRIALS / CHAOS_SEED in the environment
    python -m bench.chaos --trials 1 --seed 1234     # replay one failing trial by the seed it printed

Each trial runs `torchrun --standalone --nproc_per_node 2 train.py ... --workers 1 --grad-accum 2 --resume` (one
process with --nproc 1 / CHAOS_NPROC=1) on tiny demo data (8 steps of crop 64, validation after steps 4 and 8,
last.pt every 3): one command for the first start and every restart, as a pre-emptible job's script would. Before
each of its first 1-2 starts it picks
    a fault:  SIGTERM to the torchrun launcher (a scheduler's stop; torchrun forwards it to every rank's process group)
              or SIGKILL to every process of the job (launcher, ranks, DataLoader workers: a node lost), and
    a moment: a random time after launch (often before the first checkpoint, even while torch imports), after a random
              training step (plus up to half a second: inside the next step or its data loading), inside validation,
              or inside a checkpoint write (the temp file written, not yet renamed).
The moments come from marker files that train.py writes when TRASHSEG_CHAOS_DIR is set (engine/chaos.py; inert
otherwise), which also holds validation and checkpoint writes open TRASHSEG_CHAOS_PAUSE seconds so the signal lands
inside them. A trial fails when the run does not finish within its restarts, when a SIGTERM'd run does not exit
cleanly (a rank's traceback, a DataLoader worker killed, no "SIGTERM: saved" once training had started), or when its
final last.pt (weights and optimizer state) differs from the uninterrupted run's. Prints one line per trial and
    faults survived N/N, bitwise-identical M/M
with the seeds of failing trials; exit status 1 when any trial failed.
"""
from __future__ import annotations

import argparse
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
TORCHRUN = os.path.join(os.path.dirname(PY), "torchrun")
ITERS, EVAL, CKPT = 8, 4, 3
TRAIN = ["--model", "upernet_convnext_demo", "--crop-size", "64", "--grad-accum", "2", "--workers", "1",
         "--iters", str(ITERS), "--eval-interval", str(EVAL), "--ckpt-interval", str(CKPT), "--keep-ckpts", "1",
         "--warmup-iters", "1", "--lr", "1e-3", "--log-interval", "1", "--no-progress", "--seed", "0"]
MOMENTS = ("time", "step", "val", "save")


def make_demo(root: str) -> None:
    if not os.path.isfile(os.path.join(root, "train.json")):
        subprocess.run([PY, "-m", "data.demo", "--out", root, "--train", "8", "--val", "4", "--test", "2", "--extra",
                        "2", "--size", "64", "--seed", "3"], cwd=ROOT, check=True, capture_output=True)


NPROC = int(os.environ.get("CHAOS_NPROC", "2"))


def command(demo: str, out: str) -> list[str]:
    """The job's one command (global batch 2: one image per rank with 2 processes, two with one)."""
    return [TORCHRUN, "--standalone", "--nproc_per_node", str(NPROC), "train.py", "--data-root", demo, "--out", out,
            *TRAIN, "--batch-size", str(2 // NPROC), "--resume"]


def descendants(pid: int) -> list[int]:
    """pid's process tree, from /proc (the ranks run in their own sessions, so one killpg does not reach them)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL every process of the job, as a node loss would: stop the tree first so nothing new is spawned."""
    tree = descendants(proc.pid)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for p in tree + [q for q in descendants(proc.pid) if q not in tree]:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass


def markers(folder: str, kind: str) -> int:
    return len(glob.glob(os.path.join(folder, kind + ".*")))


def attempt(cmd: list[str], env: dict, fault: tuple[str, str, float] | None, log_path: str,
            timeout: float) -> tuple[int, bool, str]:
    """Run the command once, delivering `fault` = (signal name, moment kind, target) if the run gets that far.
    Returns (exit status, fault delivered, output)."""
    marks = env["TRASHSEG_CHAOS_DIR"]
    shutil.rmtree(marks, ignore_errors=True)
    os.makedirs(marks)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0, delivered = time.monotonic(), False
        try:
            while fault and proc.poll() is None and time.monotonic() - t0 < timeout:
                sig, kind, target = fault
                if kind == "time":
                    hit = time.monotonic() - t0 >= target
                else:
                    hit = markers(marks, kind) >= target
                    if hit and kind == "step":
                        time.sleep(random.Random(target).uniform(0, 0.5))  # inside the next step / data loading
                if hit:
                    if sig == "SIGTERM":
                        proc.send_signal(signal.SIGTERM)  # to the launcher only, as Slurm / Kubernetes do
                    else:
                        kill_job(proc)
                    delivered = True
                    break
                time.sleep(0.02)
            proc.wait(timeout=max(timeout - (time.monotonic() - t0), 1))
        except subprocess.TimeoutExpired:
            kill_job(proc)
            proc.wait()
            return -999, delivered, open(log_path).read()
    return proc.returncode, delivered, open(log_path).read()


def clean_stop(output: str) -> str:
    """'' when a SIGTERM'd job stopped the way it should; else what went wrong. The launcher's own traceback
    (torchrun re-raises the SignalException after its ranks have exited, and exits 1) is expected; any other is a
    rank's."""
    if "killed by signal" in output:
        return "a DataLoader worker was killed"
    tracebacks = output.split("Traceback (most recent call last):")[1:]
    if any("bin/torchrun" not in tb.split("\n", 2)[1] for tb in tracebacks):
        return "a rank's traceback"
    return ""


def trial(seed: int, demo: str, work: str, reference: dict, pause: float, timeout: float) -> tuple[int, int, str]:
    """One trial: (faults delivered, faults survived, failure or '')."""
    import torch
    rng = random.Random(seed)
    out = os.path.join(work, f"trial{seed}")
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRASHSEG_CHAOS_DIR": os.path.join(work, f"marks{seed}"),
           "TRASHSEG_CHAOS_PAUSE": str(pause)}
    cmd = command(demo, out)
    n_faults, delivered, survived, notes = rng.choice([1, 2]), 0, 0, []
    for k in range(n_faults + 3):
        fault = None
        if k < n_faults:
            kind = rng.choice(MOMENTS)
            target = {"time": rng.uniform(1.0, 25.0), "step": rng.randint(1, NPROC * ITERS - 2),
                      "val": rng.randint(1, NPROC), "save": rng.randint(1, 3)}[kind]
            fault = (rng.choice(["SIGTERM", "SIGKILL"]), kind, target)
        rc, hit, output = attempt(cmd, env, fault, os.path.join(work, f"trial{seed}.{k}.log"), timeout)
        if hit:
            delivered += 1
            notes.append(f"{fault[0]}@{fault[1]}{'' if fault[1] == 'time' else ' '}"
                         f"{fault[2]:.1f}{'s' if fault[1] == 'time' else ''}")
            bad = clean_stop(output) if fault[0] == "SIGTERM" else ""
            started = "iter 1/" in output
            if fault[0] == "SIGTERM" and started and "SIGTERM: saved" not in output and "final val" not in output:
                bad = bad or "no 'SIGTERM: saved'"
            if bad:
                where = f"log {work}/trial{seed}.{k}.log"
                return delivered, survived, f"{fault[0]} at {fault[1]} {fault[2]}: {bad} ({where})"
            survived += 1
            continue
        if rc != 0:
            return delivered, survived, f"exit {rc} without a fault (log {work}/trial{seed}.{k}.log)"
        break
    last = os.path.join(out, "last.pt")
    if not os.path.isfile(last):
        return delivered, survived, "no last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    if state["iter"] != ITERS:
        return delivered, survived, f"ended at iteration {state['iter']}"
    if not os.path.isfile(os.path.join(out, "best.pt")):
        return delivered, survived, "no best.pt"
    diff = differing(reference, state)
    return delivered, survived, (f"not bitwise identical ({diff}) after " + ", ".join(notes)) if diff else \
        ("ok: " + ", ".join(notes) if notes else "ok: no fault landed")


def differing(a: dict, b: dict) -> str:
    """The first tensor (model weights, then AdamW state) that differs between two checkpoints, or ''."""
    import torch
    for k, v in a["model"].items():
        if not torch.equal(v, b["model"][k]):
            return k
    for p, s in a["optimizer"]["state"].items():
        for k, v in s.items():
            if not torch.equal(v, b["optimizer"]["state"][p][k]):
                return f"optimizer {p}.{k}"
    return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=int(os.environ.get("CHAOS_TRIALS", "20")))
    p.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "0")),
                   help="trial i uses seed + i; a failing trial's seed replays it alone (--trials 1 --seed S)")
    p.add_argument("--work", default=None,
                   help="folder for runs and logs (default: a temp folder, removed when every trial passes)")
    p.add_argument("--pause", type=float, default=1.0, help="TRASHSEG_CHAOS_PAUSE: seconds validation / writes hold")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one start may take")
    p.add_argument("--nproc", type=int, choices=[1, 2], default=NPROC, help="processes per job (CHAOS_NPROC)")
    a = p.parse_args(argv)
    globals()["NPROC"] = a.nproc
    import torch
    work = a.work or tempfile.mkdtemp(prefix="chaos_")
    os.makedirs(work, exist_ok=True)
    demo = os.path.join(work, "demo")
    make_demo(demo)
    ref_out = os.path.join(work, "reference")
    shutil.rmtree(ref_out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRASHSEG_CHAOS_DIR", None)
    r = subprocess.run(command(demo, ref_out), cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-3000:] + r.stderr[-3000:])
        print("the uninterrupted reference run failed")
        return 1
    reference = torch.load(os.path.join(ref_out, "last.pt"), map_location="cpu", weights_only=True)
    faults = survived = identical = 0
    failed = []
    for i in range(a.trials):
        seed = a.seed + i
        t0 = time.monotonic()
        d, s, msg = trial(seed, demo, work, reference, a.pause, a.timeout)
        faults, survived = faults + d, survived + s
        ok = msg.startswith("ok")
        identical += ok
        if not ok:
            failed.append(seed)
        print(f"trial {i + 1}/{a.trials} seed {seed}: {msg} ({time.monotonic() - t0:.0f} s)", flush=True)
    print(f"faults survived {survived}/{faults}, bitwise-identical {identical}/{a.trials}"
          + (" (1 process)" if a.nproc == 1 else ""))
    if failed:
        print(f"failing seeds: {' '.join(map(str, failed))} (replay: python -m bench.chaos --trials 1 --seed S; "
              f"logs in {work})")
        return 1
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())
