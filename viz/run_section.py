"""The report's run sections: a training run's settings, curves and per-class IoU, its checkpoint's predictions on
a JSON (scores, confusion matrix, the worst images with error maps), and several runs side by side."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Callable, Sequence

import numpy as np
import torch

from csrc import ops
from data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES
from data.coco import CocoSegDataset
from engine.dist import resolve_device
from engine.predict import apply_winograd, inference_settings, predict_view
from models import load_model
from viz import ReportError, draw
from viz.report import (SERIES, Ctx, _iou_bars, class_chips, find_json, pct, photo_panel, picture_panel,
                        read_run)
from viz.site import IMG_DIR, Item, error_legend_html, esc, figure, gallery, json_block, table


def run_sections(ctx: Ctx, run_dirs: Sequence[str], eval_json: str | None, settings,
                 worst: int) -> list[tuple[str, str, str]]:
    """One section per run (its checkpoint scored on eval_json, else its args.json's val_json, with `settings`: see
    predictor), and a comparison first when there are several."""
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
                res = evaluate_run(ctx, run, ds, ej, settings)
            except ReportError as e:  # an unloadable checkpoint costs the predictions, not the report
                print(f"warning: {e}; run {run['name']} shown without predictions", file=sys.stderr)
                run["ckpt_error"] = str(e)
        evals.append(res)
        out.append((f"run{r_i}", f"Run: {run['name']}", _run_html(ctx, r_i, run, res, ej, worst)))
    if len(runs) > 1:
        out.insert(0, ("runs", "Runs compared", _compare_html(ctx, runs, evals)))
    return out


def predictor(ckpt: str, settings) -> tuple[Callable, str]:
    """The checkpoint's single-scale prediction through engine.predict with infer.py's settings (`settings` holds
    add_amp_arg's, add_mode_args' and add_winograd_arg's flags and --device), and a line naming them.

    predict(uint8 RGB (H, W, 3), uint8 mask (H, W) or None) → (uint8 (H, W) labels, int64 (C, C) confusion matrix
    from csrc.ops.confusion_matrix, or None): the logits and the matrix infer.py --eval's single-scale score sums."""
    dev = resolve_device(settings.device)
    amp, mode = inference_settings(settings, dev)
    try:
        model = load_model(ckpt, map_location="cpu").to(dev).eval()
    except Exception as e:  # noqa: BLE001 - any load failure (format, keys, unpickling) becomes one line
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(e).strip()).splitlines()[0]  # torch bolds parts of its messages
        raise ReportError(f"{ckpt}: cannot load checkpoint ({type(e).__name__}: {first})") from None
    wino = apply_winograd([model], settings, dev, amp)

    @torch.no_grad()
    def predict(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, torch.Tensor | None]:
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(dev)  # (1, 3, H, W) uint8
        logits = predict_view(model, model.normalize(img), amp, **mode)  # (1, C, H, W)
        cm = None if mask is None else ops.confusion_matrix(
            logits, torch.from_numpy(mask)[None].to(dev), model.num_classes)  # (C, C) int64
        return logits.argmax(1)[0].to(torch.uint8).cpu().numpy(), cm

    how = (f"{mode['mode']} mode" + (f" (window {mode['crop_size']}, stride {mode['stride']})" if "crop_size" in mode
                                     else "") + f", amp {amp}, Winograd {'on' if wino else 'off'}, {dev}")
    return predict, how


def scores(cm: torch.Tensor) -> dict:
    """csrc.ops.miou's metrics of a confusion matrix for the page: per-class IoU as floats, None where the class is
    in neither ground truth nor prediction."""
    m = ops.miou(cm)
    return {"iou": [None if v != v else v for v in m["iou"].tolist()], "miou": m["miou"], "acc": m["acc"],
            "macc": m["macc"]}


def evaluate_run(ctx: Ctx, run: dict, ds, ej: str, settings) -> dict:
    """The run's checkpoint over up to max_images of the JSON (predictor): predictions, per-image scores and one
    confusion matrix over all of them (SPEC §3), so over the whole JSON its mIoU is infer.py --eval's."""
    predict, how = predictor(run["ckpt"], settings)
    n = len(ds)
    idx = list(range(n)) if n <= ctx.max_images else \
        sorted(np.random.default_rng(ctx.seed).choice(n, ctx.max_images, replace=False).tolist())
    t0 = time.time()
    cm = None
    per = []
    for k, i in enumerate(idx):
        image, gt = ds.load_image(i), ds.load_mask(i)
        pred, cm_i = predict(image, gt)
        rec = {"i": i, "pred": pred}
        if cm_i is not None:
            cm = cm_i if cm is None else cm + cm_i
            rec.update(iou=ops.miou(cm_i)["miou"], wrong=float(((gt != pred) & (gt != IGNORE_INDEX)).mean()))
        per.append(rec)
        if (k + 1) % 25 == 0:
            ctx.log(f"  {run['name']}: {k + 1}/{len(idx)} images predicted ({time.time() - t0:.0f}s)")
    ctx.log(f"run {run['name']}: {len(idx)} images of {ej} predicted in {time.time() - t0:.1f}s ({how})")
    labelled = cm is not None
    return {"ds": ds, "json": ej, "per": per, "n_total": n, "labelled": labelled, "how": how,
            "cm": cm.cpu().numpy() if labelled else None, "scores": scores(cm) if labelled else None}


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


def _eval_html(ctx: Ctx, r_i: int, run: dict, res: dict, worst: int) -> str:
    ds, per = res["ds"], res["per"]
    used = f"{len(per)} of {res['n_total']}" if len(per) < res["n_total"] else f"all {len(per)}"
    parts = [f'<h3>Predictions of {esc(os.path.basename(run["ckpt"]))} on {esc(res["json"])}</h3>'
             f'<p class="note">{used} images (--max-images), full size, single scale, as infer.py predicts them '
             f'with the same flags ({esc(res["how"])}).</p>']
    if res["scores"]:
        sc = res["scores"]
        parts.append(table(["mIoU", "pixel accuracy", "mean class accuracy"],
                           [[f"{sc['miou']:.4f}", f"{sc['acc']:.4f}", f"{sc['macc']:.4f}"]]))
        parts.append('<p class="note">One confusion matrix over all evaluated images (SPEC §3), scored as '
                     'validation and infer.py --eval score it; the per-image IoU below averages only the classes '
                     'present in that image\'s ground truth or prediction, a different number.</p>')
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
