"""The report's submission section: a competition CSV decoded, checked against test.json's order, its predicted
class shares and a gallery of its maps over their images."""
from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np

from data.classes import NUM_CLASSES
from viz import ReportError
from viz.report import CLASS_COLORS, Ctx, class_chips, pct, photo_panel, pick
from viz.site import Item, bar, class_label, esc, gallery, legend_html, table


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
