"""COCO segmentation root → (RGB image, class-id mask, image_id), validated up front (SPEC §1).

    python -m data.coco masks --data-root R --json J --out DIR [--skip-invalid]   # one PNG label map per image
    python -m data.coco stats --data-root R --json J [--skip-invalid]              # per-class table

`masks` writes DIR/<file_name with .png> (sub-folders kept), a plain 8-bit single-channel PNG whose pixel values are
class ids, written atomically. Both commands exit 2 with `error: <file>: <what>` on the first invalid input, or with
`--skip-invalid` skip the broken image/annotation and list every skip on stderr at the end.

Mask construction (SPEC §1): an all-zero H×W map; the image's annotations sorted by COCO `area`, largest first
(stable, so ties keep file order); each painted with its class id through pycocotools (polygons, multi-polygons,
compressed RLE, iscrowd uncompressed RLE). Categories map to class ids by lower-cased name. Polygon vertices slightly
outside the image are not errors: pycocotools rasterises only the in-image part (a vertex clamp would change the
shape), so the result equals `COCO.annToMask`. An image entry may instead carry `mask_file`, a ready PNG label map
(path relative to the JSON file's directory, or absolute); it wins over annotations of that image. An image record
without width/height takes them from the file; one without `area` on an annotation is ordered by its pixel count.

What is checked when (so a bad file fails before training, not in a worker at step 10k):
- construction (JSON level, cheap): JSON missing / malformed (with line and column), duplicate image ids (per file)
  or file names (across files), duplicate annotation ids, annotation → unknown image or category, unknown category
  name, segmentation empty / malformed / polygon with < 3 points / non-finite coordinates / RLE whose size is not the
  image's or whose counts do not sum to H·W, bbox or polygon outside the image by more than max(2 px, 2% of the
  side), image or mask file missing, image header size (JPEG/PNG, read without decoding) differing from the record's
  width/height.
- on load (`__getitem__`, or at construction when `verify_images`, which defaults to `skip_invalid`): unreadable or
  corrupt image (incl. truncated JPEG), decoded size ≠ record, mask_file undecodable / wrong size / values outside
  0..10 and 255.

Mask cache cost (measured on 512×512 demo images with ~5.4 polygons each, one busy CPU core): painting a mask costs
~3.5 ms (pycocotools decode + a masked copy per annotation, ~0.6 ms each; the JPEG decode of the same image ~5 ms);
a cached mask is a row-major run-length code (uint8 value + int32 end per run, ~1,000 runs ≈ 5 KB) that expands in
~0.2 ms. The cache fills lazily in each process (a DataLoader worker paints each of its images once, then reuses
it); `warm_cache()` before the workers fork shares one copy. 3,272 competition masks ≈ 15–30 MB per process.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pycocotools.mask as mask_utils

from data.classes import CLASSES, IGNORE_INDEX, NAME_TO_ID, NUM_CLASSES
from data.io import (DecodeError, decode_image, decode_label_map, output_collisions, output_relpath, probe_size,
                     read_bytes, resolve_json, write_label_png)

log = logging.getLogger(__name__)

# A bbox or polygon vertex may lie this far outside the image (pixels, or this fraction of the side, whichever is
# larger) before it counts as "disagreeing with the image": annotation tools round and overshoot by a pixel or two.
BOX_TOL_PX = 2.0
BOX_TOL_FRAC = 0.02


class DataError(ValueError):
    """Invalid input. The message is one line: the file, the image/annotation id where there is one, the problem."""

    def __init__(self, msg: str):
        msg = str(msg)
        # A DataLoader worker's DataError reaches the main process re-raised as DataError("Caught DataError in
        # DataLoader worker process N. Original Traceback ... data.coco.DataError: <message>"): keep the message,
        # which names the file, instead of a folded traceback.
        if msg.startswith("Caught DataError") and "DataError: " in msg:
            msg = msg.rsplit("DataError: ", 1)[1]
        super().__init__(" ".join(msg.split()))  # one line, whatever was interpolated


# ----------------------------------------------------------------------------------------------------------- JSON

def load_json(path: str) -> Any:
    """Parse a JSON file; DataError naming the file (and line/column for a syntax error) otherwise."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})")
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}")


def load_coco_json(path: str) -> dict:
    """A COCO dict with an `images` list (and, if present, `annotations` and `categories` lists)."""
    d = load_json(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: top level must be a JSON object with an 'images' list")
    if not isinstance(d.get("images"), list):
        raise DataError(f"{path}: missing or non-list 'images'")
    for key in ("annotations", "categories"):
        if key in d and not isinstance(d[key], list):
            raise DataError(f"{path}: '{key}' must be a list")
    return d


def category_map(path: str, coco: dict, unknown: dict[Any, str] | None = None) -> dict[Any, int]:
    """JSON category id → class id, by lower-cased, whitespace-trimmed name (SPEC §1).

    An unknown name raises DataError naming it; with `unknown` given it is recorded there (id → name) instead and
    left out of the map, so that each of its annotations can be skipped with the name in the message.
    """
    out: dict[Any, int] = {}
    for k, c in enumerate(coco.get("categories", [])):
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise DataError(f"{path}: categories[{k}] needs an 'id' and a string 'name'")
        name = " ".join(c["name"].split()).lower()
        cid = _key(c["id"])
        if name not in NAME_TO_ID:
            if unknown is None:
                raise DataError(f"{path}: category id={c['id']} has unknown name {c['name']!r} "
                                f"(expected one of: {', '.join(CLASSES[1:])})")
            unknown[cid] = c["name"]
            continue
        if cid in out and out[cid] != NAME_TO_ID[name]:
            raise DataError(f"{path}: category id={c['id']} listed twice with different names")
        out[cid] = NAME_TO_ID[name]
    return out


def _key(v: Any) -> Any:
    # 3 and 3.0 are the same id in JSON; bools are not ids.
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _valid_id(v: Any) -> bool:
    return (isinstance(v, (int, str)) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


# ------------------------------------------------------------------------------------------------ segmentation

def rle_string_counts(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string (maskApi.c's 6-bit LEB128-like code with second-order deltas).

    Done in Python only to validate: pycocotools' decoder writes runs without bounds checks, so counts that do not
    sum to H·W would overrun or leave garbage. ValueError on a malformed string.
    """
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("RLE string ends inside a number")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"bad RLE character {s[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise ValueError("negative run length")
        counts.append(x)
    return counts


def _check_segmentation(segm: Any, h: int, w: int) -> tuple[Any, str | None]:
    """Validate a COCO segmentation against an h×w image. Returns (normalised segm, problem or None).

    Normalised: polygons as lists of floats; compressed RLE counts as bytes; uncompressed counts as a list of ints.
    """
    if isinstance(segm, list):
        if len(segm) == 0:
            return None, "empty segmentation"
        polys = []
        for j, poly in enumerate(segm):
            if not isinstance(poly, list):
                return None, ("segmentation is a flat coordinate list, not a list of polygons"
                              if isinstance(poly, (int, float)) else f"polygon {j} is not a list of numbers")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly):
                return None, f"polygon {j} has non-numeric coordinates"
            if len(poly) % 2:
                return None, f"polygon {j} has an odd number of coordinates ({len(poly)})"
            if len(poly) < 6:
                return None, f"polygon {j} has fewer than 3 points ({len(poly) // 2})"
            if not all(math.isfinite(v) for v in poly):
                return None, f"polygon {j} has non-finite coordinates"
            xs, ys = poly[0::2], poly[1::2]
            tx, ty = max(BOX_TOL_PX, BOX_TOL_FRAC * w), max(BOX_TOL_PX, BOX_TOL_FRAC * h)
            if min(xs) < -tx or max(xs) > w + tx or min(ys) < -ty or max(ys) > h + ty:
                return None, (f"polygon {j} reaches outside the {w}x{h} image "
                              f"(x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g})")
            polys.append([float(v) for v in poly])
        return polys, None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            return None, "RLE segmentation needs 'counts' and 'size'"
        size = segm["size"]
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
            return None, f"RLE size {size!r} is not [height, width]"
        if size != [h, w]:
            return None, f"RLE size {size[0]}x{size[1]} (HxW) differs from the image's {h}x{w}"
        counts = segm["counts"]
        if isinstance(counts, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
                return None, "RLE counts must be non-negative integers"
            if sum(counts) != h * w:
                return None, f"RLE counts sum to {sum(counts)}, not height*width = {h * w}"
            return {"size": [h, w], "counts": list(counts)}, None
        if isinstance(counts, (str, bytes)):
            try:
                dec = rle_string_counts(counts)
            except (ValueError, UnicodeDecodeError) as e:
                return None, f"malformed compressed RLE ({e})"
            if sum(dec) != h * w:
                return None, f"RLE counts sum to {sum(dec)}, not height*width = {h * w}"
            return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}, None
        return None, "RLE counts must be a list or a string"
    if segm is None:
        return None, "missing segmentation"
    return None, f"segmentation must be a polygon list or an RLE object, got {type(segm).__name__}"


def segm_to_rle(segm: Any, h: int, w: int) -> dict:
    """Normalised segmentation → one compressed RLE (what COCO.annToRLE does)."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, h, w)
    return segm


def segm_to_mask(segm: Any, h: int, w: int) -> np.ndarray:
    """Normalised segmentation → bool (h, w)."""
    return mask_utils.decode(segm_to_rle(segm, h, w)).astype(bool)


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

@dataclass
class _Ann:
    ann_id: Any
    class_id: int
    area: float
    segm: Any  # normalised by _check_segmentation


@dataclass
class _Entry:
    record: dict
    json_path: str
    path: str  # image file on disk
    width: int
    height: int
    anns: list[_Ann] | None  # None: unlabelled (no 'annotations' key, no mask_file)
    mask_file: str | None

    def where(self) -> str:
        return f"{self.json_path}: image id={self.record.get('id')} file_name={self.record.get('file_name')!r}"


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
        self._entries: list[_Entry] = []
        self._cache: dict[int, tuple] = {}
        seen_names: dict[str, str] = {}
        for jf in self.json_files:
            self._load_file(resolve_json(jf, data_root), seen_names)
        self.images: list[dict] = [e.record for e in self._entries]
        self.image_ids: list[str] = [e.record["file_name"] for e in self._entries]
        self.has_labels: bool = all(e.anns is not None or e.mask_file is not None for e in self._entries)
        if verify_images if verify_images is not None else skip_invalid:
            self._verify_all()
        if self.skipped:
            log.warning("skipped %d invalid inputs (see .skipped / report_skips())", len(self.skipped))

    # -- construction --------------------------------------------------------------------------------------
    def _problem(self, msg: str) -> None:
        if not self.skip_invalid:
            raise DataError(msg)
        self.skipped.append(" ".join(msg.split()))

    def _load_file(self, jf: str, seen_names: dict[str, str]) -> None:
        coco = load_coco_json(jf)
        unknown: dict[Any, str] = {}
        cats = category_map(jf, coco, unknown if self.skip_invalid else None)
        labelled = "annotations" in coco
        json_dir = os.path.dirname(os.path.abspath(jf))
        by_id: dict[Any, _Entry] = {}
        dropped_ids: set[Any] = set()  # images skipped for their own problem: their annotations go silently
        entries: list[_Entry] = []
        for k, rec in enumerate(coco["images"]):
            e = self._check_image(jf, k, rec, labelled, json_dir, by_id, seen_names)
            if e is None:
                if isinstance(rec, dict) and _valid_id(rec.get("id")):
                    dropped_ids.add(_key(rec["id"]))
                continue
            by_id[_key(rec["id"])] = e
            seen_names[rec["file_name"]] = jf
            entries.append(e)
        if labelled:
            self._load_annotations(jf, coco["annotations"], cats, unknown, by_id, dropped_ids)
        for e in entries:
            if e.anns is not None:
                e.anns.sort(key=lambda a: -a.area)  # stable: equal areas keep file order
        self._entries.extend(entries)

    def _check_image(self, jf: str, k: int, rec: Any, labelled: bool, json_dir: str,
                     by_id: dict[Any, _Entry], seen_names: dict[str, str]) -> _Entry | None:
        if not isinstance(rec, dict):
            self._problem(f"{jf}: images[{k}] is not an object")
            return None
        if "id" not in rec or not _valid_id(rec["id"]):
            self._problem(f"{jf}: images[{k}] has no valid 'id'")
            return None
        fn = rec.get("file_name")
        where = f"{jf}: image id={rec['id']} file_name={fn!r}"
        if not isinstance(fn, str) or not fn:
            self._problem(f"{where}: missing or empty 'file_name'")
            return None
        if _key(rec["id"]) in by_id:
            self._problem(f"{where}: duplicate image id {rec['id']}")
            return None
        if fn in seen_names:
            other = "this file" if seen_names[fn] == jf else seen_names[fn]
            self._problem(f"{where}: duplicate file_name (already listed in {other})")
            return None
        w, h = _key(rec.get("width")), _key(rec.get("height"))  # 512.0 is 512
        for name, v in (("width", w), ("height", h)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                self._problem(f"{where}: bad {name} {v!r}")
                return None
        path = os.path.join(self.data_root, fn)
        if not os.path.isfile(path):
            self._problem(f"{where}: image file not found: {path}")
            return None
        try:
            size = probe_size(path)
        except OSError as e:
            self._problem(f"{where}: cannot read image file {path} ({e.strerror or e})")
            return None
        if size is not None and w is not None and h is not None and size != (w, h):
            self._problem(f"{where}: record says {w}x{h} (WxH) but {path} is {size[0]}x{size[1]}")
            return None
        if w is None or h is None:  # tolerated: take the size from the file (header, else a full decode)
            if size is None:
                try:
                    img = decode_image(read_bytes(path))
                except (OSError, DecodeError) as e:
                    self._problem(f"{where}: no width/height and the image cannot be decoded: {path} ({e})")
                    return None
                size = (img.shape[1], img.shape[0])
            if (w is not None and w != size[0]) or (h is not None and h != size[1]):
                self._problem(f"{where}: record says width={w} height={h} but {path} is {size[0]}x{size[1]}")
                return None
            w, h = size
        mask_file = rec.get("mask_file")
        if mask_file is not None:
            if not isinstance(mask_file, str) or not mask_file:
                self._problem(f"{where}: 'mask_file' must be a non-empty path")
                return None
            mask_file = os.path.join(json_dir, mask_file)
            if not os.path.isfile(mask_file):
                self._problem(f"{where}: mask_file not found: {mask_file}")
                return None
        return _Entry(rec, jf, path, w, h, [] if labelled else None, mask_file)

    def _load_annotations(self, jf: str, anns: list, cats: dict[Any, int], unknown: dict[Any, str],
                          by_id: dict[Any, _Entry], dropped_ids: set[Any]) -> None:
        seen: set[Any] = set()
        for k, a in enumerate(anns):
            if not isinstance(a, dict):
                self._problem(f"{jf}: annotations[{k}] is not an object")
                continue
            aid = a.get("id", f"#{k}")
            where = f"{jf}: annotation id={aid} (image id={a.get('image_id')})"
            if "id" in a:
                if not _valid_id(a["id"]):
                    self._problem(f"{jf}: annotations[{k}] has a bad id {a['id']!r}")
                    continue
                if _key(a["id"]) in seen:
                    self._problem(f"{where}: duplicate annotation id")
                    continue
                seen.add(_key(a["id"]))
            iid = a.get("image_id")
            iid = _key(iid) if _valid_id(iid) else iid
            if iid in dropped_ids:
                continue  # its image was already reported
            e = by_id.get(iid) if _valid_id(iid) else None
            if e is None:
                self._problem(f"{where}: image_id {a.get('image_id')!r} is not in this file's images")
                continue
            cid = a.get("category_id")
            cls = cats.get(_key(cid)) if _valid_id(cid) else None
            if cls is None:
                if _valid_id(cid) and _key(cid) in unknown:
                    self._problem(f"{where}: category id={cid} has unknown name {unknown[_key(cid)]!r}")
                else:
                    self._problem(f"{where}: category_id {cid!r} is not a known category of this file")
                continue
            segm, problem = _check_segmentation(a.get("segmentation"), e.height, e.width)
            if problem is None:
                problem = self._check_bbox(a.get("bbox"), e.width, e.height)
            if problem is not None:
                self._problem(f"{where}: {problem}")
                continue
            area = a.get("area")
            if isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area) or area < 0:
                if area is not None:
                    self._problem(f"{where}: bad area {area!r}")
                    continue
                # Missing area is tolerated: the pixel count orders painting as COCO's area would.
                area = float(mask_utils.area(segm_to_rle(segm, e.height, e.width)))
            elif area > e.width * e.height + e.width + e.height:  # beyond any rounding of a full-image polygon
                self._problem(f"{where}: area {area:g} exceeds the {e.width}x{e.height} image")
                continue
            e.anns.append(_Ann(aid, cls, float(area), segm))  # type: ignore[union-attr]

    @staticmethod
    def _check_bbox(bbox: Any, w: int, h: int) -> str | None:
        if bbox is None:
            return None  # not needed for masks
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            return f"bbox {bbox!r} is not [x, y, width, height]"
        x, y, bw, bh = bbox
        if bw < 0 or bh < 0:
            return f"bbox {bbox} has a negative size"
        tx, ty = max(BOX_TOL_PX, BOX_TOL_FRAC * w), max(BOX_TOL_PX, BOX_TOL_FRAC * h)
        if x < -tx or y < -ty or x + bw > w + tx or y + bh > h + ty:
            return f"bbox {bbox} lies outside the {w}x{h} image"
        return None

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

    def _read_mask_file(self, e: _Entry) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------------------- CLI

def _mask_path(out_dir: str, file_name: str) -> str:
    return os.path.join(out_dir, output_relpath(file_name, ".png"))  # never outside out_dir, even for '..' names


def cmd_masks(args: argparse.Namespace) -> int:
    ds = CocoSegDataset(args.data_root, args.json, skip_invalid=args.skip_invalid, cache_masks=False,
                        verify_images=False)  # decoded below, once
    clash = output_collisions(ds.image_ids, ".png")
    if clash:  # the second mask would silently replace the first
        raise SystemExit(f"error: {args.json}: images {clash[0]!r} and {clash[1]!r} would share one mask file")
    written = 0
    for i in range(len(ds)):
        e = ds._entries[i]
        if not ds.is_labelled(i):
            ds._problem(f"{e.where()}: no labels (the file has no 'annotations' and the image no 'mask_file')")
            continue
        try:
            ds.load_image(i)  # a mask for an unreadable image is not a valid output
            mask = ds.load_mask(i)
        except DataError as err:
            ds._problem(str(err))
            continue
        write_label_png(_mask_path(args.out, ds.image_ids[i]), mask)  # type: ignore[arg-type]
        written += 1
    print(f"wrote {written} masks to {args.out}")
    ds.report_skips()
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    ds = CocoSegDataset(args.data_root, args.json, skip_invalid=args.skip_invalid, cache_masks=False,
                        verify_images=False)
    ann_count = np.zeros(NUM_CLASSES, np.int64)
    pixels = np.zeros(NUM_CLASSES + 1, np.int64)  # last slot: ignore (255)
    images_with = np.zeros(NUM_CLASSES, np.int64)
    sizes: Counter = Counter()
    n_anns = n_labelled = 0
    for i in range(len(ds)):
        e = ds._entries[i]
        try:
            ds.load_image(i)
            mask = ds.load_mask(i)
        except DataError as err:
            ds._problem(str(err))
            continue
        sizes[(e.width, e.height)] += 1
        if mask is None:
            continue
        n_labelled += 1
        for _, cls, _ in ds.annotations(i):
            ann_count[cls] += 1
            n_anns += 1
        hist = np.bincount(mask.ravel(), minlength=256)
        pixels[:NUM_CLASSES] += hist[:NUM_CLASSES]
        pixels[NUM_CLASSES] += hist[IGNORE_INDEX]
        images_with += hist[:NUM_CLASSES] > 0
    total = max(int(pixels.sum()), 1)
    print(f"data root {args.data_root}  json {', '.join(args.json)}")
    print(f"images {len(ds)} (labelled {n_labelled})  annotations {n_anns}")
    print("image sizes (WxH): " + ", ".join(f"{w}x{h} ×{n}" for (w, h), n in sizes.most_common()))
    print()
    print(f"{'id':>3}  {'class':<14}{'annotations':>12}{'pixel %':>10}{'images':>8}{'image %':>9}")
    for c in range(NUM_CLASSES):
        na = "-" if c == 0 else str(int(ann_count[c]))
        share_img = 100.0 * images_with[c] / max(n_labelled, 1)
        print(f"{c:>3}  {CLASSES[c]:<14}{na:>12}{100.0 * pixels[c] / total:>10.2f}{int(images_with[c]):>8}"
              f"{share_img:>9.1f}")
    if pixels[NUM_CLASSES]:
        print(f"{IGNORE_INDEX:>3}  {'(ignore)':<14}{'-':>12}{100.0 * pixels[NUM_CLASSES] / total:>10.2f}")
    ds.report_skips()
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data.coco", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, helptext in (("masks", "write one PNG label map per image"), ("stats", "per-class statistics")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--data-root", required=True, help="directory the file_names are relative to")
        s.add_argument("--json", required=True, nargs="+", help="COCO file(s), concatenated in order")
        if name == "masks":
            s.add_argument("--out", required=True, help="output directory (sub-folders of file_name kept)")
        s.add_argument("--skip-invalid", action="store_true", help="skip broken images/annotations, list them")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # skips are listed by report_skips; no duplicate warning line
    try:
        return cmd_masks(args) if args.cmd == "masks" else cmd_stats(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
