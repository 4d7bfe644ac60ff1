"""The report's sections: data, runs, submission, pseudo-labels, augmentation preview. Each builder writes its
pictures through a SiteWriter and returns (anchor, heading, HTML); visualize.py strings them into one page.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES
from data.io import resolve_json
from data.rcs import rare_first
from viz import ReportError, draw
from viz.site import (IMG_DIR, Item, Panel, SiteWriter, bar, class_label, error_legend_html, esc, figure,
                      gallery, json_block, legend_html, safe_name, table)
from data.stats import DataStats, dataset_stats
from viz.stats import confusion, scores

CLASS_COLORS = [tuple(int(v) for v in draw.LUT[c]) for c in range(NUM_CLASSES)]
SERIES = [(30, 110, 220), (220, 90, 30), (40, 160, 60), (150, 50, 170), (120, 120, 120), (200, 40, 90)]


@dataclass
class Ctx:
    site: SiteWriter
    data_root: str
    thumb: int = 512          # longest side of the pictures written (the page shows them smaller; click enlarges)
    max_images: int = 200     # per gallery, and per evaluated run
    seed: int = 0
    log: Callable[[str], None] = print


# ------------------------------------------------------------------------------------------------ helpers
def find_json(path: str, data_root: str, what: str = "--json") -> str:
    """data.io.resolve_json's file, else the same file name under the data root: a run made on another machine
    records absolute paths in its args.json."""
    for p in (resolve_json(path, data_root), os.path.join(data_root, os.path.basename(path))):
        if os.path.isfile(p):
            return p
    raise ReportError(f"{path}: no such file ({what}; also looked under {data_root})")


def check_inputs(data_root: str, jsons: Sequence[str], runs: Sequence[str], csv: str | None,
                 pseudo: str | None) -> list[str]:
    """Fail fast, before any slow work, on inputs that are not there. Returns the resolved JSON paths."""
    if not os.path.isdir(data_root):
        raise ReportError(f"{data_root}: no such data root (--data-root)")
    out = [find_json(j, data_root) for j in jsons]
    for r in runs:
        read_run(r)
    if csv and not os.path.isfile(csv):
        raise ReportError(f"{csv}: no such file (--csv)")
    if pseudo and not os.path.isfile(os.path.join(pseudo, "pseudo.json")):
        raise ReportError(f"{os.path.join(pseudo, 'pseudo.json')}: no such file (--pseudo must be a "
                          "pseudo_label.py output folder)")
    return out


def pick(classes: Sequence[Sequence[int]], n: int, seed: int) -> list[int]:
    """Up to n indices, class-balanced: rarest class first, each object class gets up to n / 20 images that hold it,
    the rest drawn at random; returned in data-set order. With n ≥ len(classes), everything."""
    total = len(classes)
    if n >= total:
        return list(range(total))
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    chosen: set[int] = set()
    per_class = max(1, n // (2 * (NUM_CLASSES - 1)))
    holders = {c: [int(i) for i in order if c in classes[i]] for c in range(1, NUM_CLASSES)}
    for c in sorted(holders, key=lambda c: len(holders[c])):
        for i in holders[c][:per_class]:
            if len(chosen) < n:
                chosen.add(i)
    for i in order:
        if len(chosen) >= n:
            break
        chosen.add(int(i))
    return sorted(chosen)


def photo_panel(ctx: Ctx, sub: str, k: int, image_id: str, image: np.ndarray, mask: np.ndarray | None,
                label: str = "", suffix: str = "") -> Panel:
    """Write a photo (JPEG) and, when given, its label layer (RGBA PNG of the same size); return the Panel."""
    stem = f"{IMG_DIR}/{sub}/{k:04d}_{safe_name(image_id)}{suffix}"
    img = draw.fit(image, ctx.thumb)
    base = ctx.site.image(stem + ".jpg", img)
    layer = None
    if mask is not None:
        m = draw.fit(mask, ctx.thumb, label=True)
        if m.shape != img.shape[:2]:
            raise ValueError(f"{image_id}: mask {mask.shape} does not match image {image.shape[:2]}")
        layer = ctx.site.image(stem + "_m.png", draw.mask_rgba(m))
    return Panel(base, img.shape[1], img.shape[0], layer, label)


def picture_panel(ctx: Ctx, sub: str, k: int, image_id: str, pic: np.ndarray, label: str, suffix: str) -> Panel:
    """A finished picture (e.g. an error map) as a PNG panel without a layer."""
    stem = f"{IMG_DIR}/{sub}/{k:04d}_{safe_name(image_id)}{suffix}"
    pic = draw.fit(pic, ctx.thumb, label=True)
    return Panel(ctx.site.image(stem + ".png", pic), pic.shape[1], pic.shape[0], None, label)


def class_chips(ids: Sequence[int]) -> str:
    return "".join(f'<span class="cl">{class_label(c)}</span>' for c in ids if 0 < c < NUM_CLASSES)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


# ------------------------------------------------------------------------------------------------ data
def data_section(ctx: Ctx, ds, json_names: Sequence[str]) -> tuple[str, str, str]:
    t0 = time.time()
    st = dataset_stats(ds)
    ctx.log(f"data: {st.n_images} images, {st.n_annotations} annotations ({time.time() - t0:.1f}s)")
    parts = [f'<p>{esc(", ".join(json_names))}: <b>{st.n_images}</b> images ({st.n_labelled} labelled), '
             f'<b>{st.n_annotations}</b> annotations, '
             f'{(st.n_annotations / max(st.n_labelled, 1)):.2f} objects per labelled image.</p>']
    parts.append(legend_html() + f'<p class="note"><a href="{ctx.site.image(f"{IMG_DIR}/legend.png", draw.legend())}">'
                 'legend as a picture</a></p>')
    if st.n_labelled:
        parts.append(_class_table(st))
        parts.append(_objects_and_sizes(ctx, st))
        obj = list(range(1, NUM_CLASSES))
        hm = draw.heatmap(st.cooc[np.ix_(obj, obj)], CLASSES[1:], "class co-occurrence", normalize="diag")
        parts.append("<h3>Class co-occurrence</h3>" + figure(ctx.site.image(f"{IMG_DIR}/cooccurrence.png", hm),
                     "cell = share of the images holding the row class that also hold the column class"))
        parts.append("<details><summary>co-occurrence counts (images)</summary>" + table(
            ["", *CLASSES[1:]], [[CLASSES[i], *[int(st.cooc[i, j]) for j in obj]] for i in obj]) + "</details>")
    else:
        parts.append('<p class="note">No annotations in this JSON (a test set): statistics need labels.</p>')
    idx = pick(st.classes, ctx.max_images, ctx.seed)
    items = []
    for k, i in enumerate(idx):
        (w, h), mask = ds.image_size(i), ds.load_mask(i)
        panel = photo_panel(ctx, "data", k, ds.image_ids[i], ds.load_image(i), mask)
        n_obj = len(ds.annotations(i)) if mask is not None else 0
        items.append(Item([panel], f'<b>{esc(ds.image_ids[i])}</b> {w}×{h}, {n_obj} objects'
                          f'<br>{class_chips(st.classes[i])}', st.classes[i], {"objects": n_obj}))
    note = (f"all {len(idx)} images" if len(idx) == st.n_images else
            f"{len(idx)} of {st.n_images} images, sampled so that every class shows up (rarest classes first)")
    parts.append(f'<h3>Gallery</h3><p class="note">{note}. Click a picture to enlarge it. The class filter matches '
                 f'annotated classes.</p>')
    parts.append(gallery("data", items, [("objects", "most objects first", -1),
                                         ("objects", "fewest objects first", 1)]))
    return "data", "Data", "".join(parts)


def _class_table(st: DataStats) -> str:
    px_total = max(int(st.pixels.sum()), 1)
    amax, imax = max(int(st.ann_count.max()), 1), max(int(st.images_with.max()), 1)
    pmax = max(float(st.pixels[:NUM_CLASSES].max()) / px_total, 1e-12)
    rows = []
    for c in range(NUM_CLASSES):
        share = st.pixels[c] / px_total
        n_img = f"{int(st.images_with[c])} ({pct(st.images_with[c] / max(st.n_labelled, 1))})"
        rows.append([c, class_label(c),
                     bar(st.ann_count[c], amax, CLASS_COLORS[c], str(int(st.ann_count[c]))) if c else "–",
                     bar(st.images_with[c], imax, CLASS_COLORS[c], n_img) if c else "–",
                     bar(share, pmax, CLASS_COLORS[c], pct(share))])
    if st.pixels[NUM_CLASSES]:
        rows.append([IGNORE_INDEX, "ignored", "–", "–", pct(st.pixels[NUM_CLASSES] / px_total)])
    return ("<h3>Classes</h3>" + table(["id", "class", "annotations", "images with class", "pixel share"], rows) +
            '<p class="note">Pixel share is of the painted masks (objects on top win overlaps, SPEC §1); '
            'annotations count every object, hidden or not.</p>')


def _objects_and_sizes(ctx: Ctx, st: DataStats) -> str:
    objs = np.array(st.objects)
    lo, cap = int(objs.min()), int(min(objs.max(), objs.min() + 30))
    hist = np.bincount(np.minimum(objs, cap), minlength=cap + 1)[lo:]
    labels = [str(v) if v < cap or objs.max() <= cap else f"{cap}+" for v in range(lo, cap + 1)]
    chart = draw.bar_chart(labels, hist.tolist(), [SERIES[0]] * len(labels), "labelled images by object count",
                           fmt="{:.0f}", row_h=16)
    sizes = [[f"{w}×{h}", n, pct(n / st.n_images)] for (w, h), n in st.sizes.most_common(12)]
    more = f'<p class="note">…and {len(st.sizes) - 12} more sizes.</p>' if len(st.sizes) > 12 else ""
    return ('<h3>Objects per image and image sizes</h3><div class="figs">' +
            figure(ctx.site.image(f"{IMG_DIR}/objects_per_image.png", chart),
                   f"min {objs.min()}, median {np.median(objs):g}, mean {objs.mean():.2f}, max {objs.max()}") +
            "<div>" + table(["size (W×H)", "images", "share"], sizes) + more + "</div></div>")


# ------------------------------------------------------------------------------------------------ runs
def read_run(run_dir: str) -> dict:
    if not os.path.isdir(run_dir):
        raise ReportError(f"{run_dir}: no such run directory (--run)")
    mpath = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(mpath):
        raise ReportError(f"{mpath}: no such file (is {run_dir} a training run directory?)")
    recs = []
    with open(mpath) as f:
        for ln, line in enumerate(f, 1):
            if line.strip():
                try:
                    recs.append(json.loads(line))
                except ValueError as e:
                    raise ReportError(f"{mpath}:{ln}: not JSON ({e})") from None
    args = {}
    apath = os.path.join(run_dir, "args.json")
    if os.path.isfile(apath):
        try:
            with open(apath) as f:
                args = json.load(f)
        except ValueError as e:
            raise ReportError(f"{apath}: not JSON ({e})") from None
    ckpt = next((os.path.join(run_dir, n) for n in ("best.pt", "last.pt")
                 if os.path.isfile(os.path.join(run_dir, n))), None)
    train = [r for r in recs if "loss" in r]
    val = [r for r in recs if "miou" in r]
    best = max(val, key=lambda r: r["miou"] if r["miou"] is not None else -1) if val else None
    return {"dir": run_dir, "name": os.path.normpath(run_dir), "args": args, "train": train,
            "val": val, "best": best, "ckpt": ckpt}


def predictor(ckpt: str, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 RGB (H, W, 3) → uint8 (H, W) argmax labels from a checkpoint, one image at a time (the eval preset:
    full size, padded to a multiple of 32 with the mean colour, cropped back)."""
    import torch
    import torch.nn.functional as F

    from models import load_model

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    try:
        model = load_model(ckpt, map_location=dev)
    except Exception as e:  # noqa: BLE001 - any load failure (format, keys, unpickling) becomes one line
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(e).strip()).splitlines()[0]  # torch bolds parts of its messages
        raise ReportError(f"{ckpt}: cannot load checkpoint ({type(e).__name__}: {first})") from None
    model.eval()

    @torch.inference_mode()
    def predict(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(dev)  # (1, 3, H, W) uint8
        x = model.normalize(x)  # (1, 3, H, W) float
        ph, pw = -h % 32, -w % 32
        x = F.pad(x, (0, pw, 0, ph))  # zero = the mean colour after normalisation
        logits = model(x)[:, :, :h, :w]  # (1, C, H, W)
        return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()

    return predict


def run_sections(ctx: Ctx, run_dirs: Sequence[str], eval_json: str | None, device: str,
                 worst: int) -> list[tuple[str, str, str]]:
    from data.coco import CocoSegDataset

    runs = [read_run(d) for d in run_dirs]
    out = []
    evals = []
    for r_i, run in enumerate(runs):
        ej = eval_json or run["args"].get("val_json") or ""
        res = None
        if run["ckpt"] and ej:
            ej = find_json(ej, ctx.data_root, "--eval-json / args.json val_json")
            ds = CocoSegDataset(ctx.data_root, [ej])
            try:
                res = evaluate_run(ctx, run, ds, ej, device)
            except ReportError as e:  # an unloadable checkpoint costs the predictions, not the report
                print(f"warning: {e}; run {run['name']} shown without predictions", file=sys.stderr)
                run["ckpt_error"] = str(e)
        evals.append(res)
        out.append((f"run{r_i}", f"Run: {run['name']}", _run_html(ctx, r_i, run, res, ej, worst)))
    if len(runs) > 1:
        out.insert(0, ("runs", "Runs compared", _compare_html(ctx, runs, evals)))
    return out


def evaluate_run(ctx: Ctx, run: dict, ds, ej: str, device: str) -> dict:
    """The run's checkpoint over up to max_images of the JSON: predictions, per-image scores, one set confusion
    matrix (SPEC §3)."""
    predict = predictor(run["ckpt"], device)
    n = len(ds)
    idx = list(range(n)) if n <= ctx.max_images else \
        sorted(np.random.default_rng(ctx.seed).choice(n, ctx.max_images, replace=False).tolist())
    t0 = time.time()
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    per = []
    for k, i in enumerate(idx):
        image, gt = ds.load_image(i), ds.load_mask(i)
        pred = predict(image)
        rec = {"i": i, "pred": pred}
        if gt is not None:
            cm_i = confusion(gt, pred)
            cm += cm_i
            rec.update(iou=scores(cm_i)["miou"], wrong=float(((gt != pred) & (gt != IGNORE_INDEX)).mean()))
        per.append(rec)
        if (k + 1) % 25 == 0:
            ctx.log(f"  {run['name']}: {k + 1}/{len(idx)} images predicted ({time.time() - t0:.0f}s)")
    ctx.log(f"run {run['name']}: {len(idx)} images of {ej} predicted in {time.time() - t0:.1f}s")
    return {"ds": ds, "json": ej, "per": per, "n_total": n, "labelled": ds.has_labels,
            "cm": cm, "scores": scores(cm) if ds.has_labels else None}


def _curves(ctx: Ctx, r_i: int, run: dict) -> str:
    tr, va = run["train"], run["val"]
    figs = []
    if tr:
        xs = [r["iter"] for r in tr]
        s = [("loss", xs, [r.get("loss") for r in tr], SERIES[0])]
        if any(r.get("loss_aux") is not None for r in tr):
            s.append(("loss_aux", xs, [r.get("loss_aux") for r in tr], SERIES[1]))
        figs.append(figure(ctx.site.image(f"{IMG_DIR}/run{r_i}/loss.png", draw.line_chart(s, "training loss")),
                           "training loss"))
        if any(r.get("lr") is not None for r in tr):
            figs.append(figure(ctx.site.image(f"{IMG_DIR}/run{r_i}/lr.png", draw.line_chart(
                [("lr", xs, [r.get("lr") for r in tr], SERIES[3])], "learning rate")), "learning rate"))
        if any(r.get("samples_per_s") is not None for r in tr):
            figs.append(figure(ctx.site.image(f"{IMG_DIR}/run{r_i}/speed.png", draw.line_chart(
                [("samples/s", xs, [r.get("samples_per_s") for r in tr], SERIES[2])], "throughput")), "throughput"))
    if va:
        xs = [r["iter"] for r in va]
        s = [(k, xs, [r.get(k) for r in va], c) for k, c in (("miou", SERIES[0]), ("acc", SERIES[1]),
                                                             ("macc", SERIES[2])) if any(k in r for r in va)]
        figs.append(figure(ctx.site.image(f"{IMG_DIR}/run{r_i}/val.png", draw.line_chart(s, "validation")),
                           "validation mIoU, pixel accuracy, mean class accuracy"))
    if not figs:
        return '<p class="note">metrics.jsonl holds no records yet.</p>'
    return '<h3>Curves</h3><div class="figs">' + "".join(figs) + "</div>"


def _iou_bars(ctx: Ctx, path: str, iou: Sequence[float | None], title: str,
              gt_pixels: Sequence[float] | None = None) -> str:
    """Per-class IoU bars; with the ground truth's pixel counts, rarest class first (the classes that decide mIoU)."""
    order = rare_first(iou, gt_pixels) if gt_pixels is not None else list(range(len(iou)))
    if gt_pixels is not None:
        total = float(sum(gt_pixels)) or 1.0
        names = [f"{CLASSES[c]} ({100 * float(gt_pixels[c]) / total:.2f}%)" for c in order]
        title += ", rarest class first (share of pixels)"
    else:
        names = [CLASSES[c] for c in order]
    chart = draw.bar_chart(names, [None if iou[c] is None else float(iou[c]) for c in order],
                           [CLASS_COLORS[c] for c in order], title, max_value=1.0)
    return figure(ctx.site.image(path, chart), title)


def _run_html(ctx: Ctx, r_i: int, run: dict, res: dict | None, ej: str, worst: int) -> str:
    a = run["args"]
    parts = [f'<p class="note">{esc(run["dir"])}</p>']
    keys = [k for k in ("model", "iters", "batch_size", "crop_size", "lr", "amp", "data_root", "train_json",
                        "val_json") if k in a]
    if keys:
        parts.append(table(["setting", "value"], [[k, json.dumps(a[k]) if not isinstance(a[k], str) else a[k]]
                                                  for k in keys]))
        parts.append("<details><summary>all of args.json</summary>" + json_block(a) + "</details>")
    else:
        parts.append('<p class="note">no args.json in the run directory.</p>')
    best = run["best"]
    if best:
        parts.append(f"<p>best validation mIoU <b>{best['miou']:.4f}</b> at iteration {best['iter']} "
                     f"({len(run['val'])} validations, last at {run['val'][-1]['iter']}).</p>")
    parts.append(_curves(ctx, r_i, run))
    figs = []
    if best and best.get("iou"):
        figs.append(_iou_bars(ctx, f"{IMG_DIR}/run{r_i}/iou_best_val.png", best["iou"],
                              f"per-class IoU, validation at iteration {best['iter']}", best.get("gt_pixels")))
    if res and res["scores"]:
        sc = res["scores"]
        figs.append(_iou_bars(ctx, f"{IMG_DIR}/run{r_i}/iou_eval.png", sc["iou"],
                              f"per-class IoU, {os.path.basename(res['json'])} ({len(res['per'])} images)",
                              np.asarray(res["cm"]).sum(1).tolist()))
    if figs:
        parts.append('<h3>Per-class IoU</h3><div class="figs">' + "".join(figs) + "</div>")
    if not run["ckpt"]:
        parts.append('<p class="warn">no best.pt or last.pt in the run directory: no predictions.</p>')
    elif run.get("ckpt_error"):
        parts.append(f'<p class="warn">no predictions: {esc(run["ckpt_error"])}</p>')
    elif not ej:
        parts.append('<p class="warn">no JSON to evaluate on: pass --eval-json (args.json has no val_json).</p>')
    if res:
        parts.append(_eval_html(ctx, r_i, run, res, worst))
    return "".join(parts)


def _eval_html(ctx: Ctx, r_i: int, run: dict, res: dict, worst: int) -> str:
    ds, per = res["ds"], res["per"]
    used = f"{len(per)} of {res['n_total']}" if len(per) < res["n_total"] else f"all {len(per)}"
    parts = [f'<h3>Predictions of {esc(os.path.basename(run["ckpt"]))} on {esc(res["json"])}</h3>'
             f'<p class="note">{used} images (--max-images), full size, single scale, on this machine.</p>']
    if res["scores"]:
        sc = res["scores"]
        parts.append(table(["mIoU", "pixel accuracy", "mean class accuracy"],
                           [[f"{sc['miou']:.4f}", f"{sc['acc']:.4f}", f"{sc['macc']:.4f}"]]))
        parts.append('<p class="note">One confusion matrix over all evaluated images (SPEC §3); the per-image IoU '
                     'below averages only the classes present in that image\'s ground truth or prediction, a '
                     'different number.</p>')
        hm = draw.heatmap(res["cm"], CLASSES, "confusion matrix (rows: ground truth, columns: prediction)")
        parts.append(figure(ctx.site.image(f"{IMG_DIR}/run{r_i}/confusion.png", hm),
                            "row-normalised: each row sums to 100% of that class's ground-truth pixels"))
        parts.append("<details><summary>confusion matrix counts (pixels)</summary>" + table(
            ["GT \\ pred", *CLASSES], [[CLASSES[i], *res["cm"][i].tolist()] for i in range(NUM_CLASSES)]) +
            "</details>")
        chosen = sorted((p for p in per if "iou" in p), key=lambda p: p["iou"])[:worst]
        title = f"Worst {len(chosen)} images by per-image IoU"
    else:
        chosen = per[:worst]
        title = f"Predictions ({len(chosen)} images; the JSON has no labels, so no scores)"
    items = []
    for k, p in enumerate(chosen):
        i = p["i"]
        image_id, image, gt, pred = ds.image_ids[i], ds.load_image(i), ds.load_mask(i), p["pred"]
        sub = f"run{r_i}/worst"
        panels = []
        if gt is not None:
            panels.append(photo_panel(ctx, sub, k, image_id, image, gt, "ground truth", "_gt"))
        panels.append(photo_panel(ctx, sub, k, image_id, image, pred, "prediction", "_pr"))
        cls = sorted(set(np.unique(pred).tolist()) | (set(np.unique(gt).tolist()) if gt is not None else set()))
        keys = {}
        cap = f"<b>{esc(image_id)}</b>"
        if gt is not None:
            panels.append(picture_panel(ctx, sub, k, image_id, draw.error_map(gt, pred), "errors", "_err"))
            keys = {"iou": round(p["iou"], 5), "wrong": round(p["wrong"], 5)}
            cap += f" IoU {p['iou']:.3f}, {pct(p['wrong'])} pixels wrong"
            missed = sorted(set(np.unique(gt).tolist()) - set(np.unique(pred).tolist()) - {0, IGNORE_INDEX})
            extra = sorted(set(np.unique(pred).tolist()) - set(np.unique(gt).tolist()) - {0})
            if missed:
                cap += f"<br>missed: {class_chips(missed)}"
            if extra:
                cap += f"<br>predicted, not there: {class_chips(extra)}"
        else:
            cap += f"<br>{class_chips(cls)}"
        items.append(Item(panels, cap, [c for c in cls if c < NUM_CLASSES], keys))
    sorts = [("iou", "lowest IoU first", 1), ("iou", "highest IoU first", -1),
             ("wrong", "most wrong pixels first", -1)] if res["scores"] else []
    parts.append(f"<h3>{title}</h3>" + (error_legend_html() if res["scores"] else "") +
                 gallery(f"run{r_i}", items, sorts))
    return "".join(parts)


def _compare_html(ctx: Ctx, runs: list[dict], evals: list[dict | None]) -> str:
    rows = []
    for run, res in zip(runs, evals):
        b = run["best"]
        sc = res["scores"] if res else None
        ious = sc["iou"] if sc else (b or {}).get("iou") or [None] * NUM_CLASSES
        rows.append([run["name"], run["args"].get("model", "?"),
                     f"{b['miou']:.4f} @ {b['iter']}" if b else "–",
                     f"{sc['miou']:.4f}" if sc else "–",
                     *[f"{v:.3f}" if v is not None else "–" for v in ious]])
    s = [(run["name"], [r["iter"] for r in run["val"]], [r.get("miou") for r in run["val"]], SERIES[k % len(SERIES)])
         for k, run in enumerate(runs)]
    chart = ctx.site.image(f"{IMG_DIR}/runs_miou.png", draw.line_chart(s, "validation mIoU"))
    return (table(["run", "model", "best val mIoU @ iter", "mIoU here", *CLASSES], rows) +
            '<p class="note">Per-class IoU from this report\'s evaluation where it ran, else the best validation '
            'record.</p>' + figure(chart, "validation mIoU of each run"))


# ------------------------------------------------------------------------------------------------ submission
def submission_section(ctx: Ctx, csv_path: str) -> tuple[str, str, str]:
    from data.io import DecodeError, read_image
    from data.submission import SubmissionError, iter_submission

    if not os.path.isfile(csv_path):
        raise ReportError(f"{csv_path}: no such file (--csv)")
    t0 = time.time()
    ids: list[str] = []
    hist = np.zeros(NUM_CLASSES, np.int64)
    rows_with = np.zeros(NUM_CLASSES, np.int64)
    keep: list[tuple[str, np.ndarray, list[int]]] = []
    try:
        for _, image_id, m in iter_submission(csv_path):
            h = np.bincount(m.ravel(), minlength=NUM_CLASSES)
            hist += h
            rows_with += h > 0
            ids.append(image_id)
            keep.append((image_id, m, [int(c) for c in np.flatnonzero(h)]))
    except SubmissionError as e:
        raise ReportError(str(e)) from None
    ctx.log(f"submission: {len(ids)} rows decoded ({time.time() - t0:.1f}s)")
    parts = [f"<p>{esc(csv_path)}: <b>{len(ids)}</b> rows of 256×256 class maps.</p>"]
    test_json = os.path.join(ctx.data_root, "test.json")
    if os.path.isfile(test_json):
        with open(test_json) as f:
            want = [im["file_name"] for im in json.load(f).get("images", [])]
        if want == ids:
            parts.append(f'<p class="note">Rows match {esc(test_json)} in order ({len(want)} images).</p>')
        else:
            k = next((j for j, (a, b) in enumerate(zip(ids, want)) if a != b), min(len(ids), len(want)))
            parts.append(f'<p class="warn">Rows differ from {esc(test_json)} ({len(ids)} rows, {len(want)} images); '
                         f'first difference at row {k + 1}: {esc(ids[k] if k < len(ids) else "(none)")} vs '
                         f'{esc(want[k] if k < len(want) else "(none)")}.</p>')
    total = max(int(hist.sum()), 1)
    pmax = max(float(hist.max()) / total, 1e-12)
    parts.append(table(["id", "class", "predicted pixel share", "rows with class"],
                       [[c, class_label(c), bar(hist[c] / total, pmax, CLASS_COLORS[c], pct(hist[c] / total)),
                         f"{int(rows_with[c])} ({pct(rows_with[c] / max(len(ids), 1))})"]
                        for c in range(NUM_CLASSES)]))
    items = []
    for k, j in enumerate(pick([c for _, _, c in keep], ctx.max_images, ctx.seed)):
        image_id, m, cls = keep[j]
        path = os.path.join(ctx.data_root, image_id)
        try:
            image = read_image(path)
        except FileNotFoundError:
            raise ReportError(f"{path}: no such image (CSV row {j + 2} of {csv_path}; is --data-root right?)") from None
        except (OSError, DecodeError) as e:
            raise ReportError(f"{path}: cannot read image ({e})") from None
        small = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
        fg = float((m != 0).mean())
        items.append(Item([photo_panel(ctx, "submission", k, image_id, small, m)],
                          f"<b>{esc(image_id)}</b> {pct(fg)} objects<br>{class_chips(cls)}", cls,
                          {"row": j + 1, "fg": round(fg, 5), "classes": len([c for c in cls if c])}))
    parts.append(f'<h3>Predictions</h3><p class="note">{len(items)} of {len(ids)} rows, the photo squeezed to '
                 f'256×256 like the map.</p>' + legend_html(ignore=False) +
                 gallery("submission", items, [("fg", "most object pixels first", -1),
                                               ("classes", "most classes first", -1)]))
    return "submission", "Submission", "".join(parts)


# ------------------------------------------------------------------------------------------------ pseudo-labels
def pseudo_section(ctx: Ctx, pseudo_dir: str) -> tuple[str, str, str]:
    from data.coco import CocoSegDataset

    pj = os.path.join(pseudo_dir, "pseudo.json")
    if not os.path.isfile(pj):
        raise ReportError(f"{pj}: no such file (--pseudo must be a pseudo_label.py output directory)")
    with open(pj) as f:
        try:
            meta = {k: v for k, v in json.load(f).items() if k not in ("images", "annotations", "categories")}
        except ValueError as e:
            raise ReportError(f"{pj}: not JSON ({e})") from None
    ds = CocoSegDataset(ctx.data_root, [pj])
    t0 = time.time()
    pixels = np.zeros(256, np.int64)
    classes, ignored = [], []
    for i in range(len(ds)):
        m = ds.load_mask(i)
        if m is None:
            raise ReportError(f"{pj}: image {ds.image_ids[i]} has no mask_file")
        h = np.bincount(m.ravel(), minlength=256)
        pixels += h
        classes.append([c for c in range(1, NUM_CLASSES) if h[c]])
        ignored.append(float(h[IGNORE_INDEX] / m.size))
    ctx.log(f"pseudo-labels: {len(ds)} masks read ({time.time() - t0:.1f}s)")
    total = max(int(pixels.sum()), 1)
    parts = [f"<p>{esc(pj)}: <b>{len(ds)}</b> pseudo-labelled images; <b>{pct(pixels[IGNORE_INDEX] / total)}</b> "
             f"of pixels ignored (255, below the confidence threshold).</p>"]
    if meta:
        parts.append("<details open><summary>pseudo.json settings</summary>" + json_block(meta) + "</details>")
    pmax = max(float(pixels[:NUM_CLASSES].max()) / total, 1e-12)
    rows = [[c, class_label(c), bar(pixels[c] / total, pmax, CLASS_COLORS[c], pct(pixels[c] / total)),
             sum(c in cl for cl in classes)] for c in range(NUM_CLASSES)]
    rows.append([IGNORE_INDEX, "ignored", bar(pixels[IGNORE_INDEX] / total, pmax, (200, 200, 200),
                                               pct(pixels[IGNORE_INDEX] / total)), sum(x > 0 for x in ignored)])
    parts.append(table(["id", "class", "pixel share", "images"], rows))
    items = []
    for k, i in enumerate(pick(classes, ctx.max_images, ctx.seed)):
        items.append(Item([photo_panel(ctx, "pseudo", k, ds.image_ids[i], ds.load_image(i), ds.load_mask(i))],
                          f"<b>{esc(ds.image_ids[i])}</b> {pct(ignored[i])} ignored<br>{class_chips(classes[i])}",
                          classes[i], {"ignored": round(ignored[i], 5), "classes": len(classes[i])}))
    parts.append('<h3>Pseudo-labels</h3><p class="note">Ignored pixels are white.</p>' + legend_html() +
                 gallery("pseudo", items, [("ignored", "most ignored first", -1), ("ignored", "least ignored first", 1),
                                           ("classes", "most classes first", -1)]))
    return "pseudo", "Pseudo-labels", "".join(parts)


# ------------------------------------------------------------------------------------------------ augmentations
def aug_section(ctx: Ctx, ds, n: int, crop_size: int) -> tuple[str, str, str]:
    from data.transforms import DatasetSource, build_transform

    labelled = [i for i in range(len(ds)) if ds.is_labelled(i)]
    if not labelled:
        return "aug", "Augmentation preview", '<p class="note">The JSON has no labels to augment.</p>'
    plain = build_transform("train", crop_size)
    cp = build_transform("train", crop_size, copy_paste_source=DatasetSource(ds), copy_paste_p=1.0)
    rng = np.random.default_rng(ctx.seed)
    idx = sorted(rng.choice(labelled, size=min(n, len(labelled)), replace=False).tolist())
    items = []
    for k, i in enumerate(idx):
        image, mask, image_id = ds.load_image(i), ds.load_mask(i), ds.image_ids[i]
        a_img, a_mask = plain(image, mask, np.random.default_rng([ctx.seed, i, 0]))
        c_img, c_mask = cp(image, mask, np.random.default_rng([ctx.seed, i, 1]))
        panels = [photo_panel(ctx, "aug", k, image_id, image, mask, "original", "_o"),
                  photo_panel(ctx, "aug", k, image_id, a_img, a_mask, "train preset", "_a"),
                  photo_panel(ctx, "aug", k, image_id, c_img, c_mask, "train + copy-paste", "_c")]
        cls = sorted({int(c) for m in (mask, a_mask, c_mask) for c in np.unique(m) if 0 < c < NUM_CLASSES})
        items.append(Item(panels, f"<b>{esc(image_id)}</b><br>{class_chips(cls)}", cls,
                          {"objects": len(ds.annotations(i))}))
    return "aug", "Augmentation preview", (
        f'<p class="note">{len(items)} samples through the train preset at crop {crop_size} (seed {ctx.seed}), '
        f'without and with copy-paste (p=1, so every sample shows it). White = 255 (padding, blended '
        f'copy-paste borders).</p><details><summary>pipelines</summary><pre class="note">{esc(repr(plain))}\n\n'
        f'{esc(repr(cp))}</pre></details>' + legend_html() +
        gallery("aug", items, [("objects", "most objects first", -1)]))
