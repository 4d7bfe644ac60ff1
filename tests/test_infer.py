"""infer.py / pseudo_label.py against hand-written references on a small random model."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_data):
    import models
    tmp = tmp_path_factory.mktemp("inf")
    demo = Path(demo_data(train=4, val=3, test=3, extra=3, size=96, seed=5))
    torch.manual_seed(0)
    model = models.build_model("upernet_convnext_demo", 11).eval()
    ck = tmp / "model.pt"
    torch.save({"model": model.state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    return str(demo), str(ck), model


def _hand_tta(model, img_u8, scales, flip):
    """The plain loop SPEC §4 describes: each view's logits → bilinear to full size → softmax → un-flip → mean."""
    x = model.normalize(torch.from_numpy(img_u8).permute(2, 0, 1)[None])
    h, w = img_u8.shape[:2]
    total, n = 0, 0
    with torch.no_grad():
        for s in scales:
            r = s / max(h, w)
            vh, vw = max(1, round(h * r)), max(1, round(w * r))
            xv = F.interpolate(x, size=(vh, vw), mode="bilinear", align_corners=False)
            for fl in ([False, True] if flip else [False]):
                out = model(xv.flip(-1) if fl else xv)
                p = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False).softmax(1)
                total = total + (p.flip(-1) if fl else p)
                n += 1
    return (total / n)[0]  # (C, H, W)


@pytest.mark.bf16_heavy
def test_tta_matches_hand_loop_and_csv(setup, tmp_path, cpu_bf16):
    """--amp none pins fp32, the hand loop's precision, on every CPU (cpu_bf16: also where auto would pick bf16)."""
    demo, ck, model = setup
    from data.coco import CocoSegDataset
    from data.probs import load_probs
    from data.submission import read_submission
    out = tmp_path / "sub.csv"
    r = subprocess.run([PY, "infer.py", "--ckpt", ck, "--data-root", demo, "--json", "test.json", "--tta",
                        "--scales", "64", "96", "128", "--out", str(out), "--save-probs", str(tmp_path / "p"),
                        "--probs-size", "0", "--probs-dtype", "float16", "--workers", "0", "--amp", "none"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    ds = CocoSegDataset(demo, os.path.join(demo, "test.json"))
    sub = read_submission(str(out))
    assert list(sub) == ds.image_ids  # the JSON's order
    for i, iid in enumerate(ds.image_ids):
        img = ds[i]["image"]
        ref = _hand_tta(model, img, [64, 96, 128], True)
        got, size = load_probs(str(tmp_path / "p"), iid)
        assert size == img.shape[:2]
        np.testing.assert_allclose(got, ref.numpy(), atol=2e-3)  # float16 storage
        top2 = ref.topk(2, 0).values
        sure = (top2[0] - top2[1] > 1e-4).numpy()
        lab = ref.argmax(0).numpy().astype(np.uint8)
        want = cv2.resize(lab, (256, 256), interpolation=cv2.INTER_NEAREST)
        sure256 = cv2.resize(sure.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST).astype(bool)
        assert np.array_equal(sub[iid][sure256], want[sure256])


def test_eval_agrees_with_saved_masks(setup, tmp_path):
    demo, ck, _ = setup
    import infer
    from csrc import ops
    from data.coco import CocoSegDataset
    args = infer.get_args_parser().parse_args(["--ckpt", ck, "--data-root", demo, "--json", "val.json", "--eval",
                                               "--save-masks", str(tmp_path / "m"), "--out", "", "--workers", "0"])
    res = infer.main(args)
    ds = CocoSegDataset(demo, os.path.join(demo, "val.json"))
    cm = torch.zeros(11, 11, dtype=torch.int64)
    from PIL import Image
    for i, iid in enumerate(ds.image_ids):
        pred = np.array(Image.open(tmp_path / "m" / (os.path.splitext(iid)[0] + ".png")))
        cm += ops.ref_confusion_matrix(torch.from_numpy(pred)[None], torch.from_numpy(ds[i]["mask"])[None], 11)
    assert res["single"]["miou"] == pytest.approx(ops.miou(cm)["miou"], abs=1e-12)
    assert torch.equal(res["tta"]["iou"].nan_to_num(-1), ops.miou(cm)["iou"].nan_to_num(-1))


def test_bad_checkpoint_and_empty_set(setup, tmp_path):
    demo, ck, model = setup
    bad = tmp_path / "bad.pt"
    torch.save({"model": model.state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 5}, bad)
    r = subprocess.run([PY, "infer.py", "--ckpt", str(bad), "--data-root", demo, "--out", ""], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "bad.pt" in r.stderr
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "categories": []}))
    r = subprocess.run([PY, "infer.py", "--ckpt", ck, "--data-root", demo, "--json", str(empty), "--out", ""],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "no images" in r.stderr


def test_pseudo_labels_threshold_and_train_reads_them(setup, tmp_path):
    demo, ck, model = setup
    import pseudo_label
    from data.coco import CocoSegDataset
    out = tmp_path / "pl"
    args = pseudo_label.get_args_parser().parse_args(["--ckpt", ck, "--data-root", demo, "--json", "test.json",
                                                      "extra.json", "--out", str(out), "--threshold", "0.5",
                                                      "--scales", "96", "--flip", "--workers", "0"])
    pseudo_label.main(args)
    ds = CocoSegDataset(demo, str(out / "pseudo.json"))
    assert ds.has_labels and len(ds) == 6
    src = CocoSegDataset(demo, [os.path.join(demo, "test.json"), os.path.join(demo, "extra.json")])
    for i in range(len(ds)):
        ref = _hand_tta(model, src[i]["image"], [96], True)
        maxp, lab = ref.max(0)
        got = ds[i]["mask"]
        low = (maxp < 0.5).numpy()
        margin = ((maxp - 0.5).abs() > 1e-4).numpy()
        assert (got[low & margin] == 255).all()
        keep = ~low & margin
        assert np.array_equal(got[keep], lab.numpy()[keep])
    meta = json.load(open(out / "pseudo.json"))["info"]
    assert meta["threshold"] == 0.5 and meta["teachers"]
    r = subprocess.run([PY, "pseudo_label.py", "--ckpt", ck, "--data-root", demo, "--out", os.path.join(demo, "x")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "inside --data-root" in r.stderr


def test_view_sizes_absolute_and_ratio():
    from engine.predict import TTA_RATIOS, TTA_SCALES, view_size
    # on the competition's 512-px images the ratios are exactly the team's absolute scales
    assert [view_size(512, 512, r) for r in TTA_RATIOS] == [(s, s) for s in TTA_SCALES]
    assert view_size(300, 400, 800) == (600, 800) and view_size(300, 400, 0.5) == (150, 200)
    assert view_size(7, 9, None) == (7, 9)


@pytest.mark.slow
@pytest.mark.heavy  # make test keeps a two-process infer.py run: test_bad_input's one-and-two-process submission
def test_torchrun_sharded_csv_equals_single_process(setup, tmp_path):
    """2 ranks predict alternate images; rank 0 interleaves their rows: the CSV is byte-identical to 1 process."""
    demo, ck, _ = setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["infer.py", "--ckpt", ck, "--data-root", demo, "--json", "test.json", "--workers", "0"]
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    subprocess.run([PY, *common, "--out", str(one)], cwd=ROOT, env=env, check=True, capture_output=True)
    tr = [os.path.join(os.path.dirname(PY), "torchrun"), "--standalone", "--nproc_per_node", "2"]
    r = subprocess.run([*tr, *common, "--out", str(two)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert one.read_bytes() == two.read_bytes()
    assert not [f for f in os.listdir(tmp_path) if ".part" in f or f.startswith(".tmp_")]


def test_pseudo_json_ids_unique_across_sources(setup, tmp_path):
    """Labelling val.json + test.json (the team's practice) or test.json + the user's extra.json: each COCO file
    numbers its images from 0, so copying their ids made pseudo.json fail to load ('duplicate image id')."""
    demo, ck, _ = setup
    import pseudo_label
    from data.coco import CocoSegDataset
    root = tmp_path / "root"
    shutil.copytree(demo, root)
    for name in ("test.json", "extra.json"):
        d = json.load(open(root / name))
        for k, im in enumerate(d["images"]):
            im["id"] = k  # both files: 0, 1, 2
        json.dump(d, open(root / name, "w"))
    out = tmp_path / "pl"
    args = pseudo_label.get_args_parser().parse_args(["--ckpt", ck, "--data-root", str(root), "--json", "test.json",
                                                      "extra.json", "--out", str(out), "--workers", "0"])
    pseudo_label.main(args)
    ds = CocoSegDataset(str(root), str(out / "pseudo.json"))  # raised DataError before the fix
    assert len(ds) == 6 and ds.has_labels


def test_outputs_stay_in_their_folder_and_never_collide(setup, tmp_path):
    """A file_name that is absolute (some COCO exporters write them) put pseudo-label PNGs beside the real images in
    the data root, and infer.py --save-masks outside its folder; two images with one stem (a.jpg, a.png) shared one
    output file, the second silently replacing the first."""
    demo, ck, _ = setup
    import infer
    import pseudo_label
    from data.coco import CocoSegDataset
    root = tmp_path / "root"
    shutil.copytree(demo, root)
    d = json.load(open(root / "test.json"))
    for im in d["images"]:
        im["file_name"] = str(root / im["file_name"])
    json.dump(d, open(root / "abs.json", "w"))
    before = sorted(p for p in root.rglob("*"))
    out = tmp_path / "pl"
    pseudo_label.main(pseudo_label.get_args_parser().parse_args(
        ["--ckpt", ck, "--data-root", str(root), "--json", "abs.json", "--out", str(out), "--workers", "0"]))
    infer.main(infer.get_args_parser().parse_args(
        ["--ckpt", ck, "--data-root", str(root), "--json", "abs.json", "--out", "", "--workers", "0",
         "--save-masks", str(tmp_path / "masks"), "--save-probs", str(tmp_path / "probs")]))
    assert sorted(p for p in root.rglob("*")) == before  # nothing written into the data root
    assert len(list(out.rglob("*.png"))) == 3 and len(list((tmp_path / "masks").rglob("*.png"))) == 3
    assert len(CocoSegDataset(str(root), str(out / "pseudo.json"))) == 3

    im = d["images"][0]
    png = os.path.splitext(im["file_name"])[0] + ".png"
    cv2.imwrite(png, cv2.imread(im["file_name"]))
    d["images"].append(dict(im, id=99999, file_name=png))
    json.dump(d, open(root / "clash.json", "w"))
    for run in (lambda: pseudo_label.main(pseudo_label.get_args_parser().parse_args(
                    ["--ckpt", ck, "--data-root", str(root), "--json", "clash.json", "--out", str(tmp_path / "p2"),
                     "--workers", "0"])),
                lambda: infer.main(infer.get_args_parser().parse_args(
                    ["--ckpt", ck, "--data-root", str(root), "--json", "clash.json", "--out", "", "--workers", "0",
                     "--save-probs", str(tmp_path / "probs2")]))):
        with pytest.raises(SystemExit) as e:
            run()
        assert "share one" in str(e.value.code)
