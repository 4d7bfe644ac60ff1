"""The report's data section: counts per class (data.stats), objects per image, image sizes, class co-occurrence
and a class-balanced gallery of the images with their label layers."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES
from data.stats import DataStats, dataset_stats
from viz import draw
from viz.report import CLASS_COLORS, SERIES, Ctx, class_chips, pct, photo_panel, pick
from viz.site import IMG_DIR, Item, bar, class_label, esc, figure, gallery, legend_html, table


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
