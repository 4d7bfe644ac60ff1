"""bench/pseudo_quality.py and the demo generator's hidden labels: the ground truth of the unlabelled images that
pseudo-labels are measured against."""
import filecmp
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))


def test_hidden_labels_change_nothing_else(tmp_path):
    from data.coco import CocoSegDataset
    from data.demo import make_demo
    a, b = tmp_path / "a", tmp_path / "b"
    make_demo(str(a), train=3, val=2, test=2, extra=3, size=48, seed=5)
    make_demo(str(b), train=3, val=2, test=2, extra=3, size=48, seed=5, hidden_labels=True)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    extra = sorted(os.path.relpath(os.path.join(d, f), b) for d, _, fs in os.walk(b) for f in fs)
    assert sorted(set(extra) - set(files)) == ["extra_gt.json", "test_gt.json"]
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors, mismatch
    for split in ("extra", "test"):
        gt = json.load(open(b / f"{split}_gt.json"))
        assert gt["images"] == json.load(open(a / f"{split}.json"))["images"] and gt["annotations"]
        ds = CocoSegDataset(str(b), f"{split}_gt.json")
        assert all(ds.load_mask(i).max() > 0 for i in range(len(ds)))  # objects, not an empty canvas


class _Fake:
    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def image_paths(self):
        return list(self.masks)

    def load_mask(self, i):
        return np.array(list(self.masks.values())[i], np.uint8)


def test_quality_by_hand(capsys):
    from pseudo_quality import quality, report
    gt = _Fake({"/x/1.jpg": [[0, 1, 1], [2, 2, 255]], "/x/2.jpg": [[3]]})
    pseudo = _Fake({"/x/1.jpg": [[0, 1, 255], [1, 2, 3]], "/x/9.jpg": [[1]]})  # 9.jpg: no ground truth
    q = quality(pseudo, gt)
    assert q["matched"] == 1 and q["total"] == 2
    rows = {r["class"]: r for r in report(q, "hand")}
    # class 1: pixels (0,1) kept right, (0,2) ignored; (1,0) is class 2 labelled 1 -> precision 1/2, recall 1/2
    assert rows["General trash"]["precision"] == 0.5 and rows["General trash"]["recall"] == 0.5
    assert rows["General trash"]["ignored"] == 0.5
    assert rows["Paper"]["precision"] == 1.0 and rows["Paper"]["recall"] == 0.5
    assert rows["General trash"]["iou"] == 1 / 2  # kept: tp 1, labelled 1 twice, kept class-1 pixels 1 -> 1 / (2+1-1)
    assert np.isnan(rows["Paper pack"]["precision"])  # labelled 3 only where the ground truth is 255
    assert "1 of 2 pseudo-labelled images have ground truth" in capsys.readouterr().out


def test_cli_on_demo_with_perfect_pseudo_labels(tmp_path):
    """The ground truth as its own pseudo-labels: precision and recall 1 for every class present."""
    from data.demo import make_demo
    root = tmp_path / "d"
    make_demo(str(root), train=1, val=1, test=0, extra=3, size=48, seed=2, hidden_labels=True)
    r = subprocess.run([sys.executable, "bench/pseudo_quality.py", "--data-root", str(root), "--gt", "extra_gt.json",
                        "--pseudo", str(root / "extra_gt.json"), "--json", str(tmp_path / "q.json")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = json.load(open(tmp_path / "q.json"))[str(root / "extra_gt.json")]
    present = [x for x in rows if x["gt_share"] > 0]
    assert present and all(x["precision"] == 1.0 and x["recall"] == 1.0 for x in present)
    bad = subprocess.run([sys.executable, "bench/pseudo_quality.py", "--data-root", str(root), "--gt", "extra.json",
                          "--pseudo", str(root / "extra_gt.json")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "extra.json: no annotations" in bad.stderr
