"""Semi-supervised training (data/semi.py, engine/semi.py): strong views against torchvision and hand-computed
cases, CutMix, the exact labelled / pool share of every batch, the EMA teacher's update, and train.py end to end
(offline pool, online teacher, exact resume, refused inputs)."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from data.classes import IGNORE_INDEX, PIXEL_MEAN
from data.semi import PoolSet, StrongAug, color_jitter, cutmix_batch, random_box

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


class _Rng:
    """A generator whose draws are scripted: random() and uniform() return the next value; permutation keeps the
    order; integers() returns low (for the hand-computed cases)."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)

    def uniform(self, lo, hi):
        return self.values.pop(0)

    def permutation(self, x):
        return np.asarray(x)

    def integers(self, lo, hi=None):
        return lo if hi is not None else 0


def test_color_jitter_steps_against_torchvision():
    """Brightness, contrast and saturation factors as torchvision's functional ops compute them on float images
    (the order fixed, hue 0): within one grey level of rounding."""
    import torchvision.transforms.v2.functional as TF
    rng0 = np.random.default_rng(0)
    img = rng0.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    b, c, s = 1.3, 0.7, 1.4
    got = color_jitter(img, _Rng([b, c, s, 0.0]))
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    want = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(t, b), c), s)
    want = (want * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(got.astype(np.float32) - want).max() <= 1.0


def test_strong_aug_cutout_grayscale_and_off():
    img = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.random.default_rng(2).integers(0, 11, (40, 50), dtype=np.uint8)
    # every step off: the weak view unchanged, no CutMix box
    out, m, box = StrongAug(0, 0, 0, 0, 0)(img, mask, np.random.default_rng(0))
    assert np.array_equal(out, img) and np.array_equal(m, mask) and box is None
    # grayscale alone (ITU-R 601-2 luma, as PIL's L), then a CutOut box: image to the pixel mean, target 255
    rng = np.random.default_rng(5)
    out, m, box = StrongAug(color=0, gray=1, blur=0, cutout=1, cutmix=0)(img, mask, rng)
    y0, y1, x0, x1 = random_box(_replay(5), 40, 50)
    gray = (img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114).round().astype(np.uint8)
    cut = np.zeros((40, 50), bool)
    cut[y0:y1, x0:x1] = True
    assert cut.any() and not cut.all()
    assert np.array_equal(out[~cut], np.repeat(gray[..., None], 3, 2)[~cut])
    assert (out[cut] == np.round(PIXEL_MEAN).astype(np.uint8)).all()
    assert (m[cut] == IGNORE_INDEX).all() and np.array_equal(m[~cut], mask[~cut])
    assert box is None


def _replay(seed):
    """The generator as StrongAug(color=0, gray=1, ...) leaves it at its CutOut box: four probability draws."""
    rng = np.random.default_rng(seed)
    rng.random(), rng.random(), rng.random(), rng.random()  # color, gray, blur, cutout
    return rng


def test_random_box_area_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        y0, y1, x0, x1 = random_box(rng, 64, 96)
        assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 96
        assert (y1 - y0) * (x1 - x0) <= 0.4 * 64 * 96 * 1.1 + 2


def test_cutmix_batch_pastes_from_the_next_sample():
    images = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 2, 4, 4).clone()  # sample i is all i
    targets = torch.arange(3).view(3, 1, 1).expand(3, 4, 4).clone()
    boxes = torch.zeros(3, 4, 4, dtype=torch.bool)
    boxes[0, :2, :2] = True  # sample 0 takes sample 1's top-left
    boxes[2, 3, 3] = True  # the last takes the first's corner
    im, tg = cutmix_batch(boxes, images, targets)
    assert (im[0, :, :2, :2] == 1).all() and (im[0][:, 2:] == 0).all() and (tg[0, :2, :2] == 1).all()
    assert im[2, 0, 3, 3] == 0 and tg[2, 3, 3] == 0 and (tg[2].sum() == 2 * 15)
    assert torch.equal(im[1], images[1])
    one = cutmix_batch(boxes[:1], images[:1], targets[:1])
    assert torch.equal(one[0], images[:1]) and torch.equal(one[1], targets[:1])


def test_pool_set_weak_view_is_the_labelled_augmentation(tmp_path, demo_data):
    """The weak view is TrainSet's augmentation of the same key (the teacher sees what labelled images look like);
    the strong view keeps its geometry; an unlabelled image's mask is 0 on the image and 255 on the padding."""
    from data.coco import CocoSegDataset
    from data.loader import TrainSet
    from data.transforms import build_transform
    demo = Path(demo_data(train=3, val=1, test=2, extra=0, size=40, seed=2, fresh=True))
    tf = build_transform("train", crop_size=48)  # 48 > 40 px: padded
    labelled = CocoSegDataset(str(demo), str(demo / "train.json"))
    pool = PoolSet(labelled, tf, seed=4, strong=StrongAug(color=1, gray=0, blur=0, cutout=0, cutmix=1))
    ref = TrainSet(labelled, tf, seed=4)
    for key in [(0, 0), (3, 2)]:
        s, r = pool[key], ref[key]
        assert torch.equal(s["image"], r["image"]) and torch.equal(s["mask"], r["mask"])
        assert s["strong"].shape == s["image"].shape and not torch.equal(s["strong"], s["image"])
        assert s["cutmix"].dtype == torch.bool and s["cutmix"].any()
        assert all(torch.equal(a, b) for a, b in zip(pool[key].values(), s.values()))  # a pure function of the key
    unl = PoolSet(CocoSegDataset(str(demo), str(demo / "test.json")), tf, seed=4, strong=None)
    m = unl[(0, 1)]["mask"]
    assert set(m.unique().tolist()) <= {0, IGNORE_INDEX} and (m == 0).any()
    assert torch.equal(m == IGNORE_INDEX, ref[(0, 1)]["mask"] == IGNORE_INDEX)  # padding exactly where labels pad


def test_ema_teacher_update_by_hand():
    from engine.semi import EMATeacher
    student = torch.nn.BatchNorm1d(3)
    teacher = EMATeacher(student, momentum=0.99)
    t0 = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        student.weight.fill_(2.0)
        student.running_mean.fill_(1.0)
        student.num_batches_tracked.fill_(7)
    teacher.update(student)  # step 0: m = min(0.99, 1/10) = 0.1
    assert torch.allclose(teacher.model.weight, 0.1 * t0["weight"] + 0.9 * 2.0)
    assert torch.allclose(teacher.model.running_mean, 0.1 * t0["running_mean"] + 0.9 * 1.0)
    assert int(teacher.model.num_batches_tracked) == 7  # integer buffers are copied
    for _ in range(200):
        teacher.update(student)
    assert teacher.step == 201 and torch.allclose(teacher.model.weight, torch.full((3,), 2.0))  # converged
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())


def test_teacher_targets_threshold_and_ignore():
    from engine.semi import teacher_targets

    class Fixed(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(1, 3, 1, 3)
            logits[0, 2, 0, 0] = 10.0  # confident class 2
            logits[0, 1, 0, 1] = 0.5  # unsure class 1
            logits[0, 0, 0, 2] = 10.0  # confident, but ignored
            return logits
    ignore = torch.tensor([[[False, False, True]]])
    t, kept, quality = teacher_targets(Fixed(), torch.zeros(1, 3, 1, 3), ignore, 0.9)
    assert t.tolist() == [[[2, IGNORE_INDEX, IGNORE_INDEX]]] and kept == pytest.approx(1 / 3)
    assert quality.tolist() == [0.5]  # one confident pixel of the two not ignored
    # --semi-confidence weight: the unsure pixel keeps its argmax; the image's quality is the same
    t, kept, quality = teacher_targets(Fixed(), torch.zeros(1, 3, 1, 3), ignore, 0.9, "weight")
    assert t.tolist() == [[[2, 1, IGNORE_INDEX]]] and kept == pytest.approx(2 / 3) and quality.tolist() == [0.5]


def test_confidence_weighted_pool_loss_by_hand():
    """--semi-confidence weight: each pool image's pixels carry its quality (pasted along by CutMix) and the pool's
    loss is sum(weight x CE) / pixel count, computed here by hand."""
    import math
    from engine.semi import losses, pool_batch

    class Teacher(torch.nn.Module):  # confident (softmax ~1 on class 0) where the input is 1, uniform where it is 0
        def forward(self, x):
            return torch.cat([20 * x[:, :1], torch.zeros_like(x[:, :2])], 1)  # (B, 3, H, W)
    teacher = type("T", (), {"model": Teacher()})()
    img = torch.zeros(2, 3, 1, 2)
    img[0] = 1.0  # image 0: every pixel confident; image 1: none
    box = torch.tensor([[[False, True]], [[False, False]]])  # image 0's right pixel comes from image 1
    batch = {"strong": img, "image": img, "mask": torch.zeros(2, 1, 2, dtype=torch.long), "cutmix": box}
    strong, target, count, share, w = pool_batch(batch, teacher, lambda x: x, 0.9, "weight")
    assert w.tolist() == [[[1.0, 0.0]], [[0.0, 0.0]]] and int(count) == 4 and share == 1.0
    assert target.tolist() == [[[0, 0]], [[0, 0]]]  # argmax 0 everywhere (ties in image 1 go to class 0)
    logits = torch.zeros(3, 3, 1, 2)  # one labelled image, then the two pool images
    logits[1, 0, 0, 0] = 2.0  # pool image 0, left pixel: p(class 0) = e^2 / (e^2 + 2)
    crit = type("C", (), {"main": staticmethod(lambda lg, t, k: lg.sum() * 0),
                          "aux": staticmethod(lambda lg, t, k: lg.sum() * 0)})()
    main, aux = losses(crit, logits, logits, torch.zeros(1, 1, 2, dtype=torch.long), (target, count, w), 0.5)
    ce_left = -math.log(math.exp(2) / (math.exp(2) + 2))  # the only pixel with weight 1
    assert float(main) == pytest.approx(0.5 * ce_left / 4) and float(aux) == pytest.approx(0.5 * ce_left / 4)
    _, _, _, _, w_drop = pool_batch(batch, teacher, lambda x: x, 0.9, "drop")
    assert w_drop is None


def test_batch_split_is_exact_and_resumes():
    """Every batch holds exactly round(B x share) pool images; both streams resume at their own positions."""
    import argparse
    from engine.semi import batch_and_start, split_batch

    class Run:
        def __init__(self, start):
            self.args = argparse.Namespace(batch_size=8, semi_share=0.25, pseudo_json=["p.json"],
                                           unlabelled_json=None, ema_momentum=0.99, semi_threshold=0.95)
            self.info = argparse.Namespace(world_size=2)
            self.start_sample = start
    assert split_batch(Run(0).args) == (6, 2)
    assert batch_and_start(Run(0)) == (6, 0, 0)
    assert batch_and_start(Run(5 * 16)) == (6, 5 * 12, 5 * 4)  # 5 global batches of 16: 12 labelled + 4 pool each
    bad = Run(0).args
    bad.semi_share = 0.05
    with pytest.raises(SystemExit, match="each needs at least 1"):
        split_batch(bad)


# ------------------------------------------------------------------------------------------------ train.py end to end

@pytest.fixture(scope="module")
def demo(demo_data):
    return demo_data(train=4, val=2, test=2, extra=4, size=48, seed=3)


def _train(demo, out, *extra, check=True):
    r = subprocess.run([PY, "train.py", "--data-root", demo, "--out", str(out), "--model", "upernet_convnext_demo",
                        "--crop-size", "48", "--batch-size", "4", "--workers", "1", "--warmup-iters", "1",
                        "--eval-interval", "1000", "--ckpt-interval", "2", "--log-interval", "1", "--no-progress",
                        "--val-json", "", *extra], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_online_teacher_trains_and_resumes_bitwise(demo, tmp_path):
    """--unlabelled-json: 4 iterations straight against 2 + --resume 2 (teacher, pool position and every RNG in the
    checkpoint): the same weights and the same teacher, bit for bit. A teacher that labels everything (threshold 0)
    makes the pool's loss count."""
    flags = ["--unlabelled-json", "extra.json", "test.json", "--semi-threshold", "0", "--ema-momentum", "0.5"]
    r = _train(demo, tmp_path / "a", "--iters", "4", *flags)
    assert "semi-supervised: 6 unlabelled images, 2 of every 4 per rank" in r.stdout
    r = _train(demo, tmp_path / "b", "--iters", "4", "--stop-after", "2", *flags, check=False)
    assert r.returncode == 75, r.stderr[-2000:]  # --stop-after: saved, to be continued (EX_TEMPFAIL)
    _train(demo, tmp_path / "b", "--iters", "4", "--resume", *flags)
    a, b = (torch.load(tmp_path / x / "last.pt", weights_only=True) for x in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["teacher"]["step"] == b["teacher"]["step"] == 4
    assert all(torch.equal(a["teacher"]["model"][k], b["teacher"]["model"][k]) for k in a["teacher"]["model"])
    assert any(not torch.equal(a["teacher"]["model"][k], a["model"][k]) for k in a["model"])  # it lags the student


@pytest.mark.heavy
def test_online_confidence_weight_trains_and_changes_the_step(demo, tmp_path):
    """--semi-confidence weight end to end: the log says so, and with threshold 1, which no pixel reaches at the
    start (each image's weight 0), the pool adds nothing, while the default mode at threshold 0 (every pixel kept)
    trains otherwise."""
    flags = ["--iters", "2", "--unlabelled-json", "extra.json", "--ema-momentum", "0.5"]
    r = _train(demo, tmp_path / "w", *flags, "--semi-confidence", "weight", "--semi-threshold", "1")
    assert "images weighted by confidence" in r.stdout
    _train(demo, tmp_path / "d", *flags, "--semi-threshold", "0")
    _train(demo, tmp_path / "z", *flags, "--semi-weight", "0", "--semi-threshold", "0")
    w, d, z = (torch.load(tmp_path / x / "last.pt", weights_only=True)["model"] for x in "wdz")
    assert all(torch.equal(w[k], z[k]) for k in w)  # weight 0 on every image == no pool loss
    assert any(not torch.equal(w[k], d[k]) for k in w)


def test_offline_pool_and_refused_inputs(demo, tmp_path):
    """--pseudo-json train.json (the labels-only control with strong views) trains; an unlabelled file as
    --pseudo-json, and a pool that holds validation images, exit 2 with one line naming the files."""
    runs = [  # independent runs, two at a time
        ("ctl", "--pseudo-json", "train.json", "--semi-share", "0.5"),
        ("bal", "--balance", "--unlabelled-json", "extra.json", "--semi-threshold", "0"),  # with rare-class sampling
        ("x", "--pseudo-json", "extra.json"),  # (labelled pool only) and Lovász; then two refused pools
        ("y", "--val-json", "val.json", "--unlabelled-json", "extra.json", "val.json"),
    ]
    with ThreadPoolExecutor(2) as pool:
        ctl, bal, x, y = pool.map(lambda a: _train(demo, tmp_path / a[0], "--iters", "2", *a[1:], check=False), runs)
    assert ctl.returncode == 0 and bal.returncode == 0, ctl.stderr[-2000:] + bal.stderr[-2000:]
    assert "semi-supervised: 4 pseudo-labelled images, 2 of every 4 per rank" in ctl.stdout
    assert "rare-class sampling" in bal.stdout and "semi-supervised: 4 unlabelled images" in bal.stdout
    assert x.returncode == 2 and "--pseudo-json needs labels" in x.stderr.strip().splitlines()[-1]
    assert y.returncode == 2 and "also validation images" in y.stderr.strip().splitlines()[-1], y.stderr[-2000:]


def test_pool_refuses_validation_images_and_drops_labelled_ones(demo, tmp_path):
    """make semi's pool step (python -m data.semi pool, as the Makefile calls it): a folder holding labelled and
    validation images is refused, naming val.json, before any training; without the validation images, the images
    train.json already labels are left out and counted, the rest renumbered."""
    from data.coco import load_coco_json
    train = [r["file_name"] for r in load_coco_json(os.path.join(demo, "train.json"))["images"]]
    val = [r["file_name"] for r in load_coco_json(os.path.join(demo, "val.json"))["images"]]
    cmd = [PY, "-m", "data.semi", "pool", "--data-root", demo, "--val-json", "val.json",
           "--labelled-json", "train.json", "--out"]
    both = os.path.dirname(val[0])  # the demo's batch_01_vt: labelled and validation images side by side
    r = subprocess.run(cmd + [str(tmp_path / "a.json"), both], cwd=ROOT, capture_output=True, text=True)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith(f"error: {os.path.join(demo, 'val.json')}: ") \
        and f"{sum(os.path.dirname(v) == both for v in val)} image(s) of the pool are also validation" in last, last
    assert not (tmp_path / "a.json").exists()
    links = tmp_path / "links"  # a folder of links to validation images: the same images, refused as well
    links.mkdir()
    os.symlink(os.path.join(demo, val[0]), links / "x.jpg")
    r = subprocess.run(cmd + [str(tmp_path / "a.json"), str(links)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "1 image(s) of the pool are also validation images" in r.stderr, r.stderr
    # a COCO list of 2 labelled images + the test images: the labelled 2 are dropped, the count says so
    lst = tmp_path / "mixed.json"
    test = load_coco_json(os.path.join(demo, "test.json"))["images"]
    lst.write_text(json.dumps({"images": [{"id": 50 + i, "file_name": f, "width": 48, "height": 48}
                                          for i, f in enumerate(train[:2])] + test, "categories": []}))
    r = subprocess.run(cmd + [str(tmp_path / "b.json"), str(lst)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pool = json.load(open(tmp_path / "b.json"))["images"]
    assert [p["file_name"] for p in pool] == [t["file_name"] for t in test] and [p["id"] for p in pool] == \
        list(range(1, len(test) + 1))
    assert "(2 already labelled in train.json left out)" in r.stdout, r.stdout


@pytest.mark.heavy
@pytest.mark.parametrize("recipe", ["offline", "online"])
def test_make_semi_with_control(demo, tmp_path, recipe):
    """make semi on a non-demo data root with the recipe in TRAIN_ARGS: UNLABELLED mixes a COCO file and a folder of
    photos; the semi-supervised arm and its control share the recipe and seed, and the last line sets one against
    the other. offline: the control is the teacher of the pool's TTA pseudo-labels, and the student trains afresh on
    labels + pseudo-labels; online: the control has the same batch mix with its labelled set as the pool. A folder
    holding validation images is refused."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted(os.listdir(os.path.join(demo, "batch_03")))[:2]:  # the test/extra folder of the demo
        os.symlink(os.path.join(demo, "batch_03", f), photos / f)
    train = ("--iters 2 --crop-size 48 --batch-size 4 --workers 0 --no-progress --eval-interval 2 "
             "--ckpt-interval 2 --warmup-iters 1")
    r = subprocess.run(["make", "-s", "semi", f"DATA_ROOT={demo}", f"EXP={tmp_path}/s", f"TRAIN_ARGS={train}",
                        f"UNLABELLED=test.json {photos}", f"SEMI_RECIPE={recipe}"]
                       + (["SEMI_ARGS=--workers 0 --threshold-mode hybrid --keep 0.8 --align train.json"]
                          if recipe == "offline" else []),
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    semi, ctl = (json.load(open(tmp_path / "s" / x / "args.json")) for x in ("semi", "control"))
    assert all(semi[k] == ctl[k] for k in ("iters", "seed", "batch_size", "crop_size", "lr"))
    pool = json.load(open(tmp_path / "s" / "unlabelled.json"))["images"]
    assert len(pool) == 4 and all(os.path.isabs(p["file_name"]) for p in pool[2:])  # 2 listed + 2 photos outside
    if recipe == "online":
        assert semi["unlabelled_json"] == [f"{tmp_path}/s/unlabelled.json"] and ctl["labelled_pool"]
        assert semi["semi_share"] == ctl["semi_share"] == 0.5
    else:
        labels = tmp_path / "s" / "pseudo" / "pseudo.json"
        assert semi["pseudo_json"] == [str(labels)] and ctl["train_json"] == semi["train_json"]
        assert os.path.basename(ctl["train_json"][0]) == "train.json" and not ctl["pseudo_json"]
        assert not semi.get("init") and not ctl["labelled_pool"] and semi["semi_share"] == 0.5
        assert all(semi[f"aug_strong_{k}"] == 0 for k in ("color", "gray", "blur", "cutout", "cutmix"))
        info = json.load(open(labels))
        assert len(info["images"]) == 4  # every pool image, photos outside the root included
        assert info["info"]["align"]["json"].endswith("train.json"), info["info"]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("semi-supervised vs control: ") and "(gain " in last, last
    if recipe == "offline":
        return
    r = subprocess.run(["make", "-s", "semi", f"DATA_ROOT={demo}", f"EXP={tmp_path}/v", f"TRAIN_ARGS={train}",
                        "UNLABELLED=batch_01_vt"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "also validation images" in r.stderr, r.stderr[-2000:]
    r = subprocess.run(["make", "-s", "semi", f"DATA_ROOT={demo}", f"EXP={tmp_path}/w", "SEMI_RECIPE=fixmatch",
                        "UNLABELLED=test.json"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "SEMI_RECIPE must be offline or online" in r.stdout + r.stderr
    r = subprocess.run(["make", "-s", "semi", f"DATA_ROOT={demo}", f"EXP={tmp_path}/w", "SEMI_VIEWS=weakest",
                        "UNLABELLED=test.json"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "SEMI_VIEWS must be weak or strong" in r.stdout + r.stderr


def test_stability_by_hand():
    from engine.pseudo import stability, stable_subset
    final = torch.tensor([[0, 0, 1, 1]])
    same, half = final.clone(), torch.tensor([[0, 1, 1, 1]])
    # half: class 0 IoU 1/2, class 1 IoU 2/3 -> 7/12; mean with the identical map: (1 + 7/12) / 2
    assert stability(final, [same, half], 3) == pytest.approx((1 + 7 / 12) / 2)
    assert stability(final, [], 3) == 1.0
    assert stable_subset({"a": 0.2, "b": 0.9, "c": 0.9, "d": 0.5}, 0.5) == {"b", "c"}
    assert stable_subset({"a": 0.2, "b": 0.9, "c": 0.5}, 0.5) == {"b", "c"}  # ceil(1.5) = 2


def test_pseudo_label_stable_selection(demo, tmp_path):
    """pseudo_label.py --stable-ckpts: pseudo.json lists the --stable-share of images whose earlier checkpoints'
    labels agree most with the final teacher's, stability computed here independently (numpy confusion)."""
    import models
    import pseudo_label
    from data.coco import CocoSegDataset
    cks = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = models.build_model("upernet_convnext_demo", 11).eval()
        cks.append(str(tmp_path / f"m{seed}.pt"))
        torch.save({"model": m.state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 11}, cks[-1])
    out = tmp_path / "pl"
    pseudo_label.main(pseudo_label.get_args_parser().parse_args(
        ["--ckpt", cks[0], "--data-root", demo, "--json", "extra.json", "--out", str(out), "--threshold", "0",
         "--workers", "0", "--amp", "none", "--winograd", "off", "--stable-ckpts", cks[0], cks[1],
         "--stable-share", "0.5"]))
    doc = json.load(open(out / "pseudo.json"))
    src = CocoSegDataset(demo, os.path.join(demo, "extra.json"))
    final_m, other = (models.load_model(c, map_location="cpu").eval() for c in cks)
    want = {}
    for i in range(len(src)):
        x = final_m.normalize(torch.from_numpy(src[i]["image"]).permute(2, 0, 1)[None])
        with torch.no_grad():
            a, b = final_m(x).argmax(1).numpy().ravel(), other(x).argmax(1).numpy().ravel()
        cm = np.zeros((11, 11))
        np.add.at(cm, (a, b), 1)
        union = cm.sum(0) + cm.sum(1) - np.diag(cm)
        want[src.image_ids[i]] = (1.0 + (np.diag(cm)[union > 0] / union[union > 0]).mean()) / 2
    top = sorted(want, key=lambda k: (-want[k], src.image_ids.index(k)))[:2]
    assert sorted(r["file_name"] for r in doc["images"]) == sorted(top)
    assert all(doc["info"]["stability"][k] == pytest.approx(v, abs=1e-4) for k, v in want.items())


def test_semi_table_by_hand(tmp_path):
    """bench/semi_table.py on fake finished runs: means, ranges, paired differences and the bar, by hand."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import semi_table
    fake = {"A": [0.60, 0.62, 0.58], "Aplus": [0.61, 0.63, 0.60], "E": [0.66, 0.65, 0.64], "C": [0.62, 0.64, 0.59]}
    for arm, vals in fake.items():
        for s, v in enumerate(vals):
            d = tmp_path / f"{arm}_s{s}"
            d.mkdir()
            (d / "args.json").write_text(json.dumps({"iters": 100}))
            (d / "metrics.jsonl").write_text(json.dumps({"iter": 50, "miou": 0.9}) + "\n"
                                             + json.dumps({"iter": 100, "miou": v}) + "\n")
    (tmp_path / "B_s0").mkdir()  # unfinished: no metrics
    lines = semi_table.table({a: {s: v for s, v in enumerate(x)} for a, x in fake.items()}, [0, 1, 2])
    out = "\n".join(lines)
    assert "| 0.6133 (0.6000–0.6300) | +0.0100 +0.0100 +0.0200 |" in out  # A+: mean of .61 .63 .60; minus A
    assert "E vs Aplus (the better control): mean +0.0367, paired +0.0500 +0.0200 +0.0400: meets the bar" in out
    assert "C vs Aplus (the better control): mean +0.0033, paired +0.0100 +0.0100 -0.0100: does not meet" in out
    assert semi_table.final_miou(str(tmp_path / "E_s1")) == 0.65 and semi_table.final_miou(str(tmp_path / "B_s0")) is None


def test_semi_table_rare_classes_by_hand(tmp_path):
    """bench/semi_table.py --rare: the classes with the fewest labelled instances in A's train.json (Battery absent
    from it: named, not ranked) and each arm's final IoU of them, mean over seeds, against A, by hand."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import semi_table
    cats = [{"id": i, "name": n} for i, n in enumerate(["background", "General trash", "PAPER", "Paper Pack",
                                                         "Metal", "Glass", "PLASTIC", "Styrofoam", "Plastic bag",
                                                         "Battery", "CLOTHING"])]
    n_inst = {1: 9, 2: 9, 3: 2, 4: 9, 5: 3, 6: 9, 7: 9, 8: 9, 10: 1}  # Clothing 1, Paper pack 2, Glass 3; no Battery
    anns = [{"id": k, "image_id": 0, "category_id": c} for k, c in enumerate(c for c, n in n_inst.items()
                                                                              for _ in range(n))]
    (tmp_path / "train.json").write_text(json.dumps({"images": [], "annotations": anns, "categories": cats}))
    iou = {("A", 0): {10: 0.5, 3: 0.6, 5: 0.7}, ("A", 1): {10: 0.3, 3: 0.4, 5: 0.5},
           ("Bh", 0): {10: 0.6, 3: 0.6, 5: 0.9}, ("Bh", 1): {10: 0.5, 3: 0.3, 5: 0.5}}
    for (arm, s), got in iou.items():
        d = tmp_path / f"{arm}_s{s}"
        d.mkdir()
        (d / "args.json").write_text(json.dumps({"iters": 10, "train_json": [str(tmp_path / "train.json")]}))
        rec = {"iter": 10, "miou": 0.5, "iou": [got.get(c, 0.9) for c in range(11)]}
        (d / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    lines = semi_table.rare_table(str(tmp_path), [0, 1, 2], 3)
    assert lines[0] == "| arm (seeds) | Clothing (1 labelled) | Paper pack (2 labelled) | Glass (3 labelled) |"
    assert lines[2] == "| A (0 1) | 0.400 | 0.500 | 0.600 |"
    assert lines[3] == "| Bh (0 1) | 0.550 (+0.150) | 0.450 (-0.050) | 0.700 (+0.100) |"
    assert lines[-1].endswith("absent from the labels: Battery")
