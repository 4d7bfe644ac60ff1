"""train.py: exact resume, DDP equivalence, NaN stop, atomic checkpoints, layer-decay wiring, make train's path."""
import json
import os
import subprocess
import time
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
TINY = ["--model", "upernet_convnext_demo", "--crop-size", "64", "--batch-size", "2", "--workers", "0",
        "--warmup-iters", "1", "--lr", "1e-3", "--eval-interval", "1000", "--log-interval", "1", "--no-progress"]


@pytest.fixture(scope="module")
def demo(demo_data):
    return demo_data(train=8, val=4, test=4, extra=4, size=64, seed=3)


def _train(demo, out, *extra, check=True, launcher=None):
    cmd = (launcher or [PY]) + ["train.py", "--data-root", demo, "--out", str(out), *TINY, *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_resume_is_bitwise_exact(demo, tmp_path):
    _train(demo, tmp_path / "full", "--iters", "4", "--ckpt-interval", "2")
    r = _train(demo, tmp_path / "half", "--iters", "4", "--ckpt-interval", "2", "--stop-after", "2", check=False)
    assert r.returncode == 75, r.stdout[-3000:] + r.stderr[-3000:]  # EX_TEMPFAIL: a planned pause, not the end
    assert _weights(tmp_path / "half" / "last.pt").keys()
    r = _train(demo, tmp_path / "half", "--iters", "4", "--ckpt-interval", "2", "--resume")
    assert "resumed" in r.stdout and "changed settings" not in r.stdout  # --stop-after is not a training setting
    _same(_weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "half" / "last.pt"))
    # and a different run really differs (the comparison can fail)
    _train(demo, tmp_path / "other", "--iters", "4", "--ckpt-interval", "2", "--seed", "1")
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "other" / "last.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.heavy  # make test keeps a kill-and-restart: the chaos trial in test_preempt.py
def test_resume_after_sigkill_mid_run(demo, tmp_path):
    """Kill -9 while training; the periodic checkpoint resumes to the same weights as an uninterrupted run."""
    _train(demo, tmp_path / "full", "--iters", "6", "--ckpt-interval", "2")
    cmd = [PY, "train.py", "--data-root", demo, "--out", str(tmp_path / "k"), *TINY, "--iters", "6",
           "--ckpt-interval", "2"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in p.stdout:  # kill after iteration 3 was logged, once the periodic checkpoint is durable
        if line.startswith("iter 3/"):
            # periodic checkpoints are written in the background: wait for last.pt, then kill mid-run
            deadline = time.time() + 60
            while not os.path.exists(tmp_path / "k" / "last.pt") and time.time() < deadline:
                time.sleep(0.05)
            p.kill()
            break
    p.wait()
    assert p.returncode != 0 and os.path.exists(tmp_path / "k" / "last.pt")
    assert not [f for f in os.listdir(tmp_path / "k") if f.startswith(".tmp_")]
    _train(demo, tmp_path / "k", "--iters", "6", "--ckpt-interval", "2", "--resume")
    _same(_weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "k" / "last.pt"))


@pytest.mark.slow
def test_ddp_two_processes_equal_one(demo, tmp_path):
    """2 gloo ranks × batch 1 compute the gradients of 1 process × batch 2 (SyncBN in the heads, same global batches).

    Compared through AdamW's first moment, which is a fixed multiple of the gradients: weights themselves are not a
    fair target, as Adam turns the float noise on zero-gradient parameters (biases before a BN) into whole steps.
    """
    common = ["--iters", "2", "--ckpt-interval", "2", "--drop-path", "0", "--dropout", "0", "--val-json", ""]
    _train(demo, tmp_path / "one", *common, "--batch-size", "2")
    tr = [os.path.join(os.path.dirname(PY), "torchrun"), "--standalone", "--nproc_per_node", "2"]
    _train(demo, tmp_path / "two", *common, "--batch-size", "1", launcher=tr)
    _assert_same_gradients(tmp_path / "one" / "last.pt", tmp_path / "two" / "last.pt")


def _assert_same_gradients(path_a, path_b):
    a = torch.load(path_a, weights_only=True)
    b = torch.load(path_b, weights_only=True)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 50
    scale = max(s["exp_avg"].norm().item() for s in sa.values())
    checked = 0
    for k in sa:
        ga, gb = sa[k]["exp_avg"], sb[k]["exp_avg"]
        if ga.norm() < 1e-6 * scale:  # mathematically zero gradient: only float noise to compare
            continue
        assert (ga - gb).norm() <= 1e-3 * ga.norm(), f"param {k}: gradients differ"
        checked += 1
    assert checked > 50
    for k, v in a["model"].items():  # BN running statistics saw the same global batches
        if "running" in k:
            torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.heavy
def test_ddp_two_nodes_equal_one(demo, tmp_path):
    """torchrun --nnodes 2 (one process per node, both on this machine): LOCAL_RANK is 0 on both, so data sharding,
    seeding and writing must follow the global RANK. Same gradients as 1 process × batch 2; node 1 has its own
    --out here (node-local folders), where it keeps a copy of rank 0's checkpoints and nothing else."""
    import socket
    common = ["--iters", "2", "--ckpt-interval", "2", "--drop-path", "0", "--dropout", "0", "--val-json", ""]
    _train(demo, tmp_path / "one", *common, "--batch-size", "2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for node in (0, 1):
        cmd = [os.path.join(os.path.dirname(PY), "torchrun"), "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
               "train.py", "--data-root", demo, "--out", str(tmp_path / f"node{node}"), *TINY, *common,
               "--batch-size", "1"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-2000:] + outs[1][-2000:]
    _assert_same_gradients(tmp_path / "one" / "last.pt", tmp_path / "node0" / "last.pt")
    assert sorted(os.listdir(tmp_path / "node1")) == ["best.pt", "last.pt"]  # its copies of rank 0's writes
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("node0", "node1"))
    _same(a["model"], b["model"])
    assert a["iter"] == b["iter"] == 2


def test_nan_loss_stops_and_keeps_last_good(demo, tmp_path, monkeypatch):
    import torch.nn.functional as F

    import train
    calls = {"n": 0}
    real = F.cross_entropy

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] > 6 else loss  # 2 CE calls per iteration: NaN at iteration 3

    monkeypatch.setattr(F, "cross_entropy", poisoned)  # what the loss (models.losses) calls
    args = train.get_args_parser().parse_args(["--data-root", demo, "--out", str(tmp_path / "n"), *TINY,
                                               "--iters", "6", "--ckpt-interval", "2", "--val-json", ""])
    with pytest.raises(SystemExit) as e:
        train.main(args)
    assert e.value.code == 3
    state = torch.load(tmp_path / "n" / "last.pt", map_location="cpu", weights_only=False)
    assert state["iter"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values()
                                      if v.is_floating_point())


def test_atomic_save_keeps_previous_on_failure(tmp_path):
    from engine.checkpoint import atomic_save

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    p = tmp_path / "last.pt"
    atomic_save({"x": torch.ones(3)}, str(p))
    with pytest.raises(RuntimeError):
        atomic_save({"x": torch.zeros(3), "bad": Boom()}, str(p))
    assert torch.equal(torch.load(p, weights_only=True)["x"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pt"]


def test_schedule_warmup_and_poly():
    from engine.schedule import lr_factor
    assert lr_factor(0, 100, 10) == pytest.approx(1e-6)  # mmcv linear warmup from warmup_ratio
    assert lr_factor(5, 100, 10) == pytest.approx((1 - 0.05) * (1 - 0.5 * (1 - 1e-6)))
    assert lr_factor(10, 100, 10) == pytest.approx(0.9)
    assert lr_factor(100, 100, 10) == 0.0
    assert lr_factor(50, 100, 0, "cosine") == pytest.approx(0.5)


@pytest.mark.slow
def test_make_train_path(tmp_path):
    """make train as a user runs it, at a tiny size: demo data generation, training, final mIoU line."""
    r = subprocess.run(["make", "-s", "train", f"DEMO_ROOT={tmp_path}/demo", f"EXP={tmp_path}/run", "ITERS=2",
                        "DEMO_GEN_ARGS=--train 6 --val 3 --test 3 --extra 3 --size 64",
                        "ARGS=--crop-size 64 --batch-size 2 --workers 0 --no-progress"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "final val mIoU" in r.stdout
    assert os.path.exists(tmp_path / "run" / "best.pt") and os.path.exists(tmp_path / "run" / "curves.png")
    assert os.path.exists(tmp_path / "run" / "args.json") and os.path.exists(tmp_path / "run" / "metrics.jsonl")


def test_init_mismatch_names_the_problem(demo, tmp_path, capsys):
    import models
    import train
    bad = tmp_path / "bad.pt"
    torch.save({"model": models.build_model("upernet_convnext_demo", 5).state_dict(),
                "model_name": "upernet_convnext_demo", "num_classes": 5}, bad)
    args = train.get_args_parser().parse_args(["--data-root", demo, "--out", str(tmp_path / "o"), *TINY,
                                               "--iters", "1", "--init", str(bad)])
    with pytest.raises(SystemExit) as e:
        train.main(args)
    msg = str(e.value.code)
    assert "bad.pt" in msg and "conv_seg" in msg and "--num-classes" in msg


def test_batch_of_one_is_a_clear_error(demo, tmp_path):
    """One image per step in one process would die inside the PPM's BatchNorm with torch's cryptic message."""
    import train
    args = train.get_args_parser().parse_args(["--data-root", demo, "--out", str(tmp_path / "o"), *TINY,
                                               "--iters", "1", "--batch-size", "1"])
    with pytest.raises(SystemExit) as e:
        train.main(args)
    assert "--batch-size 1" in str(e.value.code) and "torchrun" in str(e.value.code)
    assert not os.path.exists(tmp_path / "o" / "last.pt")


def test_previous_run_is_kept_unless_resumed_or_overwritten(demo, tmp_path, capsys):
    """A new run into a used --out must not truncate its log and prune its checkpoints: refused, files untouched;
    --overwrite replaces the run (stale iter_N.pt gone); a bare --resume with nothing saved yet starts the run."""
    import train
    out = tmp_path / "run"
    out.mkdir()
    for f in ("last.pt", "iter_9000.pt", "metrics.jsonl"):
        (out / f).write_bytes(b"old")
    argv = ["--data-root", demo, "--out", str(out), *TINY, "--iters", "1", "--val-json", ""]
    with pytest.raises(SystemExit) as e:
        train.main(train.get_args_parser().parse_args(argv))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert all((out / f).read_bytes() == b"old" for f in ("last.pt", "iter_9000.pt", "metrics.jsonl"))

    train.main(train.get_args_parser().parse_args(argv + ["--overwrite", "--ckpt-interval", "1"]))
    assert not (out / "iter_9000.pt").exists()
    assert torch.load(out / "last.pt", weights_only=True)["iter"] == 1

    fresh = tmp_path / "fresh"  # pre-emptible job: the same command for the first start and every restart
    train.main(train.get_args_parser().parse_args(
        ["--data-root", demo, "--out", str(fresh), *TINY, "--iters", "1", "--val-json", "", "--resume"]))
    assert torch.load(fresh / "last.pt", weights_only=True)["iter"] == 1


def test_fold_keeps_extra_sources_and_val_overlap_is_reported(demo, tmp_path):
    import train
    folds = str(tmp_path / "folds")
    a = train.resolve_args(train.get_args_parser().parse_args(
        ["--data-root", demo, "--fold", "1", "--folds-dir", folds, "--train-json", "extra.json"]))
    assert a.train_json == [os.path.join(folds, "train_fold1.json"), os.path.join(demo, "extra.json")]
    assert a.val_json == os.path.join(folds, "val_fold1.json")
    a = train.resolve_args(train.get_args_parser().parse_args(
        ["--data-root", demo, "--fold", "1", "--folds-dir", folds, "--val-json", ""]))
    assert a.train_json == [os.path.join(folds, "train_fold1.json")] and a.val_json == ""
    a = train.resolve_args(train.get_args_parser().parse_args(["--data-root", demo]))
    assert a.train_json == [os.path.join(demo, "train.json")] and a.val_json == os.path.join(demo, "val.json")
    # validation images that are also training images: said, with a count (the run itself goes on)
    r = _train(demo, tmp_path / "leak", "--iters", "1", "--train-json", "train.json", "val.json")
    assert "4 of 4 validation images are also training images" in r.stdout
    r = _train(demo, tmp_path / "clean", "--iters", "1")
    assert "validation images are also training images" not in r.stdout


def test_summary_table(tmp_path, capsys):
    from engine.summary import main as summary
    for k, vals in enumerate([[0.5, 0.7, 0.6], [0.8]]):
        d = tmp_path / f"fold{k}"
        d.mkdir()
        (d / "metrics.jsonl").write_text("".join(f'{{"iter": {i}, "miou": {v}}}\n{{"iter": {i}, "loss": 1}}\n'
                                                 for i, v in enumerate(vals)))
    summary(["--label", "fold", "--mean", str(tmp_path / "fold0"), str(tmp_path / "fold1")])
    out = capsys.readouterr().out
    assert "0.7000 |        0.6000" in out and "0.7500" in out  # best, last; mean of bests
    with pytest.raises(SystemExit):
        summary([str(tmp_path / "missing")])
    # each run against its control: best 0.7 vs 0.8 → -0.1, no gain; "-" = no control
    summary(["--label", "round", str(tmp_path / "fold0"), str(tmp_path / "fold1"), "--controls", "-",
             str(tmp_path / "fold0"), "--names", "0", "1"])
    out = capsys.readouterr().out
    assert "control best" in out and "0.7000 |  +0.1000 |" in out and "(gain over" in out
    assert f"best val mIoU: 0.8000 in {tmp_path / 'fold1'}" in out
    summary(["--label", "round", str(tmp_path / "fold0"), str(tmp_path / "fold0"), "--controls", "-",
             str(tmp_path / "fold1")])
    assert "0.8000 |  -0.1000 |" in capsys.readouterr().out.replace("(no gain", "")
    with pytest.raises(SystemExit):  # one control per run
        summary([str(tmp_path / "fold0"), str(tmp_path / "fold1"), "--controls", "-"])
    # make semi's last line: final (not best) mIoU, 0.6 vs 0.8; a losing arm first names the control's checkpoint
    summary(["--versus", "semi-supervised", str(tmp_path / "fold0"), str(tmp_path / "fold1")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "semi-supervised vs control: 0.6000 vs 0.8000 (gain -0.2000)"
    assert len(lines) == 2 and str(tmp_path / "fold1" / "best.pt") in lines[0]
    summary(["--versus", "semi-supervised", str(tmp_path / "fold1"), str(tmp_path / "fold0")])
    assert capsys.readouterr().out.splitlines() == ["semi-supervised vs control: 0.8000 vs 0.6000 (gain +0.2000)"]


@pytest.mark.heavy
def test_make_pseudo_with_control(tmp_path):
    """make pseudo ROUNDS=1 PSEUDO_INIT=teacher: round 0, teacher TTA labels, the student from its teacher, its control
    (same init, labels only), and the table setting round 1 against that control."""
    r = subprocess.run(["make", "-s", "pseudo", "ROUNDS=1", "PSEUDO_INIT=teacher", f"DEMO_ROOT={tmp_path}/demo",
                        f"EXP={tmp_path}/pl", "ITERS=2",
                        "DEMO_GEN_ARGS=--train 6 --val 3 --test 2 --extra 2 --size 64",
                        "ARGS=--crop-size 64 --batch-size 2 --workers 0 --no-progress"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ctl = tmp_path / "pl" / "round1_control"
    assert json.load(open(ctl / "args.json"))["init"] == str(tmp_path / "pl" / "round0" / "best.pt")
    assert json.load(open(ctl / "args.json"))["train_json"] == [os.path.join(f"{tmp_path}/demo", "train.json")]
    rows = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("1 |")]
    assert len(rows) == 1 and "gain" in rows[0] and str(ctl) in rows[0], r.stdout[-1500:]
    assert "best val mIoU: " in r.stdout
    bad = subprocess.run(["make", "-s", "pseudo", "PSEUDO_INIT=scratch", f"DEMO_ROOT={tmp_path}/demo",
                          f"EXP={tmp_path}/pl"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "PSEUDO_INIT must be teacher or none, got 'scratch'" in bad.stdout


@pytest.mark.heavy
def test_make_cv_path(tmp_path):
    """make cv: stratified folds of train_all.json, one run per fold, the per-fold and mean table."""
    r = subprocess.run(["make", "-s", "cv", "FOLDS=2", f"DEMO_ROOT={tmp_path}/demo", f"EXP={tmp_path}/cv", "ITERS=2",
                        "DEMO_GEN_ARGS=--train 8 --val 4 --test 3 --extra 3 --size 64",
                        "ARGS=--crop-size 64 --batch-size 2 --workers 0 --no-progress"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.strip().startswith(("0 |", "1 |", "mean |"))]
    assert len(rows) == 3, r.stdout[-1500:]
    assert (tmp_path / "cv" / "folds" / "val_fold1.json").exists()


@pytest.mark.slow
@pytest.mark.heavy  # make test keeps SIGTERM: test_preempt.py's bitwise stop-and-resume and plain-run tests
def test_sigterm_saves_and_exits_cleanly(demo, tmp_path):
    """Pre-emption: SIGTERM finishes the step, writes last.pt, exits 143 (a scheduler must see the run unfinished);
    --resume then completes the same run."""
    import signal
    _train(demo, tmp_path / "full", "--iters", "5", "--ckpt-interval", "100")
    cmd = [PY, "train.py", "--data-root", demo, "--out", str(tmp_path / "t"), *TINY, "--iters", "5",
           "--ckpt-interval", "100"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = []
    for line in p.stdout:
        out.append(line)
        if line.startswith("iter 2/"):
            p.send_signal(signal.SIGTERM)
    p.wait()
    assert p.returncode == 143, "".join(out)[-2000:]
    assert any("SIGTERM: saved" in ln for ln in out)
    state = torch.load(tmp_path / "t" / "last.pt", map_location="cpu", weights_only=True)
    assert 2 <= state["iter"] < 5
    _train(demo, tmp_path / "t", "--iters", "5", "--ckpt-interval", "100", "--resume")
    _same(_weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "t" / "last.pt"))


def test_recipe_defaults_and_short_run_warmup():
    import train
    p = train.get_args_parser()
    a = train.resolve_args(p.parse_args(["--model", "upernet_convnext_tiny", "--iters", "1000"]))
    assert (a.lr, a.weight_decay, a.layer_decay) == (1e-4, 0.05, 0.9) and a.warmup_iters == 100  # recipe's 1500 cut
    a = train.resolve_args(p.parse_args(["--model", "upernet_convnext_tiny", "--iters", "1000",
                                         "--warmup-iters", "800"]))
    assert a.warmup_iters == 800  # an explicit flag is never overridden
    a = train.resolve_args(p.parse_args(["--model", "upernet_swin_tiny"]))
    assert (a.lr, a.weight_decay, a.warmup_iters) == (6e-5, 0.01, 1500)


def test_batch_with_every_pixel_ignored_is_not_a_nan_loss(demo, tmp_path):
    """A batch whose crops are all ignore (255) — pseudo-labels the teacher was unsure about everywhere, padding —
    has no pixel to average over: F.cross_entropy's mean gave NaN and the run stopped with exit 3 ('non-finite
    loss'). mmseg's loss is 0 there; training must go on."""
    import json
    import numpy as np
    from data.io import write_label_png
    d = json.load(open(os.path.join(demo, "train.json")))
    d.pop("annotations")
    for im in d["images"]:
        im["mask_file"] = os.path.splitext(im["file_name"])[0] + ".png"
        write_label_png(str(tmp_path / im["mask_file"]), np.full((im["height"], im["width"]), 255, np.uint8))
    json.dump(d, open(tmp_path / "ignored.json", "w"))
    r = _train(demo, tmp_path / "run", "--train-json", str(tmp_path / "ignored.json"), "--iters", "2",
               "--val-json", "", check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.heavy
def test_resume_with_other_batch_or_process_count(demo, tmp_path):
    """Resuming with another --batch-size (or process count, or --grad-accum) re-enters the data stream at the
    samples actually consumed (was: iter × the new global batch, skipping data), and a checkpoint written by N
    torchrun processes resumes in one (was: TypeError in set_rng_state on the per-rank list)."""
    out = tmp_path / "r"
    _train(demo, out, "--iters", "2", "--ckpt-interval", "2", "--val-json", "")
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert state["samples_seen"] == 4
    state["rng"] = state["rng"] * 2  # as two ranks save it
    torch.save(state, out / "last.pt")
    r = _train(demo, out, "--iters", "4", "--ckpt-interval", "2", "--val-json", "", "--batch-size", "4", "--resume",
               check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "reseeded" in r.stdout
    note = next(ln for ln in r.stdout.splitlines() if "changed settings" in ln)  # said, not silently different
    assert "batch_size 2 → 4" in note and "iters 2 → 4" in note and "ckpt_interval" not in note
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert state["iter"] == 4 and state["samples_seen"] == 4 + 2 * 4
    r = _train(demo, out, "--iters", "6", "--val-json", "", "--num-classes", "12", "--resume", check=False)
    assert r.returncode != 0 and "classes" in r.stderr and "Traceback" not in r.stderr


def test_best_pt_exists_without_validation(demo, tmp_path):
    """With --val-json '' (e.g. the final run on train_all.json) best.pt, which make submit / pseudo / ensemble
    read, was never written: it is now the final model."""
    out = tmp_path / "r"
    _train(demo, out, "--iters", "2", "--ckpt-interval", "2", "--val-json", "")
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    _same(best["model"], _weights(out / "last.pt"))
    assert best["iter"] == 2
