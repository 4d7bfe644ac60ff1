"""The dataset over checked COCO files: images and class-id masks, painted once and cached (SPEC §1).

Mask construction: an all-zero H×W map; the image's annotations sorted by COCO `area`, largest first (stable, so ties
keep file order); each painted with its class id through pycocotools (polygons, multi-polygons, compressed RLE,
iscrowd uncompressed RLE). An image entry may instead carry `mask_file`, a ready PNG label map; it wins over
annotations of that image.

Checked on load (`__getitem__`, or at construction when `verify_images`, which defaults to `skip_invalid`; the rest
is checked at construction, data/coco/checks.py): unreadable or corrupt image (incl. truncated JPEG), decoded size ≠
record, mask_file undecodable / wrong size / values outside 0..10 and 255.

Mask cache cost (measured on 512×512 demo images with ~5.4 polygons each, one busy CPU core): painting a mask costs
~3.5 ms (pycocotools decode + a masked copy per annotation, ~0.6 ms each; the JPEG decode of the same image ~5 ms);
a cached mask is a row-major run-length code (uint8 value + int32 end per run, ~1,000 runs ≈ 5 KB) that expands in
~0.2 ms. The cache fills lazily in each process (a DataLoader worker paints each of its images once, then reuses
it); `warm_cache()` before the workers fork shares one copy. 3,272 competition masks ≈ 15–30 MB per process.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Sequence

import numpy as np
import pycocotools.mask as mask_utils

from data.classes import IGNORE_INDEX, NUM_CLASSES
from data.coco.checks import DataError, Entry, read_coco_file, segm_to_mask, segm_to_rle
from data.io import DecodeError, decode_image, decode_label_map, read_bytes, resolve_json

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ mask cache

def _rle_encode(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    flat = mask.ravel()
    ends = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], ends))
    ends = np.concatenate((ends, [flat.size])).astype(np.int32)
    return flat[starts].copy(), ends, mask.shape  # type: ignore[return-value]


def _rle_decode(code: tuple[np.ndarray, np.ndarray, tuple[int, int]]) -> np.ndarray:
    values, ends, shape = code
    lengths = np.diff(ends, prepend=np.int32(0))
    return np.repeat(values, lengths).reshape(shape)


# ----------------------------------------------------------------------------------------------------- dataset

class CocoSegDataset:
    """Images and class-id masks of one or more COCO files over a data root (SPEC §1).

    `json_files` are concatenated in order, each found by data.io.resolve_json (as given, else under data_root).
    Items: dict(image=uint8 (H,W,3) RGB, mask=uint8 (H,W) or None when the image is unlabelled, image_id=file_name).
    Image ids are only ever dictionary keys, never list indices.
    """

    def __init__(self, data_root: str, json_files: str | Sequence[str], skip_invalid: bool = False,
                 cache_masks: bool = True, verify_images: bool | None = None):
        self.data_root = data_root
        self.json_files = [json_files] if isinstance(json_files, (str, os.PathLike)) else list(json_files)
        self.skip_invalid = skip_invalid
        self.cache_masks = cache_masks
        self.skipped: list[str] = []
        self._entries: list[Entry] = []
        self._cache: dict[int, tuple] = {}
        seen_names: dict[str, str] = {}
        for jf in self.json_files:
            self._entries += read_coco_file(resolve_json(jf, data_root), data_root, self._problem, seen_names,
                                            skip_unknown=skip_invalid)
        self.images: list[dict] = [e.record for e in self._entries]
        self.image_ids: list[str] = [e.record["file_name"] for e in self._entries]
        self.has_labels: bool = all(e.anns is not None or e.mask_file is not None for e in self._entries)
        if verify_images if verify_images is not None else skip_invalid:
            self._verify_all()
        if self.skipped:
            log.warning("skipped %d invalid inputs (see .skipped / report_skips())", len(self.skipped))

    # -- construction --------------------------------------------------------------------------------------
    def _problem(self, msg: str) -> None:
        """An invalid input: DataError, or with skip_invalid a recorded skip."""
        if not self.skip_invalid:
            raise DataError(msg)
        self.skipped.append(" ".join(msg.split()))

    def _verify_all(self) -> None:
        """Decode every image (and mask file) now, so load-time problems become skips or errors up front."""
        keep = []
        for i in range(len(self._entries)):
            try:
                self.load_image(i)
                if self._entries[i].mask_file is not None:
                    self.load_mask(i)
            except DataError as err:
                self._problem(str(err))
                continue
            keep.append(self._entries[i])
        if len(keep) != len(self._entries):
            self._entries = keep
            self._cache.clear()
            self.images = [e.record for e in keep]
            self.image_ids = [e.record["file_name"] for e in keep]
            self.has_labels = all(e.anns is not None or e.mask_file is not None for e in keep)

    # -- access ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.load_image(i), "mask": self.load_mask(i), "image_id": self.image_ids[i]}

    def index_of(self, image_id: str) -> int:
        """Position of an image by its file_name (built on first use)."""
        if not hasattr(self, "_index"):
            self._index = {fid: i for i, fid in enumerate(self.image_ids)}
        return self._index[image_id]

    def image_paths(self) -> list[str]:
        """Each image's resolved file path (the identity to compare across COCO files: ids and file_names are not)."""
        return [os.path.realpath(e.path) for e in self._entries]

    def image_size(self, i: int) -> tuple[int, int]:
        """(width, height) of image i: its record's, or its file's where the record has none."""
        e = self._entries[i]
        return e.width, e.height

    def is_labelled(self, i: int) -> bool:
        e = self._entries[i]
        return e.anns is not None or e.mask_file is not None

    def load_image(self, i: int) -> np.ndarray:
        """uint8 RGB (H, W, 3); DataError if unreadable, corrupt or not the record's size."""
        e = self._entries[i]
        try:
            data = read_bytes(e.path)
        except OSError as err:
            raise DataError(f"{e.where()}: cannot read image {e.path} ({err.strerror or err})")
        try:
            img = decode_image(data)
        except DecodeError as err:
            raise DataError(f"{e.where()}: corrupt image {e.path} ({err})")
        if img.shape[:2] != (e.height, e.width):
            raise DataError(f"{e.where()}: record says {e.width}x{e.height} (WxH) but {e.path} decodes to "
                            f"{img.shape[1]}x{img.shape[0]}")
        return img

    def load_mask(self, i: int) -> np.ndarray | None:
        """uint8 (H, W) class ids (255 allowed from mask files), or None for an unlabelled image."""
        code = self._cache.get(i)
        if code is not None:
            return _rle_decode(code)
        e = self._entries[i]
        if e.mask_file is not None:
            mask = self._read_mask_file(e)
        elif e.anns is None:
            return None
        else:
            # pycocotools decodes to a Fortran-ordered 0/1 array: painting on a Fortran canvas through a bool view
            # avoids a comparison pass and strided access (2x faster than mask[m > 0] = c).
            mask = np.zeros((e.height, e.width), np.uint8, order="F")
            for a in e.anns:
                m = mask_utils.decode(segm_to_rle(a.segm, e.height, e.width))  # (H, W) uint8 0/1, Fortran order
                np.copyto(mask, a.class_id, where=m.view(bool))
            mask = np.ascontiguousarray(mask)
        if self.cache_masks:
            self._cache[i] = _rle_encode(mask)
        return mask

    def _read_mask_file(self, e: Entry) -> np.ndarray:
        try:
            arr = decode_label_map(read_bytes(e.mask_file))  # type: ignore[arg-type]
        except OSError as err:
            raise DataError(f"{e.where()}: cannot read mask_file {e.mask_file} ({err.strerror or err})")
        except DecodeError as err:
            raise DataError(f"{e.where()}: corrupt mask_file {e.mask_file} ({err})")
        if arr.shape != (e.height, e.width):
            raise DataError(f"{e.where()}: mask_file {e.mask_file} is {arr.shape[1]}x{arr.shape[0]} (WxH), "
                            f"image is {e.width}x{e.height}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{e.where()}: mask_file {e.mask_file} has non-integer pixels ({arr.dtype})")
        vals = np.unique(arr)
        bad = [int(v) for v in vals if not (0 <= v < NUM_CLASSES or v == IGNORE_INDEX)]
        if bad:
            raise DataError(f"{e.where()}: mask_file {e.mask_file} has values {bad[:5]} outside 0..{NUM_CLASSES - 1} "
                            f"and {IGNORE_INDEX}")
        return arr.astype(np.uint8)

    def instances(self, i: int) -> list[tuple[int, np.ndarray]]:
        """(class_id, bool (H, W)) per object in painting order (largest first), for copy-paste.

        Each mask is the object's *visible* region (minus the objects painted over it), so pasting them in this order
        reproduces the source's label map on their union and never carries one object's pixels under another's
        label. Objects with nothing visible, and background (class 0) ones, are left out. For a mask_file image there
        is one instance per class present (excluding 0 and 255), largest first.
        """
        e = self._entries[i]
        if e.mask_file is not None:
            mask = self.load_mask(i)
            ids, counts = np.unique(mask, return_counts=True)  # type: ignore[arg-type]
            order = [int(c) for _, c in sorted(((-n, int(c)) for c, n in zip(ids, counts)))
                     if 0 < c < NUM_CLASSES]
            return [(c, mask == c) for c in order]  # type: ignore[operator]
        if not e.anns:
            return []
        masks = [segm_to_mask(a.segm, e.height, e.width) for a in e.anns]
        covered = np.zeros((e.height, e.width), bool)
        out: list[tuple[int, np.ndarray]] = []
        for a, m in zip(reversed(e.anns), reversed(masks)):  # later objects cover earlier ones
            vis = m & ~covered
            covered |= m
            if a.class_id != 0 and vis.any():
                out.append((a.class_id, vis))
        return out[::-1]

    def annotations(self, i: int) -> list[tuple[Any, int, float]]:
        """(annotation id, class id, area) in painting order; [] for unlabelled or mask_file images."""
        return [(a.ann_id, a.class_id, a.area) for a in (self._entries[i].anns or [])]

    def warm_cache(self) -> None:
        """Paint every mask now (e.g. in the main process before DataLoader workers fork and share it)."""
        for i in range(len(self)):
            self.load_mask(i)

    def report_skips(self, file=None) -> None:
        """Print the skip count and every skip message (stderr by default)."""
        file = file if file is not None else sys.stderr
        if not self.skipped:
            return
        print(f"skipped {len(self.skipped)} invalid input(s):", file=file)
        for m in self.skipped:
            print(f"  {m}", file=file)


def train_val_sets(data_root: str, train_json: list[str], val_json: str, skip_invalid: bool = False,
                   log=print) -> tuple["CocoSegDataset", "CocoSegDataset | None"]:
    """train.py's training and validation sets: both labelled (DataError otherwise, naming the files); validation
    images that are also training images are allowed (a final run on all data) but said, since the score is then
    not a held-out one. val_json '' means no validation (None)."""
    train = CocoSegDataset(data_root, train_json, skip_invalid=skip_invalid)
    val = CocoSegDataset(data_root, val_json, skip_invalid=skip_invalid) if val_json else None
    if not train.has_labels:
        raise DataError(f"{', '.join(map(str, train_json))}: training needs annotations (or mask_file) on every image")
    if val is not None and not val.has_labels:
        raise DataError(f"{val_json}: validation needs annotations")
    if val is not None:
        seen = set(train.image_paths())
        both = [p for p in val.image_paths() if p in seen]
        if both:
            log(f"warning: {len(both)} of {len(val)} validation images are also training images (e.g. {both[0]}): "
                f"the validation mIoU is not a held-out score")
    return train, val
