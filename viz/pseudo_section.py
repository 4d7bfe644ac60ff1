"""The report's pseudo-label section: pseudo_label.py's settings, the share of each class and of ignored pixels,
and a gallery of the labels over their images."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from data.classes import IGNORE_INDEX, NUM_CLASSES
from viz import ReportError
from viz.report import CLASS_COLORS, Ctx, class_chips, pct, photo_panel, pick
from viz.site import Item, bar, class_label, esc, gallery, json_block, legend_html, table


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
