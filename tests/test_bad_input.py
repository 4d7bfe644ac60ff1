"""Bad input in every script: one line naming the file and the problem, exit 2; --skip-invalid skips, counts and
lists, and the run goes on. Process-count edge cases: fewer validation images than ranks, output folders created
under torchrun, progress counted once, no warnings from our code in a clean 2-process run.

Corrupt images are met inside DataLoader workers (--workers 2), where an error must still be one line, not a
worker's traceback.
"""
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
TORCHRUN = [os.path.join(os.path.dirname(PY), "torchrun"), "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(cmd, timeout=300):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=timeout)


def _truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])  # a JPEG cut short: the header still probes, the decode fails


def _one_error_line(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_data):
    import models
    tmp = tmp_path_factory.mktemp("bad")
    demo = Path(demo_data(train=4, val=3, test=5, extra=3, size=64, seed=7, fresh=True))
    torch.manual_seed(0)
    model = models.build_model("upernet_convnext_demo", 11).eval()
    ck = tmp / "model.pt"
    torch.save({"model": model.state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    test = json.load(open(demo / "test.json"))
    # the clean images' rows come from a run on a JSON without the image that is corrupted below
    bad = test["images"][2]["file_name"]
    clean = dict(test, images=[im for im in test["images"] if im["file_name"] != bad])
    (demo / "test_clean.json").write_text(json.dumps(clean))
    ref = tmp / "ref.csv"
    r = _run([PY, "infer.py", "--ckpt", str(ck), "--data-root", str(demo), "--json", "test_clean.json",
              "--out", str(ref), "--workers", "0"])
    assert r.returncode == 0, r.stderr[-2000:]
    _truncate(demo / bad)
    return str(demo), str(ck), bad, ref


def _rows(path):
    from data.submission import read_submission
    return read_submission(str(path))


def test_infer_corrupt_image_in_worker_is_one_line_exit_2(setup, tmp_path):
    demo, ck, bad, _ = setup
    out = tmp_path / "sub.csv"
    r = _run([PY, "infer.py", "--ckpt", ck, "--data-root", demo, "--json", "test.json", "--out", str(out),
              "--workers", "2"])
    _one_error_line(r, bad, "corrupt image")
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.startswith(".tmp_")]


@pytest.mark.slow
def test_infer_skip_invalid_complete_submission_one_and_two_processes(setup, tmp_path):
    """The skipped image's row is all background, every other row is what a run without it gives, and 2 ranks
    writing into a folder that does not exist yet give the same bytes; the bar counts 5 images, not more."""
    demo, ck, bad, ref = setup
    common = ["infer.py", "--ckpt", ck, "--data-root", demo, "--json", "test.json", "--workers", "2",
              "--skip-invalid"]
    one, two = tmp_path / "one.csv", tmp_path / "new" / "dir" / "two.csv"
    r1 = _run([PY, *common, "--out", str(one)])
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert "skipped 1 invalid input" in r1.stderr and bad in r1.stderr and "background" in r1.stderr
    rows, expect = _rows(one), _rows(ref)
    from data.submission import validate
    assert validate(str(one), os.path.join(demo, "test.json")) == 5
    assert not rows[bad].any()
    assert set(rows) - {bad} == set(expect)
    for iid, m in expect.items():
        assert np.array_equal(rows[iid], m), iid
    r2 = _run([*TORCHRUN, *common, "--out", str(two)])
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert one.read_bytes() == two.read_bytes()
    counts = [int(m) for m in re.findall(r"\| *(\d+)/5 ", r2.stdout + r2.stderr)]
    assert counts and max(counts) == 5, (r2.stdout + r2.stderr)[-1500:]
    assert r2.stderr.count("corrupt image") == 1  # listed once, by rank 0


@pytest.mark.slow
def test_pseudo_label_corrupt_image(setup, tmp_path):
    demo, ck, bad, _ = setup
    common = ["pseudo_label.py", "--ckpt", ck, "--data-root", demo, "--json", "test.json", "--workers", "2"]
    r = _run([PY, *common, "--out", str(tmp_path / "a")])
    _one_error_line(r, bad, "corrupt image")
    out = tmp_path / "b" / "c"  # created by the ranks
    # make semi's selection: the alignment pass reads every image too, and the corrupt one is still reported once
    r = _run([*TORCHRUN, *common, "--out", str(out), "--skip-invalid", "--align", "train.json",
              "--threshold-mode", "hybrid"])
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.load(open(out / "pseudo.json"))
    names = [im["file_name"] for im in doc["images"]]
    assert len(names) == 4 and bad not in names and doc["info"]["align"]["weights"]
    assert "no pseudo-label" in r.stderr and r.stderr.count("corrupt image") == 1


def test_ensemble_corrupt_probabilities_file(setup, tmp_path):
    demo, ck, bad, _ = setup
    from data.probs import probs_path, save_probs
    test = json.load(open(os.path.join(demo, "test.json")))
    for folder in ("p1", "p2"):
        for im in test["images"]:
            save_probs(str(tmp_path / folder), im["file_name"], np.full((11, 8, 8), 1 / 11, np.float32),
                       (im["height"], im["width"]))
    victim = probs_path(str(tmp_path / "p2"), test["images"][3]["file_name"])
    with open(victim, "r+b") as f:
        f.truncate(40)
    r = _run([PY, "ensemble.py", "soft", "--probs", str(tmp_path / "p1"), str(tmp_path / "p2"), "--data-root", demo,
              "--json", "test.json", "--out", str(tmp_path / "e.csv")])
    _one_error_line(r, victim, "not a readable probabilities file")
    assert not (tmp_path / "e.csv").exists()


@pytest.mark.slow
def test_train_bad_inputs_exit_2_with_one_line(setup, tmp_path):
    demo, ck, bad, _ = setup
    tiny = ["train.py", "--model", "upernet_convnext_demo", "--data-root", demo, "--iters", "2", "--batch-size", "2",
            "--crop-size", "32", "--no-progress", "--val-json", ""]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cases = [  # independent runs that each stop before training: side by side, two at a time
        ([PY, *tiny, "--out", str(tmp_path / "a"), "--init", str(tmp_path / "missing.pt"), "--workers", "0"],
         "missing.pt", "no such file"),
        ([PY, *tiny, "--out", str(tmp_path / "b"), "--init", str(tmp_path / "junk.pt"), "--workers", "0"],
         "junk.pt", "cannot be read"),
        ([PY, *tiny, "--out", str(tmp_path / "c"), "--train-json", "test.json", "--workers", "0"],
         "test.json", "needs annotations"),
        ([PY, *tiny[:-2], "--val-json", "test.json", "--out", str(tmp_path / "d"), "--workers", "0"],
         "test.json", "needs annotations"),
    ]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda c: _run(c[0]), cases))
    for r, (_, name, what) in zip(runs, cases):
        _one_error_line(r, name, what)
    # a corrupt training image met by a DataLoader worker
    tj = json.load(open(os.path.join(demo, "train.json")))
    victim = tj["images"][1]["file_name"]
    data = open(os.path.join(demo, victim), "rb").read()
    try:
        _truncate(os.path.join(demo, victim))
        r = _run([PY, *tiny, "--out", str(tmp_path / "e"), "--workers", "2"])
        _one_error_line(r, victim, "corrupt image")
    finally:
        open(os.path.join(demo, victim), "wb").write(data)


@pytest.mark.slow
def test_two_processes_fewer_val_images_no_hang_no_warnings(setup, tmp_path):
    """One validation image for two ranks: rank 1, with no image, must still join DDP's buffer broadcast (or both hang);
    and a clean run prints no warning (the CPU SyncBN's FutureWarning, DDP's grad-stride warning) on any rank."""
    demo, ck, bad, _ = setup
    val = json.load(open(os.path.join(demo, "val.json")))
    keep = {val["images"][0]["id"]}
    val1 = dict(val, images=val["images"][:1], annotations=[a for a in val["annotations"] if a["image_id"] in keep])
    (tmp_path / "val1.json").write_text(json.dumps(val1))
    r = _run([*TORCHRUN, "train.py", "--model", "upernet_convnext_demo", "--data-root", demo, "--out",
              str(tmp_path / "run"), "--val-json", str(tmp_path / "val1.json"), "--iters", "4", "--batch-size", "2",
              "--crop-size", "64", "--workers", "2", "--eval-interval", "2", "--grad-accum", "2", "--no-progress"],
             timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("[val @") == 2
    # torchrun's own OMP_NUM_THREADS notice is not ours; anything else that says warning is
    ours = [ln for ln in r.stderr.splitlines() if re.search(r"warn", ln, re.I) and "torch/distributed/run.py" not in ln]
    assert not ours, "\n".join(ours)
