"""Fault injection: a 2-process torchrun training run with DataLoader workers, killed at random moments and restarted
with the same command until it is done; its final weights must equal an uninterrupted run's bit for bit.

    make chaos                                       # CHAOS_TRIALS=20 CHAOS_SEED=0 by default
    python -m bench.chaos --trials 3 --seed 7        # or CHAOS_TRIALS / CHAOS_SEED in the environment
    python -m bench.chaos --trials 1 --seed 1234     # replay one failing trial by the seed it printed

Each trial runs `torchrun --standalone --nproc_per_node 2 train.py ... --workers 1 --grad-accum 2 --resume` (one
process with --nproc 1 / CHAOS_NPROC=1) on tiny demo data (8 steps of crop 64, validation after steps 4 and 8,
last.pt every 3): one command for the first start and every restart, as a pre-emptible job's script would. Before
each of its first 1-2 starts it picks
    a fault:  SIGTERM to the torchrun launcher (a scheduler's stop; torchrun forwards it to every rank's process
              group), sent once or twice; SIGTERM then SIGKILL inside the stop path's write; SIGKILL to every process
              of the job (a node lost); SIGTERM to the last rank's process group alone; SIGKILL to that rank alone;
              SIGKILL to the launcher alone (its ranks go on: the next start must refuse the folder they write);
    a moment: a random time after launch (often before the first checkpoint, even while torch imports), after a random
              training step (plus up to half a second: inside the next step or its data loading), inside validation,
              inside a checkpoint write (the temp file written, not yet renamed), or in the final step and its saves.
With --nodes 2 (CHAOS_NODES=2) the job is two torchrun "nodes" of one rank each on this machine, each writing its own
node-local --out (node 1 keeps copies of rank 0's checkpoints); the launcher-alone kill gives way to SIGKILL-node
(node 1's launcher and rank lost), and the final check includes node 1's copy of last.pt.
Trials whose seed ends in 9 play a fixed pair instead: SIGKILL to the job after its first step (no checkpoint yet),
then SIGKILL to the bare restart while it deletes that run's files (engine.run.claim's cleanup); the next start must
restart the run, not refuse its folder.
The moments come from marker files that train.py writes when TRASHSEG_CHAOS_DIR is set (engine/chaos.py; inert
otherwise), which also holds validation and checkpoint writes open TRASHSEG_CHAOS_PAUSE seconds so the signal lands
inside them. A trial fails when
    the run does not finish within its restarts, or exits non-zero without a fault;
    a SIGTERM'd run does not stop cleanly: a rank's traceback, a DataLoader worker killed, no "SIGTERM: saved" once
        training had started, or a rank's exit code (engine.chaos.exit_code) other than 143 (0 if it finished);
    a restart resumes another iteration than the newest checkpoint written before the fault (a deterministic replay
        from an older one would still end bitwise equal: this is what sees lost work), or loses more steps than
        allowed (SIGTERM kinds: none; SIGKILL kinds: at most --ckpt-interval, or twice that when a periodic write was
        still in flight: it is written in the background and counts only once durable);
    the metrics log is not one record per step and per validation, best.pt does not hold the best logged mIoU, or
        the final last.pt (weights and optimizer state) differs from the uninterrupted run's.
Prints one line per trial and
    faults survived N/N, bitwise-identical M/M
    lost steps per fault: KIND max S (n=COUNT); ...
with the seeds of failing trials; exit status 1 when any trial failed. --fault SIGNAL:MOMENT:TARGET (repeatable)
replaces the random faults; TRASHSEG_CHAOS_BREAK=data|older breaks resume on purpose to show a trial failing.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
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
MOMENTS = ("time", "step", "val", "save", "final")  # and "cleanup": CLEANUP's second fault
# A run SIGKILLed before its first checkpoint, then its bare restart SIGKILLed while deleting that run's files (the
# first file gone, args.json not yet): the next start must not be locked out. Every seed ending in 9 plays it.
CLEANUP = [("SIGKILL", "step", 1.0), ("SIGKILL", "cleanup", 1.0)]


def make_demo(root: str) -> None:
    if not os.path.isfile(os.path.join(root, "train.json")):
        subprocess.run([PY, "-m", "data.demo", "--out", root, "--train", "8", "--val", "4", "--test", "2", "--extra",
                        "2", "--size", "64", "--seed", "3"], cwd=ROOT, check=True, capture_output=True)


NPROC = int(os.environ.get("CHAOS_NPROC", "2"))  # processes in the job (ranks)
NODES = int(os.environ.get("CHAOS_NODES", "1"))  # 2: two torchrun "nodes" of one rank each on this machine


def node_out(out: str, node: int) -> str:
    """Node `node`'s --out: node 0 writes OUT, node 1 its own node-local folder OUT.node1."""
    return out if node == 0 else f"{out}.node{node}"


def command(demo: str, out: str) -> list[list[str]]:
    """The job's command per node (global batch 2: one image per rank with 2 processes, two with one). Two nodes
    rendezvous on a port fresh for each start, as a rescheduled job's would be."""
    train = ["train.py", "--data-root", demo, *TRAIN, "--batch-size", str(2 // NPROC), "--resume"]
    if NODES == 1:
        return [[TORCHRUN, "--standalone", "--nproc_per_node", str(NPROC), *train, "--out", out]]
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [[TORCHRUN, "--nnodes", str(NODES), "--node_rank", str(n), "--nproc_per_node", "1", "--master_addr",
             "127.0.0.1", "--master_port", str(port), *train, "--out", node_out(out, n)] for n in range(NODES)]


class Job:
    """The launchers of one start, one per node; `pid` and `send_signal` are node 0's, as for one launcher."""

    def __init__(self, procs: list[subprocess.Popen]):
        self.procs = procs
        self.pid = procs[0].pid

    def poll(self) -> int | None:
        codes = [p.poll() for p in self.procs]
        return None if None in codes else next((c for c in codes if c), 0)

    def send_signal(self, sig: int) -> None:  # a scheduler's stop reaches every node's launcher
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)

    def wait(self, timeout: float) -> int:
        t0 = time.monotonic()
        for p in self.procs:
            p.wait(timeout=max(timeout - (time.monotonic() - t0), 0.1))
        return self.poll()

    @property
    def returncode(self) -> int | None:
        return self.poll()


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


def kill_job(job: "Job", nodes: list[int] | None = None) -> None:
    """SIGKILL every process of the job (or of `nodes` only), as losing its nodes would: stop each tree first so
    nothing new is spawned."""
    roots = [q.pid for i, q in enumerate(job.procs) if nodes is None or i in nodes]
    tree = [q for r in roots for q in descendants(r)]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for p in tree + [q for r in roots for q in descendants(r) if q not in tree]:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass


def markers(folder: str, kind: str) -> int:
    return len(glob.glob(os.path.join(folder, kind + ".*")))


SIGNALS = ("SIGTERM", "SIGKILL", "SIGTERM-rank", "SIGKILL-rank", "SIGTERM-twice", "SIGTERM-then-SIGKILL",
           "SIGKILL-launcher")
# Two nodes: the launcher-alone kill is a one-node case (node 1's launcher holds no lease); SIGKILL-node loses node 1
# (its launcher and rank) while node 0 goes on until its collectives fail.
SIGNALS_2NODES = tuple(s for s in SIGNALS if s != "SIGKILL-launcher") + ("SIGKILL-node",)
ORPHANS: list[int] = []  # ranks left running by a launcher killed alone (SIGKILL-launcher)


def rank_pid(job: Job, rank: int) -> int | None:
    """The process of `rank` (a child of a launcher whose RANK is `rank`), or None before it exists."""
    for launcher in job.procs:
        for q in descendants(launcher.pid):
            try:
                with open(f"/proc/{q}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                env = open(f"/proc/{q}/environ", "rb").read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if ppid == launcher.pid and f"RANK={rank}".encode() in env:
                return q
    return None


def deliver(proc: Job, sig: str, marks: str) -> bool:
    """Send one fault: SIGTERM to the launcher (once, or twice 0.3 s apart), SIGKILL to the whole job, SIGTERM to
    the last rank's process group or SIGKILL to that rank alone, or SIGTERM and then SIGKILL to the whole job as
    soon as the stop path's checkpoint write is inside (its temp file written, not yet renamed). False when the
    rank to signal does not exist yet (the launcher is still starting it)."""
    if sig in ("SIGTERM", "SIGTERM-twice", "SIGTERM-then-SIGKILL"):
        saves = markers(marks, "save")
        proc.send_signal(signal.SIGTERM)
        if sig == "SIGTERM-twice":
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
        elif sig == "SIGTERM-then-SIGKILL":
            t0 = time.monotonic()
            while markers(marks, "save") == saves and proc.poll() is None and time.monotonic() - t0 < 120:
                time.sleep(0.02)
            kill_job(proc)
    elif sig == "SIGKILL":
        kill_job(proc)
    elif sig == "SIGKILL-node":
        kill_job(proc, nodes=[NODES - 1])
    elif sig == "SIGKILL-launcher":  # the launcher alone: its ranks go on, as after a scheduler's kill of one process
        ORPHANS[:] = [q for q in descendants(proc.pid) if q != proc.pid]
        os.kill(proc.pid, signal.SIGKILL)
    else:
        pid = rank_pid(proc, NPROC - 1)
        if pid is None:
            return False
        try:
            if sig == "SIGTERM-rank":
                os.killpg(pid, signal.SIGTERM)  # the rank and its DataLoader workers, as torchrun's shutdown does
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
    return True


def attempt(cmds: list[list[str]], env: dict, fault: tuple[str, str, float] | None, log_path: str,
            timeout: float) -> tuple[int, bool, str]:
    """Run the command once, delivering `fault` = (signal kind, moment kind, target) if the run gets that far.
    Returns (exit status, fault delivered, output)."""
    marks = env["TRASHSEG_CHAOS_DIR"]
    shutil.rmtree(marks, ignore_errors=True)
    os.makedirs(marks)
    logs = [log_path] + [f"{log_path}.node{n}" for n in range(1, len(cmds))]
    files = [open(path, "w") for path in logs]
    proc = Job([subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
                for cmd, f in zip(cmds, files)])
    t0, delivered = time.monotonic(), False
    try:
        while fault and proc.poll() is None and time.monotonic() - t0 < timeout:
            sig, kind, target = fault
            if kind == "time":
                hit = time.monotonic() - t0 >= target
            else:
                hit = markers(marks, "step" if kind == "final" else kind) >= target
                if hit and kind == "step":
                    time.sleep(random.Random(target).uniform(0, 0.5))  # inside the next step / data loading
            if hit and deliver(proc, sig, marks):
                delivered = True
                break
            time.sleep(0.02)
        proc.wait(timeout=max(timeout - (time.monotonic() - t0), 1))
    except subprocess.TimeoutExpired:
        kill_job(proc)
        proc.wait(60)
        return -999, delivered, "".join(open(path).read() for path in logs)
    finally:
        for f in files:
            f.close()
    return proc.returncode, delivered, "".join(open(path).read() for path in logs)  # node 0's log first


def clean_stop(output: str) -> str:
    """'' when a SIGTERM'd job stopped the way it should; else what went wrong. The launcher's own tracebacks
    (torchrun re-raises the SignalException after its ranks have exited, and exits 1; a second SIGTERM interrupts
    its shutdown) and its report of ranks that exited 143 are expected; a traceback through train.py is a rank's."""
    if "killed by signal" in output:
        return "a DataLoader worker was killed"
    tracebacks = output.split("Traceback (most recent call last):")[1:]
    if any('train.py", line' in tb or "[rank" in tb for tb in tracebacks):  # the launcher's frames are torch's only
        return "a rank's traceback"
    return ""


def lease_pid(out: str) -> int | None:
    """The process named by OUT/.lease (engine.lease), or None when there is none or it cannot be read."""
    try:
        with open(os.path.join(out, ".lease")) as f:
            return int(json.load(f)["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def exit_codes(marks: str) -> list[int]:
    """The exit codes the ranks recorded (engine.chaos.exit_code) in the attempt that just ended."""
    return sorted(int(os.path.basename(p).split(".")[1]) for p in glob.glob(os.path.join(marks, "exit.*")))


def saved_iter(out: str) -> int:
    """The iteration of the newest checkpoint a bare --resume may use (last.pt, else the newest iter_N.pt); 0: none."""
    import torch
    best = 0
    for p in [os.path.join(out, "last.pt")] + glob.glob(os.path.join(out, "iter_*.pt")):
        try:
            best = max(best, int(torch.load(p, map_location="cpu", weights_only=True, mmap=True)["iter"]))
        except Exception:
            continue
    return best


def reached(output: str) -> int:
    """The last training iteration the attempt logged (0: none)."""
    its = [int(m) for m in re.findall(r"^iter (\d+)/", output, re.M)]
    return max(its, default=0)


def resumed_at(output: str) -> int:
    m = re.search(r"^resumed .* at iteration (\d+)", output, re.M)
    return int(m.group(1)) if m else 0


def choose_fault(rng: random.Random) -> tuple[str, str, float]:
    kind = rng.choice(MOMENTS)
    target = {"time": rng.uniform(1.0, 25.0), "step": rng.randint(1, NPROC * ITERS - 2),
              "val": rng.randint(1, NPROC), "save": rng.randint(1, 3),
              "final": NPROC * (ITERS - 1) + 1}[kind]  # inside the final step and its saves
    return rng.choice(SIGNALS if NODES == 1 else SIGNALS_2NODES), kind, target


def parse_fault(text: str) -> tuple[str, str, float]:
    sig, kind, target = text.split(":")
    assert sig in (SIGNALS if NODES == 1 else SIGNALS_2NODES) and kind in MOMENTS + ("cleanup",), text
    return sig, kind, float(target)


def trial(seed: int, demo: str, work: str, reference: dict, pause: float, timeout: float,
          forced: list[tuple[str, str, float]] | None = None) -> tuple[int, int, str, dict]:
    """One trial: (faults delivered, faults survived, failure or '', steps lost per fault kind)."""
    import torch
    rng = random.Random(seed)
    out = os.path.join(work, f"trial{seed}")
    for n in range(NODES):
        shutil.rmtree(node_out(out, n), ignore_errors=True)
    marks = os.path.join(work, f"marks{seed}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRASHSEG_CHAOS_DIR": marks, "TRASHSEG_CHAOS_PAUSE": str(pause)}
    forced = forced or (CLEANUP if seed % 10 == 9 else None)
    n_faults = len(forced) if forced else rng.choice([1, 2])
    delivered, survived, notes, lost = 0, 0, [], {}
    pending = None  # (fault, newest checkpoint after it, last iteration reached) of the previous attempt
    for k in range(n_faults + 6):
        fault = (forced[k] if forced else choose_fault(rng)) if k < n_faults else None
        log = os.path.join(work, f"trial{seed}.{k}.log")
        where = f"log {log}"
        orphans = ORPHANS[:]  # ranks the previous fault left running
        ORPHANS.clear()
        held = bool(orphans) and lease_pid(out) in orphans  # they had claimed --out before the launcher died
        if orphans:
            fault = None  # this start is judged on the lease alone: no fault of its own
        rc, hit, output = attempt(command(demo, out), env, fault, log, timeout)
        if orphans:
            live = [q for q in orphans if os.path.exists(f"/proc/{q}")]
            refused = rc != 0 and "in use by a live job" in output
            if held and live and not refused:  # this start must have refused the folder they write
                return delivered, survived, (f"a second job started on {out} while the killed launcher's ranks "
                                             f"{live}, holding its lease, still ran (exit {rc}) ({where})"), lost
            t0 = time.monotonic()  # ranks that got past the launcher's rendezvous run to their end (or their stop);
            while held and any(os.path.exists(f"/proc/{q}") for q in orphans) and time.monotonic() - t0 < timeout:
                time.sleep(0.2)  # ranks killed with it before that wait on its dead store: nothing to wait for
            for q in orphans:  # what a scheduler's cleanup of the node would do to stragglers
                try:
                    os.kill(q, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            pending = None  # the ranks may have written after the fault: no iteration to hold the restart to
            if held or refused:
                continue  # their exit markers mixed with this start's: the next start is the one judged
            # They never claimed --out (the launcher died while they were still starting): this start is judged as
            # any other below, and the final bitwise comparison shows whether they wrote to the folder after all.
        if pending:  # the restart must continue from the newest checkpoint written before the fault
            pf, saved, got, in_flight = pending
            at = resumed_at(output)
            if at != saved:
                return delivered, survived, (f"after {pf[0]}@{pf[1]} the restart resumed iteration {at}, the newest "
                                             f"checkpoint written before it holds {saved} ({where})"), lost
            steps = max(got - at, 0)
            lost.setdefault(pf[0] + (" (write in flight)" if in_flight else ""), []).append(steps)
            # A kill while a periodic write is in flight (written in the background, durable only once renamed)
            # also loses the steps since the checkpoint before it: at most one write runs at a time.
            limit = 0 if pf[0] in ("SIGTERM", "SIGTERM-rank", "SIGTERM-twice") else CKPT * (2 if in_flight else 1)
            if steps > limit:
                busy = ", a write in flight" if in_flight else ""
                return delivered, survived, (f"{pf[0]}@{pf[1]} lost {steps} steps (at most {limit}; reached {got}, "
                                             f"resumed {at}{busy}) ({where})"), lost
            pending = None
        codes = exit_codes(marks)
        started = reached(output) > resumed_at(output)
        if hit:
            delivered += 1
            notes.append(f"{fault[0]}@{fault[1]}{'' if fault[1] == 'time' else ' '}"
                         f"{fault[2]:.1f}{'s' if fault[1] == 'time' else ''}")
            term = fault[0] in ("SIGTERM", "SIGTERM-rank", "SIGTERM-twice")
            bad = clean_stop(output) if term else ""
            if term and started and "SIGTERM: saved" not in output and "final val" not in output:
                bad = bad or "no 'SIGTERM: saved'"
            if term and started and (len(codes) != NPROC or set(codes) - {143, 0}):
                bad = bad or f"rank exit codes {codes}, expected {NPROC} x 143 (or 0: finished)"
            if bad:
                return delivered, survived, f"{fault[0]} at {fault[1]} {fault[2]}: {bad} ({where})", lost
            survived += 1
            pending = (fault, saved_iter(out), reached(output), markers(marks, "saving") > markers(marks, "saved"))
            continue
        if rc != 0 or codes != [0] * NPROC:
            return delivered, survived, f"exit {rc} (ranks {codes}) without a fault ({where})", lost
        break
    last = os.path.join(out, "last.pt")
    if not os.path.isfile(last):
        return delivered, survived, "no last.pt", lost
    state = torch.load(last, map_location="cpu", weights_only=True)
    if state["iter"] != ITERS:
        return delivered, survived, f"ended at iteration {state['iter']}", lost
    if not os.path.isfile(os.path.join(out, "best.pt")):
        return delivered, survived, "no best.pt", lost
    rows = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    steps = [r["iter"] for r in rows if "loss" in r]
    vals = [r["iter"] for r in rows if "miou" in r]
    if steps != list(range(1, ITERS + 1)) or vals != list(range(EVAL, ITERS + 1, EVAL)):
        return delivered, survived, f"metrics log not continuous: steps {steps}, validations {vals}", lost
    best = torch.load(os.path.join(out, "best.pt"), map_location="cpu", weights_only=True)
    if best["best_miou"] != max(r["miou"] for r in rows if "miou" in r):
        return delivered, survived, f"best.pt holds mIoU {best['best_miou']}, not the best logged", lost
    diff = differing(reference, state)
    for n in range(1, NODES):  # a node-local folder holds rank 0's last.pt: losing node 0 loses nothing
        copy = os.path.join(node_out(out, n), "last.pt")
        if not os.path.isfile(copy) or differing(state, torch.load(copy, map_location="cpu", weights_only=True)):
            return delivered, survived, f"node {n}'s {copy} is not node 0's last.pt", lost
    return delivered, survived, ((f"not bitwise identical ({diff}) after " + ", ".join(notes)) if diff else
                                 ("ok: " + ", ".join(notes) if notes else "ok: no fault landed")), lost


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
    p.add_argument("--nodes", type=int, choices=[1, 2], default=NODES,
                   help="2: two torchrun nodes of one rank each on this machine, each with its own --out "
                        "(node-local disks; CHAOS_NODES); signals add SIGKILL-node (node 1 lost)")
    p.add_argument("--fault", action="append", default=None, metavar="SIGNAL:MOMENT:TARGET",
                   help="the faults of every trial, in order, instead of random ones (e.g. SIGTERM:step:10); "
                        f"signals {', '.join(SIGNALS)}, SIGKILL-node; moments {', '.join(MOMENTS)}, cleanup")
    a = p.parse_args(argv)
    globals()["NODES"] = a.nodes
    globals()["NPROC"] = 2 if a.nodes == 2 else a.nproc
    import torch
    work = a.work or tempfile.mkdtemp(prefix="chaos_")
    os.makedirs(work, exist_ok=True)
    demo = os.path.join(work, "demo")
    make_demo(demo)
    ref_out = os.path.join(work, "reference")
    shutil.rmtree(ref_out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRASHSEG_CHAOS_DIR", None)
    env.pop("TRASHSEG_CHAOS_BREAK", None)
    env["TRASHSEG_CHAOS_DIR"] = os.path.join(work, "marks_reference")  # markers only: no pause, no fault
    for n in range(NODES):
        shutil.rmtree(node_out(ref_out, n), ignore_errors=True)
    rc, _, output = attempt(command(demo, ref_out), {**env, "TRASHSEG_CHAOS_PAUSE": "0"}, None,
                            os.path.join(work, "reference.log"), a.timeout)
    if rc != 0:
        print(output[-3000:])
        print("the uninterrupted reference run failed")
        return 1
    reference = torch.load(os.path.join(ref_out, "last.pt"), map_location="cpu", weights_only=True)
    faults = survived = identical = 0
    failed, lost_all = [], {}
    for i in range(a.trials):
        seed = a.seed + i
        t0 = time.monotonic()
        d, s, msg, lost = trial(seed, demo, work, reference, a.pause, a.timeout,
                                [parse_fault(f) for f in a.fault] if a.fault else None)
        for kind, steps in lost.items():
            lost_all.setdefault(kind, []).extend(steps)
        faults, survived = faults + d, survived + s
        ok = msg.startswith("ok")
        identical += ok
        if not ok:
            failed.append(seed)
        print(f"trial {i + 1}/{a.trials} seed {seed}: {msg} ({time.monotonic() - t0:.0f} s)", flush=True)
    print(f"faults survived {survived}/{faults}, bitwise-identical {identical}/{a.trials}"
          + (" (1 process)" if NPROC == 1 else " (2 nodes, node-local --out)" if NODES == 2 else ""))
    print("lost steps per fault: " + ("; ".join(f"{k} max {max(v)} (n={len(v)})" for k, v in sorted(lost_all.items()))
                                      or "none delivered"))
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
