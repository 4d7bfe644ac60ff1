"""Class-imbalance tools against hand-computed cases: losses, class weights, OHEM, rare-class sampling, CBST, demo."""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from data.loader import InfiniteSampler, WeightedInfiniteSampler
from data.rcs import class_pixel_counts, rare_first, rcs_class_probs, rcs_image_weights
from engine import imbalance
from engine.pseudo import LEVELS, ClassBalancedSelector, quantise
from models.losses import (SegCriterion, cross_entropy, dice_loss, enet_class_weights, focal_loss, lovasz_softmax,
                           ohem_keep, parse_loss_spec)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _logits_from_probs(p: list[list[float]]) -> torch.Tensor:
    """(1, C, 1, N) logits whose softmax is the given per-pixel probabilities p[n][c]."""
    return torch.log(torch.tensor(p, dtype=torch.float64)).T[None, :, None, :]


# ----------------------------------------------------------------------------------------------------------- losses
def test_cross_entropy_with_class_weights_by_hand():
    # 3 pixels, 3 classes; the last pixel ignored. mmseg semantics: Σ w_y · (−log p_y) / non-ignored count.
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25]]
    logits = _logits_from_probs(probs)
    target = torch.tensor([[[0, 2, 255]]])
    kept = torch.tensor(2)
    assert cross_entropy(logits, target, kept).item() == pytest.approx((-math.log(0.7) - math.log(0.6)) / 2)
    w = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    want = (1.0 * -math.log(0.7) + 3.0 * -math.log(0.6)) / 2  # divided by pixels, not by Σ weights (torch's mean)
    assert cross_entropy(logits, target, kept, weight=w).item() == pytest.approx(want)
    mask = torch.tensor([[[0.0, 1.0, 0.0]]], dtype=torch.float64)  # OHEM keeps pixel 1 only
    assert cross_entropy(logits, target, kept, w, mask).item() == pytest.approx(3.0 * -math.log(0.6) / 2)


def test_focal_by_hand():
    probs = [[0.9, 0.1], [0.4, 0.6]]
    logits = _logits_from_probs(probs)
    target = torch.tensor([[[0, 0]]])
    want = ((0.1 ** 2) * -math.log(0.9) + (0.6 ** 2) * -math.log(0.4)) / 2
    assert focal_loss(logits, target, torch.tensor(2)).item() == pytest.approx(want)
    w = torch.tensor([0.5, 2.0], dtype=torch.float64)
    assert focal_loss(logits, target, torch.tensor(2), weight=w).item() == pytest.approx(0.5 * want)
    # gamma 0 is cross-entropy
    assert focal_loss(logits, target, torch.tensor(2), gamma=0.0).item() == pytest.approx(
        cross_entropy(logits, target, torch.tensor(2)).item())


def test_dice_by_hand():
    probs = [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.5, 0.5]]
    logits = _logits_from_probs(probs)
    target = torch.tensor([[[0, 1, 1, 255]]])
    # class 0: inter 0.8, Σp 1.7, Σg 1 → (1.6 + 1) / 3.7; class 1: inter 1.1, Σp 1.3, Σg 2 → (2.2 + 1) / 4.3
    want = 1 - ((1.6 + 1) / 3.7 + (2.2 + 1) / 4.3) / 2
    assert dice_loss(logits, target).item() == pytest.approx(want)


def _lovasz_level_sets(p: np.ndarray, y: np.ndarray) -> float:
    """Independent oracle: the Lovász extension as a sum over the level sets of the errors,
    Σ_i (e_(i) − e_(i+1)) · Δ({π_1..π_i}), Δ(S) = Jaccard loss when the pixels in S are the mistakes."""
    C = p.shape[1]
    out = []
    for c in range(C):
        fg = set(np.flatnonzero(y == c).tolist())
        if not fg:
            continue
        e = np.abs((y == c).astype(float) - p[:, c])
        order = sorted(range(len(e)), key=lambda i: -e[i])
        total = 0.0
        for i in range(len(order)):
            S = set(order[:i + 1])
            inter = len(fg - S)
            union = len(fg | S)
            nxt = e[order[i + 1]] if i + 1 < len(order) else 0.0
            total += (e[order[i]] - nxt) * (1 - inter / union)
        out.append(total)
    return float(np.mean(out))


def test_lovasz_is_one_minus_iou_on_hard_predictions_and_matches_level_sets():
    # hard predictions: pred = [0, 0, 1, 1, 2], gt = [0, 1, 1, 1, 0]
    pred = [0, 0, 1, 1, 2]
    logits = torch.full((1, 3, 1, 5), -1e4, dtype=torch.float64)
    for i, c in enumerate(pred):
        logits[0, c, 0, i] = 0.0
    target = torch.tensor([[[0, 1, 1, 1, 0]]])
    # IoU class 0: TP 1 (px0), FP 1 (px1), FN 1 (px4) → 1/3; class 1: TP 2, FN 1 → 2/3; class 2 absent from gt.
    assert lovasz_softmax(logits, target).item() == pytest.approx(1 - (1 / 3 + 2 / 3) / 2)
    g = torch.Generator().manual_seed(0)
    for n, C in ((7, 3), (12, 4)):
        lg = torch.randn(1, C, 1, n, generator=g, dtype=torch.float64)
        y = torch.randint(0, C, (1, 1, n), generator=g)
        p = lg.softmax(1)[0, :, 0].T.numpy()  # (n, C)
        assert lovasz_softmax(lg, y).item() == pytest.approx(_lovasz_level_sets(p, y[0, 0].numpy()), abs=1e-12)


def test_lovasz_and_dice_ignore_255_and_give_zero_on_empty():
    lg = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.full((2, 4, 4), 255)
    for f in (lovasz_softmax, dice_loss):
        v = f(lg, t)
        assert v.item() == 0.0
        v.backward()  # a graph exists, gradient zero
    t2 = torch.randint(0, 3, (2, 4, 4))
    t3 = t2.clone()
    t3[0, 0, 0] = 255
    lg2 = lg.detach().clone()
    lg2[0, :, 0, 0] = torch.tensor([50.0, -50.0, 0.0])  # an ignored pixel's logits must not matter
    assert lovasz_softmax(lg.detach(), t3).item() == pytest.approx(lovasz_softmax(lg2, t3).item())


# ------------------------------------------------------------------------------------------------------------- OHEM
def test_ohem_selection_by_hand():
    # true-class probabilities of 6 pixels (one ignored): 0.9, 0.8, 0.65, 0.3, 0.95, (ignored)
    probs = [[0.9, 0.1], [0.2, 0.8], [0.65, 0.35], [0.7, 0.3], [0.05, 0.95], [0.5, 0.5]]
    logits = _logits_from_probs(probs)
    target = torch.tensor([[[0, 1, 0, 1, 1, 255]]])
    # thresh 0.7, min_kept 1 (× batch 1): sorted valid p = [0.3, 0.65, 0.8, 0.9, 0.95]; sorted[1] = 0.65 < 0.7, so the
    # threshold is 0.7 → keep p < 0.7: pixels 2 (0.65) and 3 (0.3).
    assert ohem_keep(logits, target, 0.7, 1)[0, 0].tolist() == [False, False, True, True, False, False]
    # min_kept 3: sorted[3] = 0.9 > 0.7 → threshold 0.9 → keep p < 0.9: pixels 1, 2, 3.
    assert ohem_keep(logits, target, 0.7, 3)[0, 0].tolist() == [False, True, True, True, False, False]
    # min_kept beyond the valid count: sorted[min(k, n − 1)] = 0.95 → all but the easiest (mmseg's "<").
    assert ohem_keep(logits, target, 0.7, 100)[0, 0].tolist() == [True, True, True, True, False, False]
    # in the criterion: CE over kept pixels / non-ignored count
    crit = SegCriterion([("ce", 1.0)], ohem_thresh=0.7, ohem_min_kept=1)
    want = (-math.log(0.65) - math.log(0.3)) / 5
    assert crit.main(logits, target, torch.tensor(5)).item() == pytest.approx(want)
    assert crit.aux(logits, target, torch.tensor(5)).item() == pytest.approx(  # aux: plain CE, no OHEM
        -(math.log(0.9) + math.log(0.8) + math.log(0.65) + math.log(0.3) + math.log(0.95)) / 5)


def test_weighted_sum_of_terms_and_parse():
    assert parse_loss_spec(["ce:1", "lovasz:0.5"]) == [("ce", 1.0), ("lovasz", 0.5)]
    assert parse_loss_spec(["dice"]) == [("dice", 1.0)]
    for bad in (["cee:1"], ["ce:x"], ["ce:-1"], ["ce:1", "ce:2"], ["ce:0"]):
        with pytest.raises(ValueError):
            parse_loss_spec(bad)
    g = torch.Generator().manual_seed(1)
    lg = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 4, (2, 5, 5), generator=g)
    kept = torch.tensor(50)
    crit = SegCriterion(parse_loss_spec(["ce:1", "focal:0.25", "dice:2", "lovasz:0.5"]))
    want = (cross_entropy(lg, t, kept) + 0.25 * focal_loss(lg, t, kept) + 2 * dice_loss(lg, t)
            + 0.5 * lovasz_softmax(lg, t))
    assert crit.main(lg, t, kept).item() == pytest.approx(want.item())
    # plain CE is bit-identical to the sum/kept train.py always used
    plain = SegCriterion()
    ref = torch.nn.functional.cross_entropy(lg, t, ignore_index=255, reduction="sum") / kept
    assert plain.plain and torch.equal(plain.main(lg, t, kept), ref)


def test_enet_class_weights_by_hand():
    counts = [600, 300, 100, 0]
    f = [0.6, 0.3, 0.1, 0.0]
    raw = [1 / math.log(1.02 + x) for x in f]
    scale = sum(a * b for a, b in zip(f, raw))
    w = enet_class_weights(counts).tolist()
    assert w == pytest.approx([r / scale for r in raw], rel=1e-6)
    assert w[3] == max(w) and sum(a * b for a, b in zip(f, w)) == pytest.approx(1.0)


def test_class_weight_flag_parsing():
    assert imbalance.parse_class_weight(["none"], 3) is None
    assert imbalance.parse_class_weight(["AUTO"], 3) == "auto"
    assert imbalance.parse_class_weight(["1", "2", "0.5"], 3) == [1.0, 2.0, 0.5]
    for bad in (["1", "2"], ["a", "b", "c"], ["-1", "1", "1"]):
        with pytest.raises(ValueError):
            imbalance.parse_class_weight(bad, 3)


# -------------------------------------------------------------------------------------------- rare-class sampling
def test_rcs_distribution_by_hand():
    # 4 images × 3 classes; pixel totals 60 / 30 / 10 → f = 0.6, 0.3, 0.1
    counts = np.array([[40, 0, 0], [10, 30, 0], [5, 0, 6], [5, 0, 4]])
    T = 0.5
    e = [math.exp((1 - f) / T) for f in (0.6, 0.3, 0.1)]
    pc = [x / sum(e) for x in e]
    assert rcs_class_probs(counts.sum(0), T) == pytest.approx(pc)
    # class 0 in all 4 images, class 1 in image 1, class 2 in images 2 and 3
    want = [pc[0] / 4, pc[0] / 4 + pc[1], pc[0] / 4 + pc[2] / 2, pc[0] / 4 + pc[2] / 2]
    w = rcs_image_weights(counts, T)
    assert w == pytest.approx(want)
    # min_pixels 5: image 3 no longer "contains" class 2
    assert rcs_image_weights(counts, T, min_pixels=5) == pytest.approx(
        [pc[0] / 4, pc[0] / 4 + pc[1], pc[0] / 4 + pc[2], pc[0] / 4])
    # T = 0.01 (DAFormer) with f spread this wide: practically always the rarest class
    assert rcs_class_probs(counts.sum(0), 0.01)[2] > 0.999
    with pytest.raises(ValueError):
        rcs_class_probs(counts.sum(0), 0.0)


def test_weighted_sampler_draws_the_distribution_and_resumes_exactly():
    w = np.array([0.1, 0.6, 0.05, 0.25])
    s = WeightedInfiniteSampler(w, seed=3, global_batch_size=4)
    keys = list(itertools.islice(iter(s), 8000))
    idx = np.array([i for _, i in keys])
    freq = np.bincount(idx, minlength=4) / len(idx)
    assert np.abs(freq - w).max() < 0.02  # ±0.02 is > 4 standard errors at n = 8000
    assert [p for p, _ in keys[:10]] == list(range(10))  # distinct augmentation keys for repeated images
    # resume: the stream from sample 12 is the tail of the full one; two ranks' slices make the 1-rank batches
    resumed = list(itertools.islice(iter(WeightedInfiniteSampler(w, seed=3, global_batch_size=4, start=12)), 40))
    assert resumed == keys[12:52]
    r0 = iter(WeightedInfiniteSampler(w, seed=3, rank=0, world_size=2, global_batch_size=4))
    r1 = iter(WeightedInfiniteSampler(w, seed=3, rank=1, world_size=2, global_batch_size=4))
    two = []
    for _ in range(10):
        two += [next(r0), next(r0), next(r1), next(r1)]
    assert two == keys[:40]
    other = [i for _, i in itertools.islice(iter(WeightedInfiniteSampler(w, seed=4, global_batch_size=4)), 50)]
    assert other != idx[:50].tolist()
    # the uniform sampler is untouched
    assert len(list(itertools.islice(iter(InfiniteSampler(4, seed=3, global_batch_size=4)), 4))) == 4


class _Masks:
    def __init__(self, masks):
        self.masks, self.image_ids = masks, [f"m{i}" for i in range(len(masks))]

    def __len__(self):
        return len(self.masks)

    def load_mask(self, i):
        return self.masks[i]


def test_class_pixel_counts_skip_ignore():
    m0 = np.array([[0, 0, 1], [255, 2, 2]], np.uint8)
    m1 = np.array([[3, 3, 255], [255, 255, 0]], np.uint8)
    assert class_pixel_counts(_Masks([m0, m1]), 4).tolist() == [[2, 1, 2, 0], [1, 0, 0, 2]]


# ------------------------------------------------------------------------------------------------------------ CBST
def test_cbst_keeps_the_top_share_of_each_class():
    # class 1: 10 pixels, confidences 0.95 .. 0.50; class 2: 4 pixels at 0.40, 0.35, 0.30, 0.20 (a rare, unsure class)
    c1 = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]
    c2 = [0.4, 0.35, 0.3, 0.2]
    labels = torch.tensor([1] * 10 + [2] * 4)
    maxp = torch.tensor(c1 + c2)
    sel = ClassBalancedSelector(3, keep=0.3)
    q = quantise(maxp)
    sel.add(labels, q)
    thr = sel.thresholds()
    low = ClassBalancedSelector.low(labels, q, thr)
    kept = (~low).tolist()
    # ceil(0.3·10) = 3 of class 1 (0.95, 0.9, 0.85); ceil(0.3·4) = 2 of class 2 (0.40, 0.35); class 0 has no pixels
    assert kept == [True] * 3 + [False] * 7 + [True, True, False, False]
    assert thr[0].item() == LEVELS
    # a global threshold of 0.6 would have kept 8 of class 1 and none of class 2
    assert int((maxp[labels == 2] >= 0.6).sum()) == 0
    # two halves merged (DDP) give the same thresholds
    a, b = ClassBalancedSelector(3, 0.3), ClassBalancedSelector(3, 0.3)
    a.add(labels[:7], q[:7])
    b.add(labels[7:], q[7:])
    a.merge([a.hist, b.hist])
    assert torch.equal(a.thresholds(), thr)
    with pytest.raises(ValueError):
        ClassBalancedSelector(3, keep=0.0)


# --------------------------------------------------------------------------------------------- rare-first IoU line
def test_iou_line_is_rarest_first():
    iou = [0.9, 0.5, None, 0.1]
    gt = [1000, 50, 0, 5]
    assert rare_first(iou, gt) == [3, 1, 0, 2]
    line = imbalance.iou_line(iou, gt)
    assert line == "Paper pack 0.100 (0.47%) | General trash 0.500 (4.74%) | Background 0.900 (94.79%) | Paper n/a (0.00%)"


# ------------------------------------------------------------------------------------------ demo and train.py path
def test_demo_imbalance_draws_competition_proportions(tmp_path):
    from data.demo import COMPETITION_ANNOTATIONS, BATTERY, CLOTHING, make_demo
    out = str(tmp_path / "imb")
    make_demo(out, train=24, val=6, test=1, extra=1, size=48, seed=1, imbalance=True)
    tr = json.load(open(os.path.join(out, "train.json")))
    va = json.load(open(os.path.join(out, "val.json")))
    name = {c["id"]: c["name"].lower() for c in tr["categories"]}
    n_tr = {}
    for a in tr["annotations"]:
        n_tr[name[a["category_id"]]] = n_tr.get(name[a["category_id"]], 0) + 1
    # nothing forced into train: Battery (63 of 26,240 draws) is absent or nearly so, Paper the most common
    assert n_tr.get("battery", 0) <= 1 and max(n_tr, key=n_tr.get) in ("paper", "plastic bag")
    va_imgs = {c: {a["image_id"] for a in va["annotations"] if name[a["category_id"]] == c}
               for c in ("battery", "clothing")}
    assert all(len(v) >= 3 for v in va_imgs.values())  # forced into validation so their IoU exists
    assert COMPETITION_ANNOTATIONS[BATTERY] == 63 and COMPETITION_ANNOTATIONS[CLOTHING] == 177


@pytest.mark.slow
@pytest.mark.heavy  # make test keeps bitwise resume: test_train.py::test_resume_is_bitwise_exact
def test_train_with_every_option_resumes_exactly(tmp_path, demo_data):
    """--balance + class weights + OHEM + all four losses train, log the rare-first IoU line, and resume bitwise."""
    data = demo_data(train=6, val=3, test=1, extra=1, size=64, seed=3, fresh=True)
    common = ["--model", "upernet_convnext_demo", "--crop-size", "64", "--batch-size", "2", "--workers", "0",
              "--warmup-iters", "1", "--lr", "1e-3", "--log-interval", "1", "--no-progress", "--iters", "3",
              "--ckpt-interval", "2", "--eval-interval", "3", "--data-root", data, "--balance", "--class-weight",
              "auto", "--ohem", "0.7", "--ohem-min-kept", "500", "--loss", "ce:1", "focal:0.5", "dice:0.5",
              "lovasz:0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(out, *extra):
        r = subprocess.run([PY, "train.py", "--out", str(tmp_path / out), *common, *extra], cwd=ROOT,
                           capture_output=True, text=True, env=env)
        assert r.returncode == (75 if "--stop-after" in extra else 0), r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    full = run("full")
    assert "rare-class sampling T=0.01" in full and "OHEM thresh 0.7" in full and "class weights" in full
    assert "IoU, rarest class first" in full
    args = json.load(open(tmp_path / "full" / "args.json"))
    assert args["rare_class_sampling"] == 0.01 and args["loss"] == ["ce:1", "focal:0.5", "dice:0.5", "lovasz:0.5"]
    rec = [json.loads(x) for x in open(tmp_path / "full" / "metrics.jsonl") if '"miou"' in x][-1]
    assert len(rec["gt_pixels"]) == 11
    run("half", "--stop-after", "2")
    run("half", "--resume")
    a = torch.load(tmp_path / "full" / "last.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(tmp_path / "half" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    r = subprocess.run([PY, "train.py", "--out", str(tmp_path / "bad"), *common, "--loss", "cee:1"], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --loss 'cee:1': unknown loss 'cee' (choose from ce, focal, dice, lovasz)"]


def test_report_iou_bars_are_rarest_first(monkeypatch):
    from types import SimpleNamespace

    from viz import report
    seen = {}

    def fake_bar_chart(labels, values, colors, title, **kw):
        seen.update(labels=labels, values=values, colors=colors, title=title)
        return np.zeros((2, 2, 3), np.uint8)

    monkeypatch.setattr(report.draw, "bar_chart", fake_bar_chart)
    ctx = SimpleNamespace(site=SimpleNamespace(image=lambda path, chart: path))
    iou = [0.9, 0.5, 0.2, None, 0.1, 0.3, 0.4, 0.6, 0.7, 0.05, 0.8]
    gt = [5000, 100, 900, 0, 40, 60, 70, 800, 700, 2, 30]
    report._iou_bars(ctx, "x.png", iou, "per-class IoU", gt)
    assert seen["labels"][:3] == ["Battery (0.03%)", "Clothing (0.39%)", "Metal (0.52%)"]
    assert seen["labels"][-1].startswith("Paper pack") and seen["values"][:3] == [0.05, 0.8, 0.1]
    assert seen["colors"][0] == report.CLASS_COLORS[9] and "rarest class first" in seen["title"]
    report._iou_bars(ctx, "x.png", iou, "per-class IoU")  # old metrics without gt_pixels: class order
    assert seen["labels"][0] == "Background" and seen["values"][0] == 0.9


def _random_teacher(tmp_path, seed: int):
    """A randomly initialised demo model in eval mode and its checkpoint, as pseudo_label.py loads one."""
    import models
    torch.manual_seed(seed)
    model = models.build_model("upernet_convnext_demo", 11).eval()
    ck = str(tmp_path / "model.pt")
    torch.save({"model": model.state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    return model, ck


@pytest.mark.parametrize("mode", ["class-balanced", "hybrid"])
def test_pseudo_label_class_balanced_keeps_each_class_top_share(tmp_path, capsys, cpu_bf16, demo_data, mode):
    """pseudo_label.py --threshold-mode class-balanced (each class's top --keep share) and hybrid (that, or a
    confidence clearing --threshold) against the teacher's own fp32 probabilities, computed here (--amp none pins
    fp32 on every CPU)."""
    import pseudo_label
    from data.coco import CocoSegDataset
    demo = demo_data(train=2, val=2, test=3, extra=0, size=64, seed=5, fresh=True)
    model, ck = _random_teacher(tmp_path, 0)
    src = CocoSegDataset(demo, os.path.join(demo, "test.json"))
    conf, lab = [], []
    with torch.no_grad():
        for i in range(len(src)):
            x = model.normalize(torch.from_numpy(src[i]["image"]).permute(2, 0, 1)[None])  # (1, 3, 64, 64)
            p = model(x).softmax(1)[0]  # (C, 64, 64): one view at the image's own size
            m, l = p.max(0)
            conf.append(m.reshape(-1))
            lab.append(l.reshape(-1))
    conf, lab = torch.cat(conf), torch.cat(lab)
    # hybrid: a global threshold that alone keeps about 40 % of the pixels, half-way between two confidences
    srt = conf.sort().values
    j = int(0.6 * len(srt))
    while srt[j + 1] - srt[j] < 1e-4:
        j += 1
    thr = float(srt[j] + srt[j + 1]) / 2
    out = tmp_path / "pl"
    keep = 0.3
    pseudo_label.main(pseudo_label.get_args_parser().parse_args(
        ["--ckpt", ck, "--data-root", demo, "--json", "test.json", "--out", str(out), "--scales", "64",
         "--workers", "0", "--threshold-mode", mode, "--keep", str(keep), "--amp", "none", "--threshold", str(thr)]))
    printed = capsys.readouterr().out
    assert "class-balanced (CBST) keep 0.3" in printed and "kept share by predicted class" in printed
    assert ("hybrid: threshold" in printed) == (mode == "hybrid")
    ds = CocoSegDataset(demo, str(out / "pseudo.json"))
    got = torch.cat([torch.from_numpy(ds[i]["mask"]).reshape(-1).long() for i in range(len(ds))])
    kept = got != 255
    assert torch.equal(got[kept], lab[kept])
    above = conf >= thr
    if mode == "hybrid":
        assert torch.equal(kept & above, above)  # every pixel over the global threshold stays
    classes = lab.unique().tolist()
    assert len(classes) >= 2
    rescued = 0
    for c in classes:
        mine = lab == c
        n, k = int(mine.sum()), math.ceil(keep * int(mine.sum()))
        extra = (kept & mine & ~above) if mode == "hybrid" else (kept & mine)  # kept by the class's share
        kc = int((kept & mine).sum())
        assert kc >= k, (c, n, k, kc)
        if mode == "class-balanced":
            assert kc <= k + max(2, n // 200), (c, n, k, kc)  # ties at 1/65535 may add a few
        else:  # the share's pixels are the class's k most confident; those below thr come on top of the global ones
            assert int(extra.sum()) <= max(0, k - int((mine & above).sum())) + max(2, n // 200), (c, n, k, kc)
            rescued += int(extra.sum())
        if kc < n:
            assert conf[kept & mine].min() >= conf[~kept & mine].max() - 2e-5  # the most confident are the kept
    if mode == "hybrid":
        assert rescued > 0  # some class had fewer than 30 % of its pixels over the threshold: the case it is for
    info = json.load(open(out / "pseudo.json"))["info"]
    assert info["threshold_mode"] == mode and info["keep"] == 0.3 and len(info["class_thresholds"]) == 11


def test_pseudo_label_align_matches_hand_computed_distribution_alignment(tmp_path, capsys, cpu_bf16, demo_data):
    """pseudo_label.py --align train.json against distribution alignment computed here from the teacher's own fp32
    probabilities: w_c = labelled share of c (train.json's masks) / mean probability of c over the labelled images,
    1 for a class with no labelled pixels; labels = argmax of w·p renormalised, kept where that clears --threshold."""
    import pseudo_label
    from data.coco import CocoSegDataset
    demo = demo_data(train=2, val=2, test=3, extra=0, size=64, seed=5, fresh=True)
    model, ck = _random_teacher(tmp_path, 0)
    src = CocoSegDataset(demo, os.path.join(demo, "test.json"))
    train = CocoSegDataset(demo, os.path.join(demo, "train.json"))
    prior = np.zeros(11)
    for i in range(len(train)):
        m = train.load_mask(i)
        prior += np.bincount(m[m != 255].reshape(-1), minlength=11)[:11]
    with torch.no_grad():
        probs = [model(model.normalize(torch.from_numpy(src[i]["image"]).permute(2, 0, 1)[None])).softmax(1)[0]
                 for i in range(len(src))]  # (C, 64, 64) each: one view at the image's own size
    mean = torch.stack([p.double().sum((1, 2)) for p in probs]).sum(0)  # (C,)
    share, pred = torch.from_numpy(prior / prior.sum()), mean / mean.sum()
    w = torch.where(share > 0, share / pred, torch.ones(11, dtype=torch.float64))
    assert (share == 0).any() and (w[share > 0] - 1).abs().max() > 0.5  # an absent class, and a real reweighting
    q = [p.double() * w.view(-1, 1, 1) for p in probs]
    q = [x / x.sum(0, keepdim=True) for x in q]
    conf = torch.cat([x.max(0).values.reshape(-1) for x in q]).float()
    lab = torch.cat([x.argmax(0).reshape(-1) for x in q])
    plain = torch.cat([p.argmax(0).reshape(-1) for p in probs])
    assert (lab != plain).float().mean() > 0.05  # the alignment moves pixels between classes here
    thr = float(conf.median())
    out = tmp_path / "pl"
    pseudo_label.main(pseudo_label.get_args_parser().parse_args(
        ["--ckpt", ck, "--data-root", demo, "--json", "test.json", "--out", str(out), "--scales", "64",
         "--workers", "0", "--amp", "none", "--threshold", str(thr), "--align", "train.json"]))
    printed = capsys.readouterr().out
    assert "distribution alignment (labelled share / predicted share)" in printed
    ds = CocoSegDataset(demo, str(out / "pseudo.json"))
    got = torch.cat([torch.from_numpy(ds[i]["mask"]).reshape(-1).long() for i in range(len(ds))])
    kept = got != 255
    clear = (conf - thr).abs() > 1e-4  # the threshold's own neighbourhood may go either way in float32
    assert torch.equal(kept[clear], (conf >= thr)[clear])
    assert torch.equal(got[kept], lab[kept])
    info = json.load(open(out / "pseudo.json"))["info"]
    assert info["align"]["json"].endswith("train.json")
    assert list(info["align"]["weights"].values()) == pytest.approx(w.tolist(), rel=1e-3)


def test_pseudo_label_align_two_ranks_equal_one(tmp_path, demo_data):
    """torchrun, 2 ranks with DataLoader workers: each rank's first pass sums its shard's probabilities and the ranks
    share them, so --align (with hybrid selection's class thresholds, also over every rank) writes the same labels and
    weights as one process."""
    import cv2
    demo = demo_data(train=2, val=2, test=5, extra=0, size=64, seed=7, fresh=True)
    _, ck = _random_teacher(tmp_path, 1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["pseudo_label.py", "--ckpt", ck, "--data-root", demo, "--json", "test.json", "--workers", "1",
              "--amp", "none", "--flip", "--threshold-mode", "hybrid", "--keep", "0.5", "--align", "train.json"]
    tr = [os.path.join(os.path.dirname(PY), "torchrun"), "--standalone", "--nproc_per_node", "2"]
    outs = {}
    for name, launcher in (("one", [PY]), ("two", tr)):
        out = tmp_path / name
        r = subprocess.run([*launcher, *common, "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.count("distribution alignment") == 1  # printed by rank 0 only
        outs[name] = json.load(open(out / "pseudo.json"))
        outs[name]["masks"] = [cv2.imread(str(out / im["mask_file"]), cv2.IMREAD_UNCHANGED)
                               for im in outs[name]["images"]]
    one, two = outs["one"], outs["two"]
    assert [im["file_name"] for im in one["images"]] == [im["file_name"] for im in two["images"]]
    assert len(one["masks"]) == 5 and all(np.array_equal(a, b) for a, b in zip(one["masks"], two["masks"]))
    w1, w2 = one["info"]["align"]["weights"], two["info"]["align"]["weights"]
    assert w1.keys() == w2.keys() and all(w1[k] == pytest.approx(w2[k], rel=1e-6) for k in w1)
    assert max(abs(v - 1) for v in w1.values()) > 0.1


def test_makefile_imbalanced_demo_and_pseudo_args(tmp_path):
    """make train DATA_ROOT=demo_imbalanced uses the demo recipe and generates the data; PSEUDO_ARGS reaches
    pseudo_label.py (dry runs: nothing is executed)."""
    def dry(*a):
        r = subprocess.run(["make", "-n", "-B", *a], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout
    out = dry("train", "DATA_ROOT=demo_imbalanced", "EXP=" + str(tmp_path / "x"))
    assert "data.demo --out demo_imbalanced --imbalance" in out
    assert "--data-root demo_imbalanced" in out and "--iters 3000" in out and "--crop-size 128" in out
    real = dry("train", "DATA_ROOT=" + str(tmp_path), "EXP=" + str(tmp_path / "x"))
    assert "--crop-size 128" not in real and "data.demo" not in real  # real data: the recipe's defaults
    out = dry("pseudo", "DATA_ROOT=demo_imbalanced", "EXP=" + str(tmp_path / "x"), "ROUNDS=1",
              "PSEUDO_ARGS=--threshold-mode class-balanced --keep 0.5", "PSEUDO_INIT=teacher")
    assert "--threshold-mode class-balanced --keep 0.5" in out
    assert "round${r}_control" in out and "--controls" in out  # a teacher-initialised student gets its control
    out = dry("pseudo", "EXP=" + str(tmp_path / "x"), "ROUNDS=1", "PSEUDO_CONTROL=0", "PSEUDO_INIT=teacher")
    assert "_control" not in out and "--controls" not in out
    for init in ([], ["PSEUDO_INIT=none"]):  # the default: afresh, round 0 is the control
        out = dry("pseudo", "EXP=" + str(tmp_path / "x"), "ROUNDS=1", *init)
        assert "--init" not in out and "_control" not in out and "round0; done" in out
        assert "--threshold-mode hybrid --keep 0.8" in out  # the label-scarce table's selection
    for recipe, want in (("offline", True), ("online", False)):  # make semi: the table's best offline arm, Chaw
        out = dry("semi", "EXP=" + str(tmp_path / "x"), "UNLABELLED=extra.json", "SEMI_RECIPE=" + recipe)
        assert ("--threshold-mode hybrid --keep 0.8 --align train.json" in out) == want  # aligned hybrid labels
        student = [ln for ln in out.splitlines() if "--pseudo-json" in ln]  # the labels as a pool, weak views
        assert bool(student) == want and all("--aug-strong-color 0 --aug-strong-gray 0 --aug-strong-blur 0 "
                                             "--aug-strong-cutout 0 --aug-strong-cutmix 0 --semi-share 0.5" in ln
                                             for ln in student)
    # the recipe, the student's flags and its views are separate variables: setting one drops none of the others
    out = dry("semi", "EXP=" + str(tmp_path / "x"), "UNLABELLED=extra.json", "SEMI_STUDENT_ARGS=--semi-share 0.25",
              "TRAIN_ARGS=--iters 7")
    assert "--aug-strong-cutmix 0 --semi-share 0.25" in out and "--iters 7" in out and "--align train.json" in out
    out = dry("semi", "EXP=" + str(tmp_path / "x"), "UNLABELLED=extra.json", "SEMI_VIEWS=strong")
    assert "--pseudo-json" in out and "--aug-strong" not in out and "--semi-share 0.5" in out


def _fake_run(root, name, iters, miou, iou, finished=True):
    d = root / name
    d.mkdir()
    (d / "args.json").write_text(json.dumps({"iters": iters}))
    last = iters if finished else iters // 2
    (d / "metrics.jsonl").write_text(json.dumps({"iter": last, "miou": miou, "iou": iou}) + "\n")


def test_imbalance_table(tmp_path, capsys, monkeypatch):
    """bench/imbalance_table.py (the README table): --balance mean/range and each round against its own control,
    checked against hand-computed values; an unfinished run reads "not run"."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import imbalance_table
    iou = lambda battery, metal: [0.9, 0.8, 0.8, 0.8, metal, 0.8, 0.8, 0.8, 0.8, battery, 0.7]  # noqa: E731
    _fake_run(tmp_path, "plain", 100, 0.60, iou(0.0, 0.1))
    _fake_run(tmp_path, "balance_s0", 100, 0.70, iou(0.4, 0.5))
    _fake_run(tmp_path, "balance_s1", 100, 0.74, iou(0.6, 0.5))
    _fake_run(tmp_path, "balance_s2", 100, 0.75, iou(0.5, 0.3), finished=False)  # resumed later: not counted
    _fake_run(tmp_path, "pl_control", 100, 0.65, iou(0.0, 0.2))
    _fake_run(tmp_path, "pl_global", 100, 0.64, iou(0.0, 0.2))
    _fake_run(tmp_path, "pl_cbst_fresh", 100, 0.62, iou(0.0, 0.2))
    _fake_run(tmp_path, "pl_global_fresh", 100, 0.65, iou(0.0, 0.2))  # +0.05 over plain: beyond the spread
    _fake_run(tmp_path, "pl_bal_control", 100, 0.71, iou(0.4, 0.5))
    _fake_run(tmp_path, "pl_bal_cbst", 100, 0.73, iou(0.5, 0.5))
    imbalance_table.main(["--exp", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| plain CE | 0.6000 | 0.000 | 0.700 | 0.100 | 0.000 Battery |" in out
    assert "| --balance, seed 2 | not run |" in out
    # mean (range) of the 2 finished seeds: mIoU 0.72 (0.70–0.74), Battery 0.5 (0.4–0.6), lowest 0.4 / 0.5
    assert ("| **--balance, mean (range) of 2 seeds** | 0.7200 (0.7000–0.7400) | 0.500 (0.400–0.600) | "
            "0.700 (0.700–0.700) | 0.500 (0.500–0.500) | 0.450 (0.400–0.500) |") in out
    assert "plain teacher, student from it), global: 0.6400 vs control 0.6500 (-0.0100: no gain)" in out
    # a gain no larger than the seeds' spread (0.74 − 0.70 = 0.04) is not called a gain
    assert ("plain teacher, student afresh), cbst: 0.6200 vs control 0.6000 (+0.0200: above the control, but within "
            "the 2 seeds' spread 0.0400)") in out
    assert "--balance teacher, student from it), cbst: 0.7300 vs control 0.7100 (+0.0200: above" in out
    assert "student afresh), global: 0.6500 vs control 0.6000 (+0.0500: a gain)" in out
    assert "pl_cbst vs" not in out and out.count("pseudo-label round") == 4  # rounds without a run or control: none
