"""Saved class probabilities (infer.py --save-probs) for soft ensembles: one compact .npz per image.

Layout: DIR/<image_id with .npz>, sub-folders kept; arrays `probs` (C, h, w) as float16 or uint8 (p × 255, rounded),
`size` (H, W) of the original image. uint8 costs 1 byte per class per pixel and loses < 0.002 per probability, far
below what changes an argmax in practice; float16 is there when that matters.
"""
from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

from data.io import output_relpath, publish


def probs_path(folder: str, image_id: str) -> str:
    return os.path.join(folder, output_relpath(image_id, ".npz"))  # never outside `folder`


def save_probs(folder: str, image_id: str, probs: np.ndarray, size: tuple[int, int], dtype: str = "uint8") -> None:
    """probs (C, h, w) float in [0, 1]; written atomically."""
    if dtype == "uint8":
        arr = np.clip(np.rint(probs * 255.0), 0, 255).astype(np.uint8)
    elif dtype == "float16":
        arr = probs.astype(np.float16)
    else:
        raise ValueError(f"probs dtype must be uint8 or float16, got {dtype!r}")
    path = probs_path(folder, image_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".npz", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        np.savez(f, probs=arr, size=np.asarray(size, np.int64))
    publish(tmp, path)


def load_probs(folder: str, image_id: str) -> tuple[np.ndarray, tuple[int, int]]:
    """→ (float32 (C, h, w) probabilities, original (H, W)). Raises FileNotFoundError naming the image, ValueError
    naming the file when it is not a readable probabilities file."""
    path = probs_path(folder, image_id)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no saved probabilities for image {image_id!r}")
    try:
        with np.load(path) as z:
            p, size = z["probs"], tuple(int(v) for v in z["size"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # truncated, not an npz, other arrays
        raise ValueError(f"{path}: not a readable probabilities file ({type(e).__name__}: {e})") from None
    if p.ndim != 3 or len(size) != 2:
        raise ValueError(f"{path}: probs {p.shape} / size {size}: expected (C, h, w) and (H, W)")
    p = p.astype(np.float32) / 255.0 if p.dtype == np.uint8 else p.astype(np.float32)
    return p, size
