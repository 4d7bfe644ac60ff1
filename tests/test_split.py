"""data.split: folds partition the images, keep COCO fields, and keep every class's share per fold."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data.coco import DataError
from data.split import iterative_stratification, write_folds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real-like imbalance: per-image probability of containing each class (Paper and Plastic bag common, Battery rare).
P_CLASS = {"General trash": 0.4, "Paper": 0.75, "Paper pack": 0.12, "Metal": 0.1, "Glass": 0.1, "Plastic": 0.4,
           "Styrofoam": 0.2, "Plastic bag": 0.7, "Battery": 0.02, "Clothing": 0.04}


def _coco(n: int = 500, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cats = [{"id": 100 + 3 * k, "name": name} for k, name in enumerate(P_CLASS)]
    rng.shuffle(cats)
    cid = {c["name"]: c["id"] for c in cats}
    images, anns = [], []
    for i in range(n):
        iid = 7000 + 13 * i
        images.append({"id": iid, "file_name": f"batch_01_vt/{i:04d}.jpg", "width": 512, "height": 512})
        for name, p in P_CLASS.items():
            for _ in range(int(rng.random() < p) * int(rng.integers(1, 4))):
                anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cid[name], "area": 10.0,
                             "bbox": [0, 0, 4, 4], "iscrowd": 0, "segmentation": [[0, 0, 4, 0, 4, 4]]})
    rng.shuffle(anns)
    return {"info": {"year": 2022}, "licenses": [{"id": 1}], "categories": cats, "images": images,
            "annotations": anns, "extra_field": [1, 2]}


def _tolerance(expected: float) -> float:
    """The stated guarantee (data/split.py docstring): within max(2, 15%) images of n_c / K."""
    return max(2.0, 0.15 * expected)


@pytest.mark.parametrize("k,seed", [(5, 0), (3, 1)])
def test_folds_partition_and_stratify(tmp_path, k, seed):
    d = _coco()
    jp = tmp_path / "train_all.json"
    jp.write_text(json.dumps(d))
    out = tmp_path / "folds"
    write_folds(str(jp), k, seed, str(out))
    names = {c["id"]: c["name"] for c in d["categories"]}
    img_classes: dict[int, set[str]] = {im["id"]: set() for im in d["images"]}
    for a in d["annotations"]:
        img_classes[a["image_id"]].add(names[a["category_id"]])
    all_ids = [im["id"] for im in d["images"]]
    seen: list[int] = []
    for f in range(k):
        tr = json.loads((out / f"train_fold{f}.json").read_text())
        va = json.loads((out / f"val_fold{f}.json").read_text())
        for part in (tr, va):
            for key in ("info", "licenses", "categories", "extra_field"):
                assert part[key] == d[key]
            ids = {im["id"] for im in part["images"]}
            assert [im["id"] for im in part["images"]] == [i for i in all_ids if i in ids]  # order kept
            assert sorted(a["id"] for a in part["annotations"]) == sorted(
                a["id"] for a in d["annotations"] if a["image_id"] in ids)
        tr_ids, va_ids = {im["id"] for im in tr["images"]}, {im["id"] for im in va["images"]}
        assert not tr_ids & va_ids and tr_ids | va_ids == set(all_ids)
        seen += list(va_ids)
        assert abs(len(va_ids) - len(all_ids) / k) <= 2
        for name in P_CLASS:
            n_c = sum(name in s for s in img_classes.values())
            got = sum(name in img_classes[i] for i in va_ids)
            assert abs(got - n_c / k) <= _tolerance(n_c / k), (f, name, got, n_c / k)
    assert sorted(seen) == sorted(all_ids)  # every image in exactly one val fold


def test_beats_random_and_is_deterministic():
    rng = np.random.default_rng(5)
    probs = list(P_CLASS.values())
    labels = [{c + 1 for c, p in enumerate(probs) if rng.random() < p} for _ in range(400)]
    labels += [set()] * 5  # a few images without objects
    f1 = iterative_stratification(labels, 5, seed=0)
    assert np.array_equal(f1, iterative_stratification(labels, 5, seed=0))
    assert not np.array_equal(f1, iterative_stratification(labels, 5, seed=1))
    assert np.bincount(f1).max() - np.bincount(f1).min() <= 2

    def worst(fold):  # largest deviation from n_c / K, relative to the stated tolerance
        dev = 0.0
        for c in range(1, 11):
            has = np.array([c in s for s in labels])
            e = has.sum() / 5
            dev = max(dev, max(abs(has[fold == f].sum() - e) for f in range(5)) / _tolerance(e))
        return dev
    rand = [worst(np.random.default_rng(s).permutation(len(labels)) % 5) for s in range(5)]
    assert worst(f1) <= 1.0 and worst(f1) < min(rand)


def test_errors_and_cli(tmp_path):
    d = _coco(40)
    d["annotations"][0]["image_id"] = 1
    jp = tmp_path / "bad.json"
    jp.write_text(json.dumps(d))
    with pytest.raises(DataError, match=r"bad\.json: annotation id=\d+ .*image_id 1 is not in"):
        write_folds(str(jp), 5, 0, str(tmp_path / "o"))
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "data.split", "--json", str(jp), "--folds", "5", "--seed", "0",
                        "--out", str(tmp_path / "o")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "bad.json" in r.stderr
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_coco(40)))
    r = subprocess.run([sys.executable, "-m", "data.split", "--json", str(good), "--folds", "4", "--seed", "0",
                        "--out", str(tmp_path / "o")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "o")) == sorted([f"{s}_fold{k}.json" for k in range(4)
                                                          for s in ("train", "val")])
