"""Run records: args.json, metrics.jsonl, and a curves PNG drawn with OpenCV (no plotting dependency)."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from data.io import atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported for train.py)

import numpy as np


class MetricsLog:
    """Appends one JSON object per line; on resume, drops records past the resumed iteration so curves stay clean.
    A resumed run whose folder has no log (a fresh node took over rank 0) starts from `restore`, the records the
    resumed checkpoint carries."""

    def __init__(self, path: str, resume_iter: int | None = None, restore: list[dict] | None = None):
        self.path = path
        if resume_iter is None:
            return
        recs = _records(path) if os.path.exists(path) else restore
        if recs is not None:
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in recs if r.get("iter", 0) <= resume_iter))

    def write(self, rec: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        return _records(self.path) if os.path.exists(self.path) else []

    def drop_validation(self, it: int) -> None:
        """Remove the validation record of iteration `it` (one that is about to be written again)."""
        recs = self.read()
        if any(r.get("iter") == it and "miou" in r for r in recs):
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in recs
                                                 if not (r.get("iter") == it and "miou" in r)))


class StepMeter:
    """The training record between two log lines: mean losses and data wait per step, samples/s, peak memory."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.t, self.wait, self.loss, self.aux, self.n = time.perf_counter(), 0.0, 0.0, 0.0, 0

    def add(self, loss: float, aux: float, wait: float) -> None:
        self.loss, self.aux, self.wait, self.n = self.loss + loss, self.aux + aux, self.wait + wait, self.n + 1

    def record(self, it: int, samples_per_step: int, lr: float, device) -> dict:
        """The record for the steps since the last one (then starts afresh); memory: CUDA's peak allocation, or
        the process's peak RSS, in GiB."""
        import resource
        import torch
        sps = self.n * samples_per_step / (time.perf_counter() - self.t)
        mem = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        rec = {"iter": it, "loss": self.loss / self.n, "loss_aux": self.aux / self.n, "lr": lr,
               "samples_per_s": round(sps, 2), "data_wait_s": round(self.wait / self.n, 4), "mem_gb": round(mem, 3)}
        self.reset()
        return rec


def _records(path: str) -> list[dict]:
    """The log's records; a line cut short by a kill mid-append (SIGKILL, node loss) is dropped, not a crash on
    the restart."""
    out = []
    for ln in open(path):
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue
    return out


def _panel(xs: list[list[float]], ys: list[list[float]], names: list[str], title: str,
           size: tuple[int, int] = (420, 640)) -> np.ndarray:
    import cv2
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    colors = [(200, 80, 30), (30, 120, 220), (40, 160, 40), (160, 40, 160)]
    pts = [(x, y) for xx, yy in zip(xs, ys) for x, y in zip(xx, yy) if math.isfinite(y)]
    cv2.putText(img, title, (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    if not pts:
        return img
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1e-6
    L, R, T, B = 60, w - 15, 35, h - 35

    def px(x: float, y: float) -> tuple[int, int]:
        return int(L + (x - x0) / (x1 - x0) * (R - L)), int(B - (y - y0) / (y1 - y0) * (B - T))

    cv2.rectangle(img, (L, T), (R, B), (0, 0, 0), 1)
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        _, yp = px(x0, yv)
        cv2.line(img, (L, yp), (R, yp), (225, 225, 225), 1)
        cv2.putText(img, f"{yv:.3g}", (4, yp + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, f"iter {int(x0)}", (L, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, f"{int(x1)}", (R - 40, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    for i, (xx, yy, name) in enumerate(zip(xs, ys, names)):
        c = colors[i % len(colors)]
        poly = np.array([px(x, y) for x, y in zip(xx, yy) if math.isfinite(y)], np.int32)
        if len(poly) > 1:
            cv2.polylines(img, [poly], False, c, 2, cv2.LINE_AA)
        elif len(poly) == 1:
            cv2.circle(img, tuple(int(v) for v in poly[0]), 3, c, -1)
        cv2.putText(img, name, (R - 150, T + 18 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1, cv2.LINE_AA)
    return img


def plot_curves(records: list[dict], path: str) -> None:
    """Loss (train) and mIoU (val) side by side, written atomically as PNG."""
    import cv2
    tr = [r for r in records if "loss" in r]
    va = [r for r in records if "miou" in r]
    left = _panel([[r["iter"] for r in tr]] * 2, [[r["loss"] for r in tr], [r.get("loss_aux", math.nan) for r in tr]],
                  ["loss", "aux loss"], "training loss")
    right = _panel([[r["iter"] for r in va]] * 2, [[r["miou"] for r in va], [r.get("acc", math.nan) for r in va]],
                   ["val mIoU", "pixel acc"], "validation")
    img = np.concatenate([left, right], axis=1)
    ok, buf = cv2.imencode(".png", img[:, :, ::-1])
    if ok:
        atomic_write_bytes(path, buf.tobytes())
