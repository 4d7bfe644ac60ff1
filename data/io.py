"""Small file helpers shared by the data layer: atomic writes, image and label-map decoding.

Every file the toolkit writes goes through `atomic_write_bytes` (temp file in the same directory + `os.replace`), so a
crash or a concurrent reader never sees half a file. Images are read as bytes and decoded with `cv2.imdecode`, which
works for any path (cv2.imread fails silently on non-ASCII paths on some platforms) and lets us tell "missing" from
"unreadable" from "corrupt".
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import cv2
import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DecodeError(Exception):
    """An image or label-map file exists but cannot be decoded; the caller turns it into a DataError with context."""


def publish(tmp: str, path: str) -> None:
    """Rename a finished temp file into place with the mode a plain open() would have given it (mkstemp's is 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory and `os.replace` (atomic on POSIX and Windows)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def resolve_json(path: str, data_root: str) -> str:
    """Where a COCO JSON (or a folder of photos, data.semi's pool) named on a command line or in args.json is: the
    path as given when it is absolute or exists, else the same path under the data root. So `--json train.json`
    means DATA_ROOT/train.json, as the Makefile and the competition's layout name it, and a file elsewhere is named
    by its own path."""
    path = os.fspath(path)
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(data_root, path)


def output_relpath(image_id: str, ext: str) -> str:
    """An image's per-image output file (pseudo-label PNG, saved probabilities, palette mask) relative to the output
    folder: its file_name with `ext`, sub-folders kept.

    Absolute file_names and '..' components are folded into the folder: os.path.join(out, "/data/x.png") is
    "/data/x.png", which would put pseudo-labels beside the real images in the data root (pseudo_label.py never
    writes there) and infer.py's --save-masks / --save-probs files outside their folder.
    """
    stem = os.path.splitext(image_id)[0].replace("\\", "/")
    parts = [q for q in stem.split("/") if q not in ("", ".", "..")]
    return os.path.join(*parts) + ext if parts else "_" + ext


def output_collisions(image_ids: list[str], ext: str) -> tuple[str, str] | None:
    """The first two image_ids sharing an output file (a.jpg and a.png both → a.png), or None.

    Written one after the other, the second would replace the first without a word, and the first image's record
    would point at the other image's labels (pseudo.json) or probabilities (ensemble.py)."""
    seen: dict[str, str] = {}
    for iid in image_ids:
        rel = output_relpath(iid, ext)
        if rel in seen:
            return seen[rel], iid
        seen[rel] = iid
    return None


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any, indent: int | None = None) -> None:
    """JSON with non-ASCII kept readable; compact by default (COCO files get large)."""
    sep = (",", ":") if indent is None else (",", ": ")
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent, separators=sep))


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H,W) label map or (H,W,3) RGB image."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise DecodeError("PNG encoding failed")
    return buf.tobytes()


def write_label_png(path: str, mask: np.ndarray) -> None:
    """A label map as a plain 8-bit single-channel PNG (pixel = class id), the layout mmseg and PIL read as indices."""
    assert mask.dtype == np.uint8 and mask.ndim == 2, (mask.dtype, mask.shape)
    atomic_write_bytes(path, encode_png(mask))


def write_palette_png(path: str, mask: np.ndarray) -> None:
    """A label map as an indexed PNG coloured by the SPEC palette: pixel value = class id (255 white), so any viewer
    shows colours and PIL / data.coco read class ids back."""
    import io

    from PIL import Image

    from data.classes import palette_flat
    assert mask.dtype == np.uint8 and mask.ndim == 2, (mask.dtype, mask.shape)
    im = Image.fromarray(mask, mode="P")
    im.putpalette(palette_flat())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _jpeg_truncated(data: bytes) -> bool:
    # libjpeg decodes a truncated file into a grey-padded image with only a warning, so cv2 returns a "valid" array.
    # Entropy-coded data byte-stuffs 0xFF, so the end-of-image marker can only follow the last start-of-scan marker
    # in a complete file (an EXIF thumbnail has its own markers, but they all come before the main scan).
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def decode_image(data: bytes) -> np.ndarray:
    """Image bytes → uint8 RGB (H, W, 3). Grayscale, alpha, palette and 16-bit inputs are converted; alpha is dropped
    (as PIL's convert('RGB') does). EXIF orientation is ignored: annotations refer to the stored pixel grid.

    Raises DecodeError for bytes that are not a decodable image or a truncated JPEG.
    """
    if len(data) == 0:
        raise DecodeError("empty file")
    if data[:2] == b"\xff\xd8" and _jpeg_truncated(data):
        raise DecodeError("truncated JPEG (no end-of-image marker)")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise DecodeError("not a decodable image")
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 + 32767) // 65535  # full-range rescale, rounded
        arr = arr.astype(np.uint8)
    elif arr.dtype in (np.float32, np.float64):
        arr = np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise DecodeError(f"unsupported pixel type {arr.dtype}")
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    c = arr.shape[2]
    if c == 1:
        return cv2.cvtColor(arr[:, :, 0], cv2.COLOR_GRAY2RGB)
    if c == 2:  # gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(arr[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if c == 3:
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if c == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    raise DecodeError(f"unsupported channel count {c}")


def read_image(path: str) -> np.ndarray:
    """File → uint8 RGB (H, W, 3); OSError if unreadable, DecodeError if corrupt."""
    return decode_image(read_bytes(path))


def _png_color_type(data: bytes) -> int | None:
    # IHDR is always the first chunk: 8-byte signature, 4 length, 4 'IHDR', 4 W, 4 H, 1 depth, 1 colour type.
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) > 25:
        return data[25]
    return None


def decode_label_map(data: bytes) -> np.ndarray:
    """PNG/any label-map bytes → (H, W) array of integer class values (not yet range-checked).

    Palette PNGs (colour type 3) are read as indices, which cv2 cannot do (it expands the palette to colours), so
    those go through PIL, a dependency of torchvision. A 3-channel map is accepted only when all channels are equal.
    """
    if len(data) == 0:
        raise DecodeError("empty file")
    if _png_color_type(data) == 3:
        try:
            import io as _io

            from PIL import Image
        except ImportError as e:  # pragma: no cover - PIL ships with torchvision
            raise DecodeError("palette PNG needs Pillow to read its indices") from e
        try:
            with Image.open(_io.BytesIO(data)) as im:
                im.load()
                return np.asarray(im)
        except Exception as e:
            raise DecodeError(f"not a decodable PNG ({e})") from e
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise DecodeError("not a decodable image")
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if not (np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 0], arr[:, :, 2])):
            raise DecodeError("label map must be single-channel (class ids), got a colour image")
        arr = arr[:, :, 0]
    return arr


_MORE = object()  # sentinel: the header walk ran past the bytes read so far


def _jpeg_sof_size(buf: bytes):
    # Walk the marker segments to the first SOFn (C0..CF except C4 DHT, C8 JPG, CC DAC), which holds height, width.
    i = 2
    while True:
        if i + 9 > len(buf):
            return _MORE
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers
            i += 2
            continue
        seg_len = int.from_bytes(buf[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(buf[i + 7:i + 9], "big"), int.from_bytes(buf[i + 5:i + 7], "big")
        if marker in (0xD9, 0xDA) or seg_len < 2:
            return None
        i += 2 + seg_len


def probe_size(path: str) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header without decoding, or None when the format is not recognised or the
    header is damaged (the full decode then decides). Costs one open and a small read."""
    with open(path, "rb") as f:
        head = f.read(4096)  # the frame header sits within the first KB unless an EXIF block precedes it
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if head[:2] != b"\xff\xd8":
            return None
        size = _jpeg_sof_size(head)
        if size is _MORE and len(head) == 4096:  # a large APP segment (EXIF + thumbnail) before the frame header
            size = _jpeg_sof_size(head + f.read())
    return None if size is _MORE else size
