"""Pre-emption and restart: bare --resume after a kill before the first checkpoint, DataLoader workers that survive
SIGTERM, resume with changed optimiser / precision settings, best.pt when stopped on the last step, and the
fault-injection harness (bench/chaos.py) with the real torchrun launcher."""
import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
TINY = ["--model", "upernet_convnext_demo", "--crop-size", "64", "--batch-size", "2", "--workers", "0",
        "--warmup-iters", "1", "--lr", "1e-3", "--eval-interval", "1000", "--log-interval", "1", "--no-progress",
        "--val-json", ""]


@pytest.fixture(scope="module")
def demo(demo_data):
    return demo_data(train=8, val=4, test=2, extra=2, size=64, seed=3)


def _main(demo, out, *extra):
    import train
    return train.main(train.get_args_parser().parse_args(["--data-root", demo, "--out", str(out), *TINY, *extra]))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_bare_resume_restarts_a_run_killed_before_its_first_checkpoint(demo, tmp_path, capsys):
    """What a SIGKILL before the first last.pt leaves (args.json, a log with a line cut mid-write, a best.pt written
    just before last.pt, a temp file of the interrupted write): the same command with a bare --resume starts the
    run afresh (was: exit 2 "already holds a run", which killed the job's restart loop), ending with the weights of
    an uninterrupted run; a folder whose args.json records other settings is still refused."""
    _main(demo, tmp_path / "ref", "--iters", "2", "--resume")
    out = tmp_path / "run"
    _main(demo, out, "--iters", "2", "--resume")
    os.unlink(out / "last.pt")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iter": 3, "lo')  # a line cut short
    (out / ".tmp_abc.pt").write_bytes(b"partial")
    _main(demo, out, "--iters", "2", "--resume")
    assert "restarting this run from scratch" in capsys.readouterr().out
    assert not (out / ".tmp_abc.pt").exists()
    a, b = _load(tmp_path / "ref" / "last.pt")["model"], _load(out / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["iter"] for r in map(json.loads, open(out / "metrics.jsonl"))] == [1, 2]

    os.unlink(out / "last.pt")  # the same folder, but the command now differs in a training setting
    with pytest.raises(SystemExit) as e:
        _main(demo, out, "--iters", "2", "--resume", "--lr", "2e-3")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "holds no checkpoint" in err and "lr 0.001 → 0.002" in err, err
    assert "Continue it with --resume" not in err  # the user gave --resume: that advice went round in a circle


def test_dataloader_workers_survive_sigterm(demo):
    """torchrun's shutdown signals each rank's whole process group: the workers must leave stopping to the rank."""
    from data.coco import CocoSegDataset
    from data.loader import build_train_loader
    from data.transforms import build_transform
    ds = CocoSegDataset(demo, os.path.join(demo, "train.json"))
    it = build_train_loader(ds, build_transform("train", crop_size=32), batch_size=2, seed=0, workers=1)
    next(it)
    worker = it._workers[0]
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert worker.is_alive()
    assert next(it)["image"].shape == (2, 3, 32, 32)
    del it


def test_resume_applies_changed_weight_and_layer_decay(demo, tmp_path, capsys):
    """Optimizer.load_state_dict restored the saved groups' weight_decay / lr_scale, so a changed --weight-decay or
    --layer-decay was reported as a changed setting and then ignored."""
    import models
    out = tmp_path / "r"
    _main(demo, out, "--iters", "1", "--weight-decay", "0.01", "--layer-decay", "0.9")
    _main(demo, out, "--iters", "2", "--weight-decay", "0.2", "--layer-decay", "0.5", "--resume")
    assert "weight_decay 0.01 → 0.2" in capsys.readouterr().out
    groups = _load(out / "last.pt")["optimizer"]["param_groups"]
    expect = models.param_groups(models.build_model("upernet_convnext_demo", 11), weight_decay=0.2, layer_decay=0.5)
    assert [(g["weight_decay"], g["lr_scale"]) for g in groups] == \
        [(g["weight_decay"], g["lr_scale"]) for g in expect]
    assert any(g["weight_decay"] == 0.2 for g in groups)


def test_resume_switching_amp_to_fp16_starts_a_fresh_scaler(demo, tmp_path, capsys):
    """A bf16/fp32 checkpoint holds a disabled GradScaler's empty state: resuming it with --amp fp16 was a
    RuntimeError traceback; back from fp16 to none works as well."""
    out = tmp_path / "r"
    _main(demo, out, "--iters", "1", "--amp", "none")
    _main(demo, out, "--iters", "2", "--amp", "fp16", "--resume")
    assert "fresh one" in capsys.readouterr().out
    assert _load(out / "last.pt")["scaler"]  # an fp16 run's scaler state
    _main(demo, out, "--iters", "3", "--amp", "none", "--resume")
    assert _load(out / "last.pt")["iter"] == 3


def test_stop_on_the_last_step_without_validation_still_writes_best(demo, tmp_path, monkeypatch):
    """SIGTERM during the final step: the run is complete and ends normally, with best.pt (the stop path, which
    writes last.pt alone, is for runs with steps left)."""
    from engine import stop
    monkeypatch.setitem(stop._STATE, "signal", signal.SIGTERM)
    out = tmp_path / "r"
    _main(demo, out, "--iters", "1")
    assert _load(out / "best.pt")["iter"] == 1 and _load(out / "last.pt")["iter"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("trials,seed", [
    pytest.param(1, 0, id="short"),  # make test: seed 0 kills the launcher alone, then the job restarts past it
    pytest.param(2, 1, id="more", marks=pytest.mark.heavy),  # make test-heavy: seeds 1-2, SIGKILL seconds after launch
])
def test_chaos_two_process_torchrun_survives_sigterm_and_sigkill(tmp_path, trials, seed):
    """bench/chaos.py's short variants (make chaos runs 20 trials): a 2-process torchrun run with DataLoader workers,
    SIGTERM to the launcher / SIGKILL to every process at marked moments, restarted with the same command, ends
    bitwise equal to an uninterrupted run."""
    trials = int(os.environ.get("CHAOS_TRIALS", trials))
    r = subprocess.run([PY, "-m", "bench.chaos", "--trials", str(trials),
                        "--seed", os.environ.get("CHAOS_SEED", str(seed)), "--work", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = next(ln for ln in r.stdout.splitlines() if ln.startswith("faults survived"))
    n = summary.split("faults survived ")[1].split("/")[0]
    assert summary == f"faults survived {n}/{n}, bitwise-identical {trials}/{trials}" and int(n) >= 1
    assert r.stdout.strip().splitlines()[-1].startswith("lost steps per fault: ")


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("fault", ["SIGKILL-node:step:8", "SIGTERM-rank:save:2"])
def test_chaos_two_nodes_node_local_out(tmp_path, fault):
    """bench.chaos --nodes 2: two torchrun nodes of one rank each, each with its own --out. Node 1 lost after a
    step (its folder keeps rank 0's copies; the restart agrees on the newest checkpoint), and SIGTERM to node 1's rank
    inside a checkpoint write: both end bitwise equal to the uninterrupted two-node run, node 1's last.pt too."""
    r = subprocess.run([PY, "-m", "bench.chaos", "--nodes", "2", "--trials", "1", "--fault", fault, "--work",
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "faults survived 1/1, bitwise-identical 1/1 (2 nodes, node-local --out)" in r.stdout, r.stdout


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("broken,expect", [
    ("older", r"the restart resumed iteration (\d+), the newest checkpoint written before it holds (\d+)"),
    ("data", r"not bitwise identical"),
])
def test_chaos_reports_a_broken_resume(tmp_path, broken, expect):
    """The harness can fail: with resume broken on purpose (TRASHSEG_CHAOS_BREAK; engine/chaos.py) it reports the
    trial. 'older' resumes an older checkpoint than the newest, which replays deterministically to the same bits:
    only the check of the resumed iteration against the checkpoint written before the fault sees the lost work. The
    stop lands at iteration 4 or 5 (step markers count both ranks), between iter_3.pt and the next periodic write."""
    r = subprocess.run([PY, "-m", "bench.chaos", "--trials", "1", "--fault", "SIGTERM:step:8", "--work",
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "TRASHSEG_CHAOS_BREAK": broken})
    m = re.search(expect, r.stdout)
    assert r.returncode == 1 and m, r.stdout[-3000:] + r.stderr[-3000:]
    if broken == "older":  # which checkpoints exist when the stop lands depends on timing; the older one is taken
        assert int(m.group(1)) < int(m.group(2)), r.stdout
    assert "bitwise-identical 0/1" in r.stdout


@pytest.mark.heavy
def test_sigterm_to_one_rank_stops_every_rank_and_torchrun_restarts_them(demo, tmp_path):
    """SIGTERM to rank 1 alone (its process group: the rank and its DataLoader workers, as torchrun's own shutdown
    does): the stop flag is all-reduced after each step, so rank 0 saves that step too and both ranks exit 143.
    torchrun --max-restarts 1 counts that as a failed worker group and starts it again: the same command with
    --resume continues from last.pt, and torchrun exits 0 once the run is complete (the elastic restart path)."""
    from bench.chaos import descendants
    out = tmp_path / "t"
    cmd = [os.path.join(os.path.dirname(PY), "torchrun"), "--standalone", "--nproc_per_node", "2",
           "--max-restarts", "1", "train.py", "--data-root", demo, "--out", str(out), *TINY, "--batch-size", "1",
           "--workers", "1", "--iters", "12", "--ckpt-interval", "100", "--resume"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines, sent = [], False
    for line in p.stdout:
        lines.append(line)
        if line.startswith("iter 2/") and not sent:
            ranks = [q for q in descendants(p.pid)
                     if b"RANK=1\0" in open(f"/proc/{q}/environ", "rb").read().replace(b"LOCAL_RANK", b"")]
            os.killpg(min(ranks), signal.SIGTERM)  # the rank's process leads its group (torchrun's new session)
            sent = True
    p.wait(timeout=600)
    text = "".join(lines)
    assert p.returncode == 0, text[-3000:]
    assert "killed by signal" not in text, text[-3000:]
    saved = [ln for ln in lines if ln.startswith("SIGTERM: saved")]
    assert len(saved) == 1 and "exitcode: 143" in text, text[-3000:]
    it = int(saved[0].split("at iteration ")[1].split(";")[0])
    assert 2 <= it < 12 and f"at iteration {it}\n" in "".join(ln for ln in lines if ln.startswith("resumed"))
    assert _load(out / "last.pt")["iter"] == 12


def _same_state(a, b):
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for p, s in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][p][k]) for k, v in s.items())


def test_sigterm_writes_one_checkpoint_and_the_skipped_validation_runs_first(demo, tmp_path, monkeypatch, capsys):
    """A stop on a step that is due a validation, a best.pt, last.pt and an iter_N.pt: one write (last.pt, the
    validation recorded as pending), exit 143. The resume validates first, with the random state the uninterrupted
    run had, so it ends bitwise equal to it, with one validation record per iteration."""
    from engine import checkpoint, stop
    val = ["--val-json", "val.json", "--eval-interval", "1", "--ckpt-interval", "1", "--keep-ckpts", "3",
           "--iters", "3"]
    _main(demo, tmp_path / "ref", *val)
    writes = []
    real = checkpoint.atomic_save
    monkeypatch.setattr(checkpoint, "atomic_save", lambda obj, paths: (writes.append(paths), real(obj, paths)))
    monkeypatch.setitem(stop._STATE, "signal", signal.SIGTERM)
    out = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        _main(demo, out, *val, "--resume")
    assert e.value.code == 143
    assert len(writes) == 1 and sorted(os.listdir(out)) == ["args.json", "last.pt", "metrics.jsonl"]
    assert _load(out / "last.pt")["pending_val"] is True and _load(out / "last.pt")["iter"] == 1
    monkeypatch.setitem(stop._STATE, "signal", 0)
    _main(demo, out, *val, "--resume")
    assert "its validation, skipped by the stop, runs first" in capsys.readouterr().out
    _same_state(_load(tmp_path / "ref" / "last.pt"), _load(out / "last.pt"))
    rows = [json.loads(x) for x in open(out / "metrics.jsonl")]
    assert [r["iter"] for r in rows if "miou" in r] == [1, 2, 3]
    assert [r["iter"] for r in rows if "loss" in r] == [1, 2, 3]
    assert _load(out / "best.pt")["best_miou"] == max(r["miou"] for r in rows if "miou" in r)


def test_unreadable_last_pt_falls_back_to_the_newest_readable_checkpoint(demo, tmp_path, capsys):
    """A truncated last.pt (a disk fault, a copy cut short) was a permanent failure of every restart: the bare
    --resume says so and continues from the newest iter_N.pt, ending bitwise equal to an uninterrupted run."""
    common = ["--iters", "4", "--ckpt-interval", "2", "--keep-ckpts", "2"]
    _main(demo, tmp_path / "ref", *common)
    out = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        _main(demo, out, *common, "--stop-after", "3")
    assert e.value.code == 75  # --stop-after's own code (EX_TEMPFAIL)
    assert _load(out / "last.pt")["iter"] == 3 and _load(out / "iter_2.pt")["iter"] == 2
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    _main(demo, out, *common, "--resume")
    log = capsys.readouterr().out
    assert "last.pt cannot be read" in log and "resuming from" in log and "iter_2.pt" in log, log
    assert "resumed" in log and "at iteration 2" in log
    _same_state(_load(tmp_path / "ref" / "last.pt"), _load(out / "last.pt"))


def test_a_cleanup_killed_midway_never_locks_the_restart_out(demo, tmp_path, monkeypatch):
    """The bare restart's cleanup of a run killed before its first checkpoint deletes args.json last: a SIGKILL
    inside it leaves a folder that the same command restarts (deleting args.json first left files that no
    args.json vouched for, and every later --resume exited 2)."""
    from engine import checkpoint
    out = tmp_path / "r"
    _main(demo, out, "--iters", "1", "--resume")
    os.unlink(out / "last.pt")
    assert os.path.basename(checkpoint.run_files(str(out))[-1]) == "args.json"
    real, n = os.unlink, []

    def dies_after_one(p, *a, **k):
        if str(p).startswith(str(out)) and not os.path.basename(str(p)).startswith("."):
            n.append(p)
            if len(n) == 2:
                raise KeyboardInterrupt  # the process dies here, mid-cleanup
        return real(p, *a, **k)
    monkeypatch.setattr(os, "unlink", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        _main(demo, out, "--iters", "1", "--resume")
    monkeypatch.setattr(os, "unlink", real)
    assert (out / "args.json").exists()  # (the killed run's lease names this process: taken over as a dead one's)
    _main(demo, out, "--iters", "1", "--resume")
    assert _load(out / "last.pt")["iter"] == 1


def test_lease_one_live_job_per_out(demo, tmp_path, monkeypatch, capsys):
    """OUT/.lease: a live holder (here a sleeping child process) refuses a second job with exit 2
    naming it, in seconds; a lease nobody renewed for TRASHSEG_LEASE_S is taken over; a job whose lease was taken
    stops without saving (exit 2)."""
    import socket
    from engine import run as R
    out = tmp_path / "r"
    out.mkdir()
    lease = out / ".lease"
    live = subprocess.Popen(["sleep", "60"])
    lease.write_text(json.dumps({"host": socket.gethostname(), "pid": live.pid, "job": "7", "token": "x"}))
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as e:
        _main(demo, out, "--iters", "1", "--resume")
    live.kill()
    live.wait()
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"in use by a live job on {socket.gethostname()} pid {live.pid} (job 7)" in err
    assert time.monotonic() - t0 < 20 and lease.exists() and not (out / "last.pt").exists()

    dead = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "token": "z"}))
    _main(demo, out, "--iters", "1", "--resume")  # its holder is dead: taken over at once, fresh
    assert _load(out / "last.pt")["iter"] == 1 and not lease.exists()

    monkeypatch.setenv("TRASHSEG_LEASE_S", "2")
    lease.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "y"}))
    os.utime(lease, (time.time() - 10, time.time() - 10))  # expired
    _main(demo, out, "--iters", "2", "--resume")
    assert _load(out / "last.pt")["iter"] == 2 and not lease.exists()  # released at the end

    real = R.Lease.acquire

    def taken_over(self):
        held = real(self)
        self.lost = "elsewhere pid 9"
        return held
    monkeypatch.setattr(R.Lease, "acquire", taken_over)
    with pytest.raises(SystemExit) as e:
        _main(demo, out, "--iters", "4", "--resume")
    assert e.value.code == 2 and "taken over by elsewhere pid 9" in capsys.readouterr().err
    assert _load(out / "last.pt")["iter"] == 2  # nothing written after the lease was lost


def test_changed_eval_interval_is_named_on_resume(demo, tmp_path, capsys):
    """Each validation draws its DataLoader's seed from the global RNG, so a changed --eval-interval changes the
    trained bits after it: the resume names it."""
    out = tmp_path / "r"
    _main(demo, out, "--iters", "1")
    _main(demo, out, "--iters", "2", "--eval-interval", "7", "--resume")
    log = capsys.readouterr().out
    assert "eval_interval 1000 → 7" in log and "not bitwise" in log


_SPAWN_WORKER = r"""
import os, signal, sys, time
import torch.multiprocessing as mp
mp.set_start_method(sys.argv[2], force=True)
from data.coco import CocoSegDataset
from data.loader import build_train_loader
from data.transforms import build_transform
if __name__ == "__main__":
    ds = CocoSegDataset(sys.argv[1], os.path.join(sys.argv[1], "train.json"))
    it = build_train_loader(ds, build_transform("train", crop_size=32), batch_size=2, seed=0, workers=1)
    w = it._workers[0]
    time.sleep(0.3)  # the worker is importing torch: _worker_init has not run yet
    os.kill(w.pid, signal.SIGTERM)
    print(tuple(next(it)["image"].shape), w.is_alive())
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_dataloader_workers_ignore_sigterm_while_they_start(demo, method):
    """Under spawn / forkserver a worker imports for seconds before _worker_init sets SIGTERM aside; a SIGTERM then
    killed it ("DataLoader worker ... killed by signal: Terminated"). Started with SIGTERM blocked, it lives."""
    r = subprocess.run([PY, "-c", _SPAWN_WORKER, demo, method], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "(2, 3, 32, 32) True", r.stdout[-2000:] + r.stderr[-2000:]


def _two_nodes(demo, outs, port, *extra):
    """Two torchrun "nodes" on this machine (one process each, static rendezvous), node n writing to outs[n]:
    node-local --out folders. Returns each launcher's (exit status, output)."""
    procs = [subprocess.Popen(
        [PY, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(n), "--nproc_per_node", "1",
         "--master_addr", "127.0.0.1", "--master_port", str(port), "train.py", "--data-root", demo,
         "--out", str(outs[n]), *TINY, "--batch-size", "1", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}) for n in (0, 1)]
    return [(p.wait(timeout=600), p.stdout.read()) for p in procs]


@pytest.mark.heavy
def test_two_nodes_with_node_local_out_resume_one_state(demo, tmp_path):
    """Node-local --out: each node keeps its own copy of every checkpoint; when rank 0 comes back on a fresh node
    (an empty folder) the ranks agree on the newest checkpoint any of them can read, node 1 sends it through the
    process group, and the run ends bitwise equal to an uninterrupted one. Copies that disagree at one iteration
    are an error naming the hosts, not two replicas."""
    import random
    port = random.Random(os.getpid()).randint(20000, 40000)
    common = ["--ckpt-interval", "2", "--keep-ckpts", "1"]
    ref = _two_nodes(demo, [tmp_path / "ref0", tmp_path / "ref1"], port, *common, "--iters", "4")
    assert [r[0] for r in ref] == [0, 0], ref[0][1][-2000:] + ref[1][1][-2000:]
    a, b = tmp_path / "a", tmp_path / "b"
    r = _two_nodes(demo, [a, b], port + 1, *common, "--iters", "4", "--stop-after", "3")
    # each rank exits 75; torchrun reports a failed worker (exit 1), which without --max-restarts it does not rerun
    assert [x[0] for x in r] == [1, 1] and all("exitcode  : 75" in x[1] for x in r), r[0][1][-2000:]
    assert _load(a / "last.pt")["iter"] == 3 and _load(b / "last.pt")["iter"] == 3  # both nodes hold it
    import shutil
    shutil.rmtree(a)  # rank 0's node is replaced by a fresh one
    r = _two_nodes(demo, [a, b], port + 2, *common, "--iters", "4", "--resume")
    assert [x[0] for x in r] == [0, 0], r[0][1][-2000:] + r[1][1][-2000:]
    assert "resuming iteration 3 from rank 1's" in r[0][1], r[0][1][-2000:]
    _same_state(_load(tmp_path / "ref0" / "last.pt"), _load(a / "last.pt"))
    _same_state(_load(tmp_path / "ref0" / "last.pt"), _load(b / "last.pt"))
    # the fresh node's metrics log is the whole run's (from the checkpoint node 1 sent), not one starting at 3
    steps = [[(r["iter"], r["loss"]) for r in map(json.loads, open(d / "metrics.jsonl")) if "loss" in r]
             for d in (tmp_path / "ref0", a)]
    assert steps[0] == steps[1] and [i for i, _ in steps[1]] == [1, 2, 3, 4], steps
    assert json.load(open(a / "args.json"))["amp"] == _load(a / "last.pt")["args"]["amp"]

    # copies of one iteration that differ: refused, naming both ranks' hosts
    state = _load(b / "last.pt")
    k = next(iter(state["model"]))
    state["model"][k] = state["model"][k] + 1
    torch.save(state, b / "last.pt")
    r = _two_nodes(demo, [a, b], port + 3, *common, "--iters", "6", "--resume")  # both at iteration 4
    assert [x[0] for x in r] == [1, 1] and all("exitcode  : 2" in x[1] for x in r), r[0][1][-2000:]
    assert "the ranks loaded different states" in r[0][1] + r[1][1], r[0][1][-2000:]


@pytest.mark.slow
def test_plain_run_stopped_by_sigterm_and_a_second_job_on_its_out(demo, tmp_path):
    """python train.py under SIGTERM: exits 143 with last.pt saved, within one step plus one write of the signal;
    while it runs, a second job on the same --out exits 2 naming it, in seconds (bitwise exactness after such a
    stop: test_train.py::test_sigterm_saves_and_exits_cleanly)."""
    import socket
    out = tmp_path / "t"
    cmd = [PY, "train.py", "--data-root", demo, "--out", str(out), *TINY, "--iters", "5000", "--ckpt-interval",
           "100000", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, step_s, t_step, t_term = [], [], None, None
    for line in p.stdout:
        lines.append(line)
        if line.startswith("iter "):
            now = time.monotonic()
            if t_step is not None:
                step_s.append(now - t_step)
            t_step = now
        if line.startswith("iter 3/"):
            t0 = time.monotonic()
            second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
            took = time.monotonic() - t0
            assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
            assert f"in use by a live job on {socket.gethostname()} pid {p.pid}" in second.stderr, second.stderr
            assert took < 60, took  # imports included; the lease check itself is immediate
            t_step = None
        if t_term is None and step_s and len(step_s) >= 5:
            t_term = time.monotonic()
            p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    t_exit = time.monotonic() - t_term
    text = "".join(lines)
    assert p.returncode == 143 and "SIGTERM: saved" in text, text[-2000:]
    assert 8 <= _load(out / "last.pt")["iter"] < 5000
    # one step (the slowest seen) plus one write plus interpreter teardown, with room for a shared 2-core machine
    assert t_exit < 2 * max(step_s) + 10, (t_exit, step_s)
    print(f"SIGTERM-to-exit {t_exit:.2f} s; steps {min(step_s):.2f}-{max(step_s):.2f} s; second job {took:.1f} s")
