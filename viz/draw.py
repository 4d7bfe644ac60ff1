"""Pictures for the report, drawn with OpenCV on uint8 RGB arrays (converted to BGR only when encoded).

Colours: classes use the competition palette (SPEC §1); ignored pixels (255) are white; values that are no class at
all (11..254) are magenta so a broken label map cannot pass for background.
"""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES, PALETTE

# 256-entry lookup table, class id → RGB
LUT = np.full((256, 3), (255, 0, 255), np.uint8)
LUT[:NUM_CLASSES] = PALETTE
LUT[IGNORE_INDEX] = (255, 255, 255)

# Error-map colours (RGB). Correct background is kept apart from correct objects, or the map would be mostly "right".
ERR_RIGHT = (0, 170, 0)        # ground truth is an object and the prediction agrees
ERR_RIGHT_BG = (0, 0, 0)       # background, correctly predicted
ERR_WRONG = (230, 30, 30)      # any disagreement (missed object, false object, wrong class)
ERR_IGNORED = (150, 150, 150)  # ground truth 255: not scored
ERROR_LEGEND = (("right (object)", ERR_RIGHT), ("right (background)", ERR_RIGHT_BG),
                ("wrong", ERR_WRONG), ("ignored (255)", ERR_IGNORED))

FONT = cv2.FONT_HERSHEY_SIMPLEX
INK = (20, 20, 20)
GRID = (225, 225, 225)


def colorize(mask: np.ndarray) -> np.ndarray:
    """(H, W) label map → (H, W, 3) RGB in the palette."""
    return LUT[mask]


def mask_rgba(mask: np.ndarray) -> np.ndarray:
    """(H, W) label map → (H, W, 4) RGBA layer: background transparent, classes and ignored pixels opaque. The page
    lays it over the photo and sets its opacity with a slider."""
    rgba = np.empty(mask.shape + (4,), np.uint8)
    rgba[..., :3] = LUT[mask]
    rgba[..., 3] = np.where(mask == 0, 0, 255)
    return rgba


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the palette colour of every non-background pixel into the image: rint((1 − α)·pixel + α·colour).
    Background pixels are left as they are, so the photo stays readable."""
    out = image.copy()
    m = mask != 0
    blend = (1.0 - alpha) * image[m].astype(np.float32) + alpha * LUT[mask[m]].astype(np.float32)
    out[m] = np.rint(blend).astype(np.uint8)
    return out


def error_map(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(H, W) ground truth and prediction → (H, W, 3) RGB: right / right background / wrong / ignored (see ERR_*)."""
    assert gt.shape == pred.shape, (gt.shape, pred.shape)
    out = np.empty(gt.shape + (3,), np.uint8)
    same = gt == pred
    out[same & (gt != 0)] = ERR_RIGHT
    out[same & (gt == 0)] = ERR_RIGHT_BG
    out[~same] = ERR_WRONG
    out[gt == IGNORE_INDEX] = ERR_IGNORED
    return out


def fit(img: np.ndarray, max_side: int, label: bool = False) -> np.ndarray:
    """Shrink so the longer side is at most max_side (area filter for photos, nearest for label maps); never enlarge."""
    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1.0:
        return img
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_NEAREST if label else cv2.INTER_AREA)


def _text(img, s, org, scale=0.45, color=INK, thick=1):
    cv2.putText(img, s, org, FONT, scale, color, thick, cv2.LINE_AA)


def _text_w(s, scale=0.45, thick=1) -> int:
    return cv2.getTextSize(s, FONT, scale, thick)[0][0]


def legend(class_ids: Sequence[int] | None = None, ignore: bool = True, row_h: int = 22) -> np.ndarray:
    """A swatch-and-name legend for the given classes (all by default), plus the ignored colour."""
    ids = list(range(NUM_CLASSES)) if class_ids is None else list(class_ids)
    entries = [(f"{i} {CLASSES[i]}", tuple(int(v) for v in LUT[i])) for i in ids]
    if ignore:
        entries.append((f"{IGNORE_INDEX} ignored", (255, 255, 255)))
    w = 40 + max(_text_w(n) for n, _ in entries) + 10
    img = np.full((row_h * len(entries) + 8, w, 3), 255, np.uint8)
    for k, (name, rgb) in enumerate(entries):
        y = 4 + k * row_h
        cv2.rectangle(img, (6, y + 3), (30, y + row_h - 3), rgb, -1)
        cv2.rectangle(img, (6, y + 3), (30, y + row_h - 3), (90, 90, 90), 1)
        _text(img, name, (38, y + row_h - 7))
    return img


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-9 * step:
        out.append(round(t, 10))
        t += step
    return out


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10000:
        return f"{v / 1000:.0f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float], tuple[int, int, int]]],
               title: str, xlabel: str = "iteration", size: tuple[int, int] = (300, 560),
               y_range: tuple[float, float] | None = None) -> np.ndarray:
    """Lines (name, xs, ys, RGB) on shared axes; non-finite y values break the line. A legend sits under the title."""
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 58, 14, 30 + 16 * max(1, (len(series) + 2) // 3), 36
    _text(img, title, (left, 18), 0.5)
    for k, (name, _, _, col) in enumerate(series):
        x0, y0 = left + (k % 3) * 160, 34 + 16 * (k // 3)
        cv2.line(img, (x0, y0 - 4), (x0 + 18, y0 - 4), col, 2)
        _text(img, name, (x0 + 24, y0), 0.4)
    pts = [(x, y) for _, xs, ys, _ in series for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    pw, ph = w - left - right, h - top - bottom
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (160, 160, 160), 1)
    _text(img, xlabel, (left + pw // 2 - _text_w(xlabel, 0.4) // 2, h - 6), 0.4)
    if not pts:
        _text(img, "no data", (left + pw // 2 - 30, top + ph // 2), 0.5, (120, 120, 120))
        return img
    x_lo, x_hi = min(p[0] for p in pts), max(p[0] for p in pts)
    y_lo, y_hi = y_range if y_range else (min(p[1] for p in pts), max(p[1] for p in pts))
    if x_hi <= x_lo:  # a single validation so far
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_hi <= y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    pad = 0.04 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def px(x, y):
        return (int(round(left + (x - x_lo) / (x_hi - x_lo) * pw)), int(round(top + (y_hi - y) / (y_hi - y_lo) * ph)))

    for t in _nice_ticks(y_lo, y_hi):
        _, yy = px(x_lo, t)
        cv2.line(img, (left + 1, yy), (left + pw - 1, yy), GRID, 1)
        s = _fmt(t)
        _text(img, s, (left - 6 - _text_w(s, 0.38), yy + 4), 0.38)
    for t in _nice_ticks(x_lo, x_hi):
        xx, _ = px(t, y_lo)
        cv2.line(img, (xx, top + ph), (xx, top + ph + 4), (120, 120, 120), 1)
        s = _fmt(t)
        _text(img, s, (xx - _text_w(s, 0.38) // 2, top + ph + 17), 0.38)
    for _, xs, ys, col in series:
        run: list[tuple[int, int]] = []
        for x, y in list(zip(xs, ys)) + [(None, None)]:
            if y is not None and math.isfinite(y):
                run.append(px(x, y))
                continue
            if len(run) == 1:
                cv2.circle(img, run[0], 3, col, -1, cv2.LINE_AA)
            elif run:
                cv2.polylines(img, [np.array(run, np.int32)], False, col, 2, cv2.LINE_AA)
            run = []
        if 0 < sum(1 for y in ys if y is not None and math.isfinite(y)) <= 30:  # few points (validation): mark them
            for x, y in zip(xs, ys):
                if y is not None and math.isfinite(y):
                    cv2.circle(img, px(x, y), 3, col, -1, cv2.LINE_AA)
    return img


def bar_chart(labels: Sequence[str], values: Sequence[float | None], colors: Sequence[tuple[int, int, int]],
              title: str, fmt: str = "{:.3f}", width: int = 560, row_h: int = 22,
              max_value: float | None = None) -> np.ndarray:
    """Horizontal bars, one per label; a None value is written as 'n/a' (e.g. a class absent from the set)."""
    lw = max(_text_w(s, 0.42) for s in labels) + 16
    h = 30 + row_h * len(labels) + 8
    img = np.full((h, width, 3), 255, np.uint8)
    _text(img, title, (8, 18), 0.5)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    vmax = max_value if max_value is not None else (max(finite) if finite else 1.0)
    vmax = vmax if vmax > 0 else 1.0
    bw = width - lw - 70
    for k, (lab, v, col) in enumerate(zip(labels, values, colors)):
        y = 30 + k * row_h
        _text(img, lab, (lw - 8 - _text_w(lab, 0.42), y + row_h - 7), 0.42)
        if v is None or not math.isfinite(v):
            _text(img, "n/a", (lw + 4, y + row_h - 7), 0.42, (130, 130, 130))
            continue
        x1 = lw + int(round(bw * max(0.0, min(v, vmax)) / vmax))
        cv2.rectangle(img, (lw, y + 3), (max(lw + 1, x1), y + row_h - 3), col, -1)
        cv2.rectangle(img, (lw, y + 3), (max(lw + 1, x1), y + row_h - 3), (90, 90, 90), 1)
        _text(img, fmt.format(v), (x1 + 6, y + row_h - 7), 0.42)
    return img


def heatmap(mat: np.ndarray, labels: Sequence[str], title: str, normalize: str | None = "row",
            counts: bool = True, cell: int = 46) -> np.ndarray:
    """A square matrix as a viridis heat map; each cell shows its share in %. normalize='row': share of the row sum
    (a confusion matrix's rows are ground truth); 'diag': share of the row's diagonal (co-occurrence: of the images
    with the row class, how many also hold the column class); None: colour by raw value, cells show counts."""
    mat = np.asarray(mat, np.float64)
    n = mat.shape[0]
    row_normalize = normalize is not None
    if row_normalize:
        rs = mat.sum(1, keepdims=True) if normalize == "row" else np.diag(mat)[:, None]
        val = np.divide(mat, rs, out=np.zeros_like(mat), where=rs > 0)
    else:
        mx = mat.max()
        val = mat / mx if mx > 0 else np.zeros_like(mat)
    lw = max(_text_w(s, 0.42) for s in labels) + 14
    top = 34 + lw
    img = np.full((top + n * cell + 10, lw + n * cell + 10, 3), 255, np.uint8)
    _text(img, title, (8, 20), 0.5)
    colours = cv2.applyColorMap(np.clip(val * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)  # BGR
    colours = colours[..., ::-1]
    for i in range(n):
        for j in range(n):
            x, y = lw + j * cell, top + i * cell
            c = tuple(int(v) for v in colours[i, j])
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), c, -1)
            if counts and mat[i, j] > 0:
                if not row_normalize:
                    s = _fmt(mat[i, j])
                else:
                    s = "<1%" if val[i, j] < 0.005 else f"{100 * val[i, j]:.0f}%"
                ink = (0, 0, 0) if val[i, j] > 0.55 else (255, 255, 255)
                _text(img, s, (x + cell // 2 - _text_w(s, 0.38) // 2, y + cell // 2 + 5), 0.38, ink)
    for i, lab in enumerate(labels):
        _text(img, lab, (lw - 6 - _text_w(lab, 0.42), top + i * cell + cell // 2 + 5), 0.42)
    # column labels: drawn horizontally on a strip, then rotated to read bottom-up
    strip = np.full((cell * n, lw, 3), 255, np.uint8)
    for j, lab in enumerate(labels):
        _text(strip, lab, (6, j * cell + cell // 2 + 5), 0.42)
    img[34:34 + lw, lw:lw + n * cell] = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


def hstack(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Side-by-side panels of equal height on a white background."""
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((h, w, 3), 255, np.uint8)
    x = 0
    for p in panels:
        out[:p.shape[0], x:x + p.shape[1]] = p[..., :3]
        x += p.shape[1] + gap
    return out


def encode(img: np.ndarray, ext: str, quality: int = 85) -> bytes:
    """RGB / RGBA / gray uint8 → encoded bytes ('.jpg' or '.png')."""
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ValueError(f"cannot encode {img.shape} as {ext}")
    return buf.tobytes()
