"""ensemble.py: hard vote against an independent per-pixel majority, ties, row order, missing ids; soft mean."""
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from data.probs import load_probs, save_probs
from data.submission import SubmissionWriter, read_submission
from ensemble import hard_vote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _vote_ref(maps):
    """Independent oracle: Counter per pixel; ties to the earliest member whose vote is among the tied."""
    out = np.zeros(maps[0].shape, np.uint8)
    for y in range(maps[0].shape[0]):
        for x in range(maps[0].shape[1]):
            votes = [int(m[y, x]) for m in maps]
            c = Counter(votes)
            top = max(c.values())
            out[y, x] = next(v for v in votes if c[v] == top)
    return out


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_hard_vote_matches_counter(m):
    rng = np.random.default_rng(m)
    maps = [rng.integers(0, 4, (24, 20)).astype(np.uint8) for _ in range(m)]  # few classes: many ties
    assert np.array_equal(hard_vote(maps, 11), _vote_ref(maps))


def test_hard_vote_tie_goes_to_first():
    a, b = np.full((2, 2), 3, np.uint8), np.full((2, 2), 5, np.uint8)
    assert (hard_vote([a, b], 11) == 3).all() and (hard_vote([b, a], 11) == 5).all()


def _dataset(tmp_path, n=3):
    import cv2
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    images = []
    for i in range(n):
        cv2.imwrite(str(root / "imgs" / f"{i}.jpg"), np.full((40, 48, 3), 100, np.uint8))
        images.append({"id": 100 + 3 * i, "file_name": f"imgs/{i}.jpg", "width": 48, "height": 40})
    (root / "test.json").write_text(json.dumps({"images": images, "categories": [
        {"id": 1, "name": "Paper"}]}))
    return root, [im["file_name"] for im in images]


def _csv(path, ids, maps):
    w = SubmissionWriter(str(path))
    for i in ids:
        w.write(i, maps[i])
    w.close()


def test_hard_cli_row_order_and_missing(tmp_path):
    root, ids = _dataset(tmp_path)
    rng = np.random.default_rng(0)
    members = [{i: rng.integers(0, 11, (256, 256)).astype(np.uint8) for i in ids} for _ in range(3)]
    _csv(tmp_path / "a.csv", ids, members[0])
    _csv(tmp_path / "b.csv", ids[::-1], members[1])  # different row order must not matter
    _csv(tmp_path / "c.csv", [ids[1], ids[0], ids[2]], members[2])
    out = tmp_path / "vote.csv"
    r = subprocess.run([sys.executable, "ensemble.py", "hard", "--csv", str(tmp_path / "a.csv"),
                        str(tmp_path / "b.csv"), str(tmp_path / "c.csv"), "--data-root", str(root),
                        "--json", "test.json", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = read_submission(str(out))
    assert list(got) == ids
    for i in ids:
        assert np.array_equal(got[i], _vote_ref([m[i] for m in members]))
    _csv(tmp_path / "d.csv", ids[:2], members[0])
    r = subprocess.run([sys.executable, "ensemble.py", "hard", "--csv", str(tmp_path / "a.csv"),
                        str(tmp_path / "d.csv"), "--data-root", str(root), "--json", "test.json",
                        "--out", str(tmp_path / "x.csv")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and ids[2] in r.stderr and not (tmp_path / "x.csv").exists()


def test_soft_equals_weighted_mean_argmax(tmp_path):
    root, ids = _dataset(tmp_path)
    rng = np.random.default_rng(1)
    dirs, probs = [], []
    for k in range(3):
        d = tmp_path / f"p{k}"
        per = {}
        for i in ids:
            p = rng.random((11, 256, 256)).astype(np.float32)
            p /= p.sum(0, keepdims=True)
            save_probs(str(d), i, p, (40, 48), dtype="float16")
            per[i] = load_probs(str(d), i)[0]  # what was stored (float16-rounded)
        dirs.append(str(d))
        probs.append(per)
    w = [2.0, 1.0, 0.5]
    out = tmp_path / "soft.csv"
    r = subprocess.run([sys.executable, "ensemble.py", "soft", "--probs", *dirs, "--weights", *map(str, w),
                        "--data-root", str(root), "--json", "test.json", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = read_submission(str(out))
    for i in ids:
        ref = (sum(wk * probs[k][i] for k, wk in enumerate(w)) / sum(w)).argmax(0)
        assert np.array_equal(got[i], ref)


def test_probs_uint8_roundtrip(tmp_path):
    p = np.random.default_rng(2).random((11, 8, 8)).astype(np.float32)
    save_probs(str(tmp_path), "a/b.jpg", p, (8, 8), dtype="uint8")
    q, size = load_probs(str(tmp_path), "a/b.jpg")
    assert size == (8, 8) and np.abs(q - p).max() <= 0.5 / 255 + 1e-6
