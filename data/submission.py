"""The competition submission CSV (SPEC §2): write it streaming and atomically, read it back, validate it.

    python -m data.submission runs/x/submission.csv --json DATA_ROOT/test.json     # exit 0 valid, 2 + reason

Each row: image_id (the COCO file_name), then a 256×256 label map as 65,536 space-separated class ids, row-major.
The map is the full-resolution prediction resized with nearest neighbour (cv2.INTER_NEAREST, as the competition's
baseline did): a label map must never be resized bilinearly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Iterator

import cv2
import numpy as np

from data.classes import NUM_CLASSES
from data.io import publish

HEADER = "image_id,PredictionString"
SUB_SIZE = 256
_N = SUB_SIZE * SUB_SIZE


def to_submission_map(labels: np.ndarray) -> np.ndarray:
    """(H, W) label map → (256, 256) uint8 by nearest neighbour."""
    labels = np.ascontiguousarray(labels.astype(np.uint8))
    if labels.shape == (SUB_SIZE, SUB_SIZE):
        return labels
    return cv2.resize(labels, (SUB_SIZE, SUB_SIZE), interpolation=cv2.INTER_NEAREST)


def format_row(image_id: str, sub_map: np.ndarray) -> str:
    if sub_map.shape != (SUB_SIZE, SUB_SIZE):
        raise ValueError(f"{image_id}: submission map must be {SUB_SIZE}x{SUB_SIZE}, got {sub_map.shape}")
    if "," in image_id or "\n" in image_id:
        raise ValueError(f"{image_id!r}: image_id cannot hold a comma or newline in the CSV")
    return image_id + "," + " ".join(map(str, sub_map.reshape(-1).tolist())) + "\n"


class SubmissionWriter:
    """Streams rows into a temp file beside the target; `close()` renames it into place (never half-written)."""

    def __init__(self, path: str):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".csv", dir=folder)
        self.f = os.fdopen(fd, "w", buffering=1 << 20)
        self.f.write(HEADER + "\n")
        self.rows = 0

    def write(self, image_id: str, labels: np.ndarray) -> None:
        self.f.write(format_row(image_id, to_submission_map(labels)))
        self.rows += 1

    def write_line(self, line: str) -> None:
        self.f.write(line)
        self.rows += 1

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        publish(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


class OrderedSubmission:
    """Rows in the COCO file's image order, for a prediction stream that may lack some images.

    An image that got no prediction (skipped with --skip-invalid: unreadable or corrupt) still needs its row, or the
    whole file is rejected: it gets an all-background (class 0) row, and ``filled`` lists it. Predictions must arrive
    in the JSON's order (the dataset's order is the JSON's, minus skipped images)."""

    def __init__(self, path: str, expected: list[str]):
        self.writer, self.expected, self.pos = SubmissionWriter(path), expected, 0
        self.filled: list[str] = []
        self._background = format_row("x", np.zeros((SUB_SIZE, SUB_SIZE), np.uint8))[1:]  # ",0 0 ... 0\n"

    def _advance_to(self, image_id: str) -> None:
        while self.pos < len(self.expected) and self.expected[self.pos] != image_id:
            self._fill(self.expected[self.pos])
        if self.pos == len(self.expected):
            raise ValueError(f"prediction for {image_id!r} is out of the JSON's order or not in it")
        self.pos += 1

    def _fill(self, image_id: str) -> None:
        self.writer.write_line(image_id + self._background)
        self.filled.append(image_id)
        self.pos += 1

    def write(self, image_id: str, labels: np.ndarray) -> None:
        self._advance_to(image_id)
        self.writer.write(image_id, labels)

    def write_line(self, line: str) -> None:
        self._advance_to(line.partition(",")[0])
        self.writer.write_line(line)

    def close(self) -> None:
        while self.pos < len(self.expected):
            self._fill(self.expected[self.pos])
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class SubmissionError(ValueError):
    pass


def expected_ids(json_path: str) -> list[str]:
    """The image_ids a submission for ``json_path`` must list, in order (its images' file_names)."""
    try:
        with open(json_path) as f:
            images = json.load(f)["images"]
        return [im["file_name"] for im in images]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SubmissionError(f"{json_path}: cannot read its images list ({e})") from None


def iter_submission(path: str) -> Iterator[tuple[int, str, np.ndarray]]:
    """Yield (line number, image_id, (256, 256) uint8) per row; raises SubmissionError naming file and line."""
    if not os.path.isfile(path):
        raise SubmissionError(f"{path}: no such file")
    with open(path) as f:
        head = f.readline().rstrip("\r\n")
        if head != HEADER:
            raise SubmissionError(f"{path}:1: header must be exactly {HEADER!r}, got {head[:60]!r}")
        for ln, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                raise SubmissionError(f"{path}:{ln}: empty line")
            image_id, sep, pred = line.partition(",")
            if not sep:
                raise SubmissionError(f"{path}:{ln}: no comma between image_id and PredictionString")
            parts = pred.split(" ")
            if len(parts) != _N:
                raise SubmissionError(f"{path}:{ln} ({image_id}): {len(parts)} values, expected {_N}")
            try:
                arr = np.array(parts, dtype=np.int64)
            except ValueError:
                bad = next(p for p in parts if not p.lstrip("-").isdigit())
                raise SubmissionError(f"{path}:{ln} ({image_id}): non-integer value {bad!r}") from None
            if arr.min() < 0 or arr.max() >= NUM_CLASSES:
                raise SubmissionError(f"{path}:{ln} ({image_id}): class id out of range 0..{NUM_CLASSES - 1} "
                                      f"(min {arr.min()}, max {arr.max()})")
            yield ln, image_id, arr.astype(np.uint8).reshape(SUB_SIZE, SUB_SIZE)


def read_submission(path: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for ln, image_id, m in iter_submission(path):
        if image_id in out:
            raise SubmissionError(f"{path}:{ln}: duplicate image_id {image_id}")
        out[image_id] = m
    return out


def validate(path: str, json_path: str) -> int:
    """Check header, ids and order against the COCO JSON, and every row's values. Returns the row count."""
    expected = expected_ids(json_path)
    n = 0
    for ln, image_id, _ in iter_submission(path):
        if n >= len(expected):
            raise SubmissionError(f"{path}:{ln}: extra row {image_id!r}; {json_path} has {len(expected)} images")
        if image_id != expected[n]:
            raise SubmissionError(f"{path}:{ln}: image_id {image_id!r}, expected {expected[n]!r} "
                                  f"(row {n + 1} of {json_path})")
        n += 1
    if n != len(expected):
        raise SubmissionError(f"{path}: {n} rows, {json_path} has {len(expected)} images "
                              f"(first missing: {expected[n]!r})")
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser("python -m data.submission", description="validate a submission CSV")
    p.add_argument("csv")
    p.add_argument("--json", required=True, help="the COCO file the submission answers (test.json)")
    a = p.parse_args(argv)
    try:
        n = validate(a.csv, a.json)
    except SubmissionError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{a.csv}: valid submission, {n} rows in {a.json}'s order")


if __name__ == "__main__":
    main()
