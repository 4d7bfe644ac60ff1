"""Submission CSV: parse-back equals nearest-resized labels, order, validator errors name the problem."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data.submission import (HEADER, SubmissionError, SubmissionWriter, read_submission, to_submission_map,
                             validate)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _json(tmp_path, ids):
    p = tmp_path / "test.json"
    p.write_text(json.dumps({"images": [{"id": 7 * i + 3, "file_name": f, "width": 512, "height": 512}
                                        for i, f in enumerate(ids)], "categories": []}))
    return str(p)


def test_roundtrip_nearest_and_order(tmp_path):
    rng = np.random.default_rng(0)
    ids = ["batch_03/0002.jpg", "batch_01_vt/0001.jpg", "batch_02_vt/0100.jpg"]
    maps = [rng.integers(0, 11, (512, 512)).astype(np.uint8), rng.integers(0, 11, (300, 417)).astype(np.uint8),
            rng.integers(0, 11, (256, 256)).astype(np.uint8)]
    out = tmp_path / "sub.csv"
    w = SubmissionWriter(str(out))
    for i, m in zip(ids, maps):
        w.write(i, m)
    assert not out.exists()  # nothing visible until close
    w.close()
    assert validate(str(out), _json(tmp_path, ids)) == 3
    back = read_submission(str(out))
    assert list(back) == ids
    for i, m in zip(ids, maps):
        # independent nearest: source index floor(dst * in / out), OpenCV INTER_NEAREST's rule
        ys = np.floor(np.arange(256) * m.shape[0] / 256).astype(int)
        xs = np.floor(np.arange(256) * m.shape[1] / 256).astype(int)
        assert np.array_equal(back[i], m[ys][:, xs])
        assert set(np.unique(back[i])) <= set(np.unique(m))  # nearest never invents classes
    assert open(out).readline().strip() == HEADER


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("case,needle", [
    ("header", "header"), ("count", "65535 values"), ("range", "out of range"), ("nonint", "non-integer"),
    ("order", "expected 'b.jpg'"), ("missing", "first missing"), ("extra", "extra row"),
])
def test_validator_errors(tmp_path, case, needle):
    row = " ".join(["1"] * 65536)
    js = _json(tmp_path, ["a.jpg", "b.jpg"])
    lines = {"header": ["image_id,Prediction", f"a.jpg,{row}", f"b.jpg,{row}"],
             "count": [HEADER, f"a.jpg,{' '.join(['1'] * 65535)}", f"b.jpg,{row}"],
             "range": [HEADER, f"a.jpg,{row[:-1]}11", f"b.jpg,{row}"],
             "nonint": [HEADER, f"a.jpg,{row[:-1]}x", f"b.jpg,{row}"],
             "order": [HEADER, f"a.jpg,{row}", f"c.jpg,{row}"],
             "missing": [HEADER, f"a.jpg,{row}"],
             "extra": [HEADER, f"a.jpg,{row}", f"b.jpg,{row}", f"c.jpg,{row}"]}[case]
    csv = _write(tmp_path / "s.csv", lines)
    with pytest.raises(SubmissionError, match=needle):
        validate(csv, js)
    r = subprocess.run([sys.executable, "-m", "data.submission", csv, "--json", js], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and needle.split()[0] in r.stderr


def test_to_submission_map_matches_cv2():
    m = np.random.default_rng(1).integers(0, 11, (512, 384)).astype(np.uint8)
    assert np.array_equal(to_submission_map(m), cv2.resize(m, (256, 256), interpolation=cv2.INTER_NEAREST))
