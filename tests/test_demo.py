"""data.demo: deterministic bytes, a COCO file pycocotools accepts, labels that agree with data.coco's painting."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
from pycocotools.coco import COCO

from data.classes import CLASSES, NAME_TO_ID
from data.coco import CocoSegDataset
from data.demo import make_demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(train=10, val=6, test=3, extra=3, size=96, seed=3)


def _files(d: str) -> dict[str, bytes]:
    out = {}
    for dp, _, fs in os.walk(d):
        for f in fs:
            p = os.path.join(dp, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = fh.read()
    return out


def test_deterministic_and_layout(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    counts = make_demo(a, **SMALL)
    make_demo(b, **SMALL)
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa), "same seed must give the same bytes"
    assert counts == {"train": 10, "val": 6, "test": 3, "extra": 3}
    for j in ("train.json", "val.json", "test.json", "train_all.json", "extra.json"):
        assert j in fa
    assert not any(k.endswith(".tmp") for k in fa)
    make_demo(str(tmp_path / "c"), **{**SMALL, "seed": 4})
    assert _files(str(tmp_path / "c"))["train.json"] != fa["train.json"]

    tr, va, te, ta, ex = (json.loads(fa[j]) for j in ("train.json", "val.json", "test.json", "train_all.json",
                                                      "extra.json"))
    assert "annotations" not in te and "annotations" not in ex and "annotations" in tr
    assert ta["images"] == tr["images"] + va["images"] and ta["annotations"] == tr["annotations"] + va["annotations"]
    ids = [im["id"] for im in tr["images"]]
    assert ids != list(range(len(ids))) and ids != list(range(1, len(ids) + 1))
    cat_ids = [c["id"] for c in tr["categories"]]
    assert sorted(cat_ids) != list(range(1, 11)) and cat_ids != sorted(cat_ids)
    assert sorted(NAME_TO_ID[c["name"].lower()] for c in tr["categories"]) == list(range(1, 11))
    for im in tr["images"] + te["images"] + ex["images"]:
        folder, name = im["file_name"].split("/")
        assert folder in ("batch_01_vt", "batch_02_vt", "batch_03") and name.endswith(".jpg")
        assert fa[im["file_name"]][:2] == b"\xff\xd8"


def test_pycocotools_and_painting_agree(tmp_path):
    d = str(tmp_path / "demo")
    make_demo(d, **SMALL)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(os.path.join(d, "train_all.json"))
    cls = {c["id"]: NAME_TO_ID[c["name"].lower()] for c in coco.loadCats(coco.getCatIds())}
    ds = CocoSegDataset(d, os.path.join(d, "train_all.json"))
    kinds = set()
    per_split_classes = {}
    for i, rec in enumerate(ds.images):
        m = np.zeros((rec["height"], rec["width"]), np.uint8)
        for a in sorted(coco.loadAnns(coco.getAnnIds(imgIds=rec["id"])), key=lambda a: a["area"], reverse=True):
            am = coco.annToMask(a)
            assert a["area"] == am.sum()
            x, y, w, h = a["bbox"]
            ys, xs = np.nonzero(am)
            assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            kinds.add("crowd" if a["iscrowd"] else "rle" if isinstance(a["segmentation"], dict)
                      else "multi" if len(a["segmentation"]) > 1 else "poly")
            m[am > 0] = cls[a["category_id"]]
        np.testing.assert_array_equal(ds.load_mask(i), m)
        per_split_classes.setdefault(i < SMALL["train"], set()).update(np.unique(m).tolist())
    assert {"poly", "rle", "crowd"} <= kinds
    for classes in per_split_classes.values():  # Battery and Clothing are forced into train and val
        assert {NAME_TO_ID["battery"], NAME_TO_ID["clothing"]} <= classes
    assert set().union(*per_split_classes.values()) == set(range(len(CLASSES)))
    te = CocoSegDataset(d, os.path.join(d, "test.json"))
    assert not te.has_labels and te[0]["image"].shape == (96, 96, 3)


def test_cli(tmp_path):
    out = str(tmp_path / "cli")
    r = subprocess.run([sys.executable, "-m", "data.demo", "--out", out, "--train", "2", "--val", "2", "--test",
                        "1", "--extra", "1", "--size", "64"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(out, "train_all.json"))
