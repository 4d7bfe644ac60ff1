"""A COCO file read and checked strictly into entries (SPEC §1): every problem is found here, at construction, and
named in one line (file, image or annotation id, what), so a bad file fails before training, not in a worker at
step 10k.

Checked: JSON missing / malformed (with line and column), duplicate image ids (per file) or file names (across
files), duplicate annotation ids, annotation → unknown image or category, unknown category name, segmentation empty /
malformed / polygon with < 3 points / non-finite coordinates / RLE whose size is not the image's or whose counts do
not sum to H·W, bbox or polygon outside the image by more than max(2 px, 2% of the side), image or mask file missing,
image header size (JPEG/PNG, read without decoding) differing from the record's width/height.

Categories map to class ids by lower-cased name. Polygon vertices slightly outside the image are not errors:
pycocotools rasterises only the in-image part (a vertex clamp would change the shape), so the painted mask equals
`COCO.annToMask`. An image record without width/height takes them from the file; an annotation without `area` is
ordered by its pixel count. An image record's `mask_file` is a path relative to its JSON file's directory.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pycocotools.mask as mask_utils

from data.classes import CLASSES, NAME_TO_ID
from data.io import DecodeError, decode_image, probe_size, read_bytes

Problem = Callable[[str], None]  # one invalid input's one-line message: raise DataError, or record a skip

# A bbox or polygon vertex may lie this far outside the image (pixels, or this fraction of the side, whichever is
# larger) before it counts as "disagreeing with the image": annotation tools round and overshoot by a pixel or two.
BOX_TOL_PX = 2.0
BOX_TOL_FRAC = 0.02


class DataError(ValueError):
    """Invalid input. The message is one line: the file, the image/annotation id where there is one, the problem."""

    def __init__(self, msg: str):
        msg = str(msg)
        # A DataLoader worker's DataError reaches the main process re-raised as DataError("Caught DataError in
        # DataLoader worker process N. Original Traceback ... data.coco.checks.DataError: <message>"): keep the message,
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


# ------------------------------------------------------------------------------------------------ files


@dataclass
class Ann:
    ann_id: Any
    class_id: int
    area: float
    segm: Any  # normalised by _check_segmentation


@dataclass
class Entry:
    record: dict
    json_path: str
    path: str  # image file on disk
    width: int
    height: int
    anns: list[Ann] | None  # None: unlabelled (no 'annotations' key, no mask_file)
    mask_file: str | None

    def where(self) -> str:
        return f"{self.json_path}: image id={self.record.get('id')} file_name={self.record.get('file_name')!r}"


def read_coco_file(jf: str, data_root: str, problem: Problem, seen_names: dict[str, str],
                   skip_unknown: bool = False) -> list[Entry]:
    """One COCO file checked into its entries (images with their annotations, largest area first).

    Each invalid image or annotation goes to `problem` (which raises DataError, or records a skip and returns);
    `seen_names` maps every file_name already read, from any file, to its JSON. `skip_unknown`: an unknown category
    name is a problem of each of its annotations instead of the whole file."""
    coco = load_coco_json(jf)
    unknown: dict[Any, str] = {}
    cats = category_map(jf, coco, unknown if skip_unknown else None)
    labelled = "annotations" in coco
    json_dir = os.path.dirname(os.path.abspath(jf))
    by_id: dict[Any, Entry] = {}
    dropped_ids: set[Any] = set()  # images skipped for their own problem: their annotations go silently
    entries: list[Entry] = []
    for k, rec in enumerate(coco["images"]):
        e = _check_image(jf, k, rec, labelled, json_dir, by_id, seen_names, data_root, problem)
        if e is None:
            if isinstance(rec, dict) and _valid_id(rec.get("id")):
                dropped_ids.add(_key(rec["id"]))
            continue
        by_id[_key(rec["id"])] = e
        seen_names[rec["file_name"]] = jf
        entries.append(e)
    if labelled:
        _load_annotations(jf, coco["annotations"], cats, unknown, by_id, dropped_ids, problem)
    for e in entries:
        if e.anns is not None:
            e.anns.sort(key=lambda a: -a.area)  # stable: equal areas keep file order
    return entries


def _check_image(jf: str, k: int, rec: Any, labelled: bool, json_dir: str, by_id: dict[Any, Entry],
                 seen_names: dict[str, str], data_root: str, problem: Problem) -> Entry | None:
    if not isinstance(rec, dict):
        problem(f"{jf}: images[{k}] is not an object")
        return None
    if "id" not in rec or not _valid_id(rec["id"]):
        problem(f"{jf}: images[{k}] has no valid 'id'")
        return None
    fn = rec.get("file_name")
    where = f"{jf}: image id={rec['id']} file_name={fn!r}"
    if not isinstance(fn, str) or not fn:
        problem(f"{where}: missing or empty 'file_name'")
        return None
    if _key(rec["id"]) in by_id:
        problem(f"{where}: duplicate image id {rec['id']}")
        return None
    if fn in seen_names:
        other = "this file" if seen_names[fn] == jf else seen_names[fn]
        problem(f"{where}: duplicate file_name (already listed in {other})")
        return None
    w, h = _key(rec.get("width")), _key(rec.get("height"))  # 512.0 is 512
    for name, v in (("width", w), ("height", h)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            problem(f"{where}: bad {name} {v!r}")
            return None
    path = os.path.join(data_root, fn)
    if not os.path.isfile(path):
        problem(f"{where}: image file not found: {path}")
        return None
    try:
        size = probe_size(path)
    except OSError as e:
        problem(f"{where}: cannot read image file {path} ({e.strerror or e})")
        return None
    if size is not None and w is not None and h is not None and size != (w, h):
        problem(f"{where}: record says {w}x{h} (WxH) but {path} is {size[0]}x{size[1]}")
        return None
    if w is None or h is None:  # tolerated: take the size from the file (header, else a full decode)
        if size is None:
            try:
                img = decode_image(read_bytes(path))
            except (OSError, DecodeError) as e:
                problem(f"{where}: no width/height and the image cannot be decoded: {path} ({e})")
                return None
            size = (img.shape[1], img.shape[0])
        if (w is not None and w != size[0]) or (h is not None and h != size[1]):
            problem(f"{where}: record says width={w} height={h} but {path} is {size[0]}x{size[1]}")
            return None
        w, h = size
    mask_file = rec.get("mask_file")
    if mask_file is not None:
        if not isinstance(mask_file, str) or not mask_file:
            problem(f"{where}: 'mask_file' must be a non-empty path")
            return None
        mask_file = os.path.join(json_dir, mask_file)
        if not os.path.isfile(mask_file):
            problem(f"{where}: mask_file not found: {mask_file}")
            return None
    return Entry(rec, jf, path, w, h, [] if labelled else None, mask_file)


def _load_annotations(jf: str, anns: list, cats: dict[Any, int], unknown: dict[Any, str], by_id: dict[Any, Entry],
                      dropped_ids: set[Any], problem: Problem) -> None:
    seen: set[Any] = set()
    for k, a in enumerate(anns):
        if not isinstance(a, dict):
            problem(f"{jf}: annotations[{k}] is not an object")
            continue
        aid = a.get("id", f"#{k}")
        where = f"{jf}: annotation id={aid} (image id={a.get('image_id')})"
        if "id" in a:
            if not _valid_id(a["id"]):
                problem(f"{jf}: annotations[{k}] has a bad id {a['id']!r}")
                continue
            if _key(a["id"]) in seen:
                problem(f"{where}: duplicate annotation id")
                continue
            seen.add(_key(a["id"]))
        iid = a.get("image_id")
        iid = _key(iid) if _valid_id(iid) else iid
        if iid in dropped_ids:
            continue  # its image was already reported
        e = by_id.get(iid) if _valid_id(iid) else None
        if e is None:
            problem(f"{where}: image_id {a.get('image_id')!r} is not in this file's images")
            continue
        cid = a.get("category_id")
        cls = cats.get(_key(cid)) if _valid_id(cid) else None
        if cls is None:
            if _valid_id(cid) and _key(cid) in unknown:
                problem(f"{where}: category id={cid} has unknown name {unknown[_key(cid)]!r}")
            else:
                problem(f"{where}: category_id {cid!r} is not a known category of this file")
            continue
        segm, why = _check_segmentation(a.get("segmentation"), e.height, e.width)
        if why is None:
            why = check_bbox(a.get("bbox"), e.width, e.height)
        if why is not None:
            problem(f"{where}: {why}")
            continue
        area = a.get("area")
        if isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area) or area < 0:
            if area is not None:
                problem(f"{where}: bad area {area!r}")
                continue
            # Missing area is tolerated: the pixel count orders painting as COCO's area would.
            area = float(mask_utils.area(segm_to_rle(segm, e.height, e.width)))
        elif area > e.width * e.height + e.width + e.height:  # beyond any rounding of a full-image polygon
            problem(f"{where}: area {area:g} exceeds the {e.width}x{e.height} image")
            continue
        e.anns.append(Ann(aid, cls, float(area), segm))  # type: ignore[union-attr]


def check_bbox(bbox: Any, w: int, h: int) -> str | None:
    """Why a COCO bbox disagrees with a w×h image, or None (a missing bbox is fine: masks do not need it)."""
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
