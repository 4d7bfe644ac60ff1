"""Published weights by name: downloaded once (resumable, checksum-verified), converted by models.convert, cached.

    python -m models.fetch --list                                    # the names, what each is, the model it fits
    python -m models.fetch openmmlab/upernet-convnext-tiny           # prints the converted file's path (last line)
    python -m models.fetch swin_base_patch4_window7_224_22k --model upernet_swin_base_w12   # window 7 → 12 (bicubic)
    python train.py --model upernet_convnext_tiny --init convnext_tiny_22k_224 ...    # the same, inside train.py

Cache: $TRASHSEG_HOME (default $XDG_CACHE_HOME/trashseg, i.e. ~/.cache/trashseg, as TORCH_HOME works for torch):
    downloads/<name>/<publisher's file name>       the file as published (`.part` while it downloads; '/' in a
                                                    name is '--' in the cache)
    weights/<name>--<model>-<C>c.pt                 models.convert's output, what --init loads
    locks/<name>.lock                               fcntl lock: one process per cache (per node) downloads
A converted file already in the cache is used as it is: no network, no lock. $TRASHSEG_WEIGHTS_MIRROR (a URL) reads
every file from MIRROR/HOST/PATH instead of https://HOST/PATH (an internal mirror, e.g. one made with `wget -x`).

Every row of WEIGHTS names where its publisher lists the URL. Checksums: mmseg's and mmcls's file names end in the
first 8 hex digits of the file's sha256 (mmsegmentation tools/misc/publish_model.py), verified here; the official
ConvNeXt and Swin repositories and the HF hub pages publish no checksum, so those files are checked only by their
size (Content-Length) and by models.convert, which refuses any tensor that does not fit. An ADE20K checkpoint has 150
classes: its two classifiers (decode_head.conv_seg, auxiliary_head.conv_seg) are re-initialised for --num-classes,
which models.convert does and says.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import http.client
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterator

from data.classes import NUM_CLASSES
from data.io import publish

try:
    import fcntl
except ImportError:  # not POSIX: no lock, so concurrent processes would each download
    fcntl = None

HOME_ENV, MIRROR_ENV = "TRASHSEG_HOME", "TRASHSEG_WEIGHTS_MIRROR"
USER_AGENT = "trashseg-fetch (python urllib)"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Weights:
    url: str
    layout: str   # models.convert --from
    model: str    # the registry model it fits
    what: str
    listed: str   # where the publisher lists the URL (nothing is downloaded to write this table)
    sha256: str | None = None  # the hex prefix the publisher gives, or None where it gives none


# Where each publisher lists its files.
CNX_1K = "facebookresearch/ConvNeXt README.md, 'ImageNet-1K trained models'"
CNX_22K = "facebookresearch/ConvNeXt README.md, 'ImageNet-22K trained models', 22K model column"
CNX_SEG = ("facebookresearch/ConvNeXt semantic_segmentation/README.md, 'Results and Fine-tuned Models', "
           "pretrained-model links")
SWIN = ("microsoft/Swin-Transformer README.md, 'ImageNet-1K and ImageNet-22K Pretrained Swin-V1 Models' "
        "(github links)")
MMSEG_CNX = ("open-mmlab/mmsegmentation configs/convnext/README.md, 'ADE20K' (also configs/convnext/metafile.yaml "
             "Weights)")
MMCLS_CNX = "open-mmlab/mmsegmentation configs/convnext/README.md, 'Pre-trained Models'"
MMSEG_SWIN = "open-mmlab/mmsegmentation configs/swin/README.md, 'ADE20K'"
# HF rows read pytorch_model.bin, which each openmmlab/upernet-* repo got with its first upload (Jan 2023);
# model.safetensors came later from the SFconvertbot and is not on main everywhere (upernet-convnext-small's hub page
# lists it only under refs/pr/1).
HF = ("huggingface.co/{repo}/tree/main ('Files and versions'); transformers models/upernet/{script} converted it "
      "from {src}")
FB = "https://dl.fbaipublicfiles.com/convnext/"
SW = "https://github.com/SwinTransformer/storage/releases/download/"
OM = "https://download.openmmlab.com/"
ADE = "ADE20K UperNet, 150 classes"


def _mmseg(path: str, model: str, what: str, listed: str) -> Weights:
    """An OpenMMLab file: its name ends in -<first 8 hex digits of its sha256>.pth."""
    sha = re.search(r"-([0-9a-f]{8})\.pth$", path).group(1)
    layout = "mmpretrain" if path.startswith("mmclassification/") else "mmseg"
    return Weights(OM + path, layout, model, what, listed, sha)


def _hf(repo: str, model: str, src: str) -> Weights:
    script = f"convert_{'swin' if 'swin' in repo else 'convnext'}_upernet_to_pytorch.py"
    return Weights(f"https://huggingface.co/{repo}/resolve/main/pytorch_model.bin", "hf", model, ADE,
                   HF.format(repo=repo, src=src, script=script))


_MS = "mmsegmentation/v0.5/swin/"
_MC = "mmsegmentation/v0.5/convnext/"
_CLS = "mmclassification/v0/convnext/downstream/"

WEIGHTS: dict[str, Weights] = {
    # ---- official ConvNeXt ImageNet classifiers ({'model': ...}); no checksum published
    **{f"convnext_{s}_1k_224": Weights(f"{FB}convnext_{s}_1k_224.pth", "official", f"upernet_convnext_{s}",
                                       "ImageNet-1k backbone (no EMA; the official segmentation's pretraining)",
                                       CNX_SEG) for s in ("tiny", "small", "base")},
    **{f"convnext_{s}_1k_224_ema": Weights(f"{FB}convnext_{s}_1k_224_ema.pth", "official", f"upernet_convnext_{s}",
                                           "ImageNet-1k backbone (EMA)", CNX_1K)
       for s in ("tiny", "small", "base", "large")},
    **{f"convnext_{s}_22k_224": Weights(f"{FB}convnext_{s}_22k_224.pth", "official", f"upernet_convnext_{s}",
                                        "ImageNet-22k backbone", CNX_22K)
       for s in ("tiny", "small", "base", "large", "xlarge")},
    # ---- official Swin ImageNet classifiers ({'model': ...}); no checksum published
    "swin_tiny_patch4_window7_224": Weights(SW + "v1.0.0/swin_tiny_patch4_window7_224.pth", "official",
                                            "upernet_swin_tiny", "ImageNet-1k backbone", SWIN),
    "swin_small_patch4_window7_224": Weights(SW + "v1.0.0/swin_small_patch4_window7_224.pth", "official",
                                             "upernet_swin_small", "ImageNet-1k backbone", SWIN),
    "swin_base_patch4_window7_224": Weights(SW + "v1.0.0/swin_base_patch4_window7_224.pth", "official",
                                            "upernet_swin_base", "ImageNet-1k backbone", SWIN),
    "swin_base_patch4_window12_384": Weights(SW + "v1.0.0/swin_base_patch4_window12_384.pth", "official",
                                             "upernet_swin_base_w12", "ImageNet-1k backbone, 384 px", SWIN),
    "swin_tiny_patch4_window7_224_22k": Weights(SW + "v1.0.8/swin_tiny_patch4_window7_224_22k.pth", "official",
                                                "upernet_swin_tiny", "ImageNet-22k backbone", SWIN),
    "swin_small_patch4_window7_224_22k": Weights(SW + "v1.0.8/swin_small_patch4_window7_224_22k.pth", "official",
                                                 "upernet_swin_small", "ImageNet-22k backbone", SWIN),
    "swin_base_patch4_window7_224_22k": Weights(SW + "v1.0.0/swin_base_patch4_window7_224_22k.pth", "official",
                                                "upernet_swin_base", "ImageNet-22k backbone", SWIN),
    "swin_base_patch4_window12_384_22k": Weights(SW + "v1.0.0/swin_base_patch4_window12_384_22k.pth", "official",
                                                 "upernet_swin_base_w12", "ImageNet-22k backbone, 384 px", SWIN),
    "swin_large_patch4_window7_224_22k": Weights(SW + "v1.0.0/swin_large_patch4_window7_224_22k.pth", "official",
                                                 "upernet_swin_large", "ImageNet-22k backbone", SWIN),
    "swin_large_patch4_window12_384_22k": Weights(SW + "v1.0.0/swin_large_patch4_window12_384_22k.pth", "official",
                                                  "upernet_swin_large_w12", "ImageNet-22k backbone, 384 px", SWIN),
    # ---- mmcls ConvNeXt classifiers that mmseg's ConvNeXt configs start from (sha256 prefix in the name)
    "mmcls/convnext_tiny_in1k": _mmseg(_CLS + "convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth",
                                       "upernet_convnext_tiny", "ImageNet-1k backbone (no EMA)", MMCLS_CNX),
    "mmcls/convnext_small_in1k": _mmseg(_CLS + "convnext-small_3rdparty_32xb128-noema_in1k_20220301-303e75e3.pth",
                                        "upernet_convnext_small", "ImageNet-1k backbone (no EMA)", MMCLS_CNX),
    "mmcls/convnext_base_in1k": _mmseg(_CLS + "convnext-base_3rdparty_32xb128-noema_in1k_20220301-2a0ee547.pth",
                                       "upernet_convnext_base", "ImageNet-1k backbone (no EMA)", MMCLS_CNX),
    "mmcls/convnext_base_in21k": _mmseg(_CLS + "convnext-base_3rdparty_in21k_20220301-262fd037.pth",
                                        "upernet_convnext_base", "ImageNet-21k backbone", MMCLS_CNX),
    "mmcls/convnext_large_in21k": _mmseg(_CLS + "convnext-large_3rdparty_in21k_20220301-e6e0ea0a.pth",
                                         "upernet_convnext_large", "ImageNet-21k backbone", MMCLS_CNX),
    "mmcls/convnext_xlarge_in21k": _mmseg(_CLS + "convnext-xlarge_3rdparty_in21k_20220301-08aa5ddc.pth",
                                          "upernet_convnext_xlarge", "ImageNet-21k backbone", MMCLS_CNX),
    # ---- mmseg UperNet ADE20K checkpoints (sha256 prefix in the name)
    "mmseg/upernet_convnext_tiny_ade20k": _mmseg(
        _MC + "upernet_convnext_tiny_fp16_512x512_160k_ade20k/"
        "upernet_convnext_tiny_fp16_512x512_160k_ade20k_20220227_124553-cad485de.pth",
        "upernet_convnext_tiny", ADE + ", 512 px, ImageNet-1k pretraining", MMSEG_CNX),
    "mmseg/upernet_convnext_small_ade20k": _mmseg(
        _MC + "upernet_convnext_small_fp16_512x512_160k_ade20k/"
        "upernet_convnext_small_fp16_512x512_160k_ade20k_20220227_131208-1b1e394f.pth",
        "upernet_convnext_small", ADE + ", 512 px, ImageNet-1k pretraining", MMSEG_CNX),
    "mmseg/upernet_convnext_base_ade20k": _mmseg(
        _MC + "upernet_convnext_base_fp16_512x512_160k_ade20k/"
        "upernet_convnext_base_fp16_512x512_160k_ade20k_20220227_181227-02a24fc6.pth",
        "upernet_convnext_base", ADE + ", 512 px, ImageNet-1k pretraining", MMSEG_CNX),
    "mmseg/upernet_convnext_base_ade20k_640": _mmseg(
        _MC + "upernet_convnext_base_fp16_640x640_160k_ade20k/"
        "upernet_convnext_base_fp16_640x640_160k_ade20k_20220227_182859-9280e39b.pth",
        "upernet_convnext_base", ADE + ", 640 px, ImageNet-21k pretraining", MMSEG_CNX),
    "mmseg/upernet_convnext_large_ade20k_640": _mmseg(
        _MC + "upernet_convnext_large_fp16_640x640_160k_ade20k/"
        "upernet_convnext_large_fp16_640x640_160k_ade20k_20220226_040532-e57aa54d.pth",
        "upernet_convnext_large", ADE + ", 640 px, ImageNet-21k pretraining", MMSEG_CNX),
    "mmseg/upernet_convnext_xlarge_ade20k_640": _mmseg(
        _MC + "upernet_convnext_xlarge_fp16_640x640_160k_ade20k/"
        "upernet_convnext_xlarge_fp16_640x640_160k_ade20k_20220226_080344-95fc38c2.pth",
        "upernet_convnext_xlarge", ADE + ", 640 px, ImageNet-21k pretraining", MMSEG_CNX),
    "mmseg/upernet_swin_tiny_ade20k": _mmseg(
        _MS + "upernet_swin_tiny_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K/"
        "upernet_swin_tiny_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K_20210531_112542-e380ad3e.pth",
        "upernet_swin_tiny", ADE + ", ImageNet-1k pretraining", MMSEG_SWIN),
    "mmseg/upernet_swin_small_ade20k": _mmseg(
        _MS + "upernet_swin_small_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K/"
        "upernet_swin_small_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K_20210526_192015-ee2fff1c.pth",
        "upernet_swin_small", ADE + ", ImageNet-1k pretraining", MMSEG_SWIN),
    "mmseg/upernet_swin_base_ade20k": _mmseg(
        _MS + "upernet_swin_base_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K/"
        "upernet_swin_base_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K_20210526_192340-593b0e13.pth",
        "upernet_swin_base", ADE + ", ImageNet-1k pretraining", MMSEG_SWIN),
    "mmseg/upernet_swin_base_in22k_ade20k": _mmseg(
        _MS + "upernet_swin_base_patch4_window7_512x512_160k_ade20k_pretrain_224x224_22K/"
        "upernet_swin_base_patch4_window7_512x512_160k_ade20k_pretrain_224x224_22K_20210526_211650-762e2178.pth",
        "upernet_swin_base", ADE + ", ImageNet-22k pretraining", MMSEG_SWIN),
    "mmseg/upernet_swin_base_w12_ade20k": _mmseg(
        _MS + "upernet_swin_base_patch4_window12_512x512_160k_ade20k_pretrain_384x384_1K/"
        "upernet_swin_base_patch4_window12_512x512_160k_ade20k_pretrain_384x384_1K_20210531_132020-05b22ea4.pth",
        "upernet_swin_base_w12", ADE + ", ImageNet-1k 384 px pretraining", MMSEG_SWIN),
    "mmseg/upernet_swin_base_w12_in22k_ade20k": _mmseg(
        _MS + "upernet_swin_base_patch4_window12_512x512_160k_ade20k_pretrain_384x384_22K/"
        "upernet_swin_base_patch4_window12_512x512_160k_ade20k_pretrain_384x384_22K_20210531_125459-429057bf.pth",
        "upernet_swin_base_w12", ADE + ", ImageNet-22k 384 px pretraining", MMSEG_SWIN),
    "mmseg/upernet_swin_large_in22k_ade20k": _mmseg(
        _MS + "upernet_swin_large_patch4_window7_512x512_pretrain_224x224_22K_160k_ade20k/"
        "upernet_swin_large_patch4_window7_512x512_pretrain_224x224_22K_160k_ade20k_20220318_015320-48d180dd.pth",
        "upernet_swin_large", ADE + ", ImageNet-22k pretraining", MMSEG_SWIN),
    "mmseg/upernet_swin_large_w12_in22k_ade20k": _mmseg(
        _MS + "upernet_swin_large_patch4_window12_512x512_pretrain_384x384_22K_160k_ade20k/"
        "upernet_swin_large_patch4_window12_512x512_pretrain_384x384_22K_160k_ade20k_20220318_091743-9ba68901.pth",
        "upernet_swin_large_w12", ADE + ", ImageNet-22k 384 px pretraining", MMSEG_SWIN),
    # ---- HF transformers conversions of mmseg's ADE20K files (no checksum published)
    "openmmlab/upernet-convnext-tiny": _hf("openmmlab/upernet-convnext-tiny", "upernet_convnext_tiny",
                                           "mmseg/upernet_convnext_tiny_ade20k"),
    **{f"openmmlab/upernet-convnext-{s}": _hf(f"openmmlab/upernet-convnext-{s}", f"upernet_convnext_{s}",
                                              "mmseg's ADE20K checkpoint")
       for s in ("small", "base", "large", "xlarge")},
    "openmmlab/upernet-swin-tiny": _hf("openmmlab/upernet-swin-tiny", "upernet_swin_tiny",
                                       "mmseg/upernet_swin_tiny_ade20k"),
    "openmmlab/upernet-swin-small": _hf("openmmlab/upernet-swin-small", "upernet_swin_small",
                                        "mmseg/upernet_swin_small_ade20k"),
    "openmmlab/upernet-swin-base": _hf("openmmlab/upernet-swin-base", "upernet_swin_base_w12",
                                       "mmseg/upernet_swin_base_w12_in22k_ade20k"),
    "openmmlab/upernet-swin-large": _hf("openmmlab/upernet-swin-large", "upernet_swin_large_w12",
                                        "mmseg/upernet_swin_large_w12_in22k_ade20k"),
}


class FetchError(RuntimeError):
    """A download or conversion that did not give a file; the message is one line unless models.convert's report
    (printed above it) explains more."""


# ------------------------------------------------------------------------------------------------------ the cache

def cache_home(home: str | None = None) -> str:
    return os.path.abspath(os.path.expanduser(
        home or os.environ.get(HOME_ENV)
        or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "trashseg")))


def _key(name: str) -> str:
    return name.replace("/", "--")


def paths(name: str, model: str, num_classes: int, home: str | None = None) -> tuple[str, str, str]:
    """(downloaded file, converted file, lock file) of a table name in the cache."""
    home = cache_home(home)
    w = WEIGHTS[name]
    raw = os.path.join(home, "downloads", _key(name), os.path.basename(urllib.parse.urlsplit(w.url).path))
    out = os.path.join(home, "weights", f"{_key(name)}--{model}-{num_classes}c.pt")
    return raw, out, os.path.join(home, "locks", _key(name) + ".lock")


def source_url(url: str, mirror: str | None = None) -> str:
    """The URL to read: the publisher's, or MIRROR/HOST/PATH when a mirror is set ($TRASHSEG_WEIGHTS_MIRROR)."""
    mirror = os.environ.get(MIRROR_ENV) if mirror is None else mirror
    if not mirror:
        return url
    u = urllib.parse.urlsplit(url)
    return f"{mirror.rstrip('/')}/{u.netloc}{u.path}"


@contextlib.contextmanager
def _locked(path: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive flock on `path`: under torchrun every rank of a node asks, the first one does the work, the
    others wait here and then find the file in the cache. The kernel drops the lock when its holder dies."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for another process that is fetching the same weights (lock {path})")
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------- downloading

def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha256(path: str, url: str, expected: str | None) -> None:
    if not expected:
        return
    got = sha256_of(path)
    if not got.startswith(expected):
        os.unlink(path)
        raise FetchError(f"{url}: sha256 mismatch: expected {expected}…, got {got[:len(expected)]}… ({got}); "
                         "the file was deleted")


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened and synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def download(url: str, dst: str, sha256: str | None = None, timeout: float = 60.0, progress: bool = True,
             log: Callable[[str], None] = print) -> None:
    """Download `url` to `dst` atomically: into dst.part (continued with an HTTP Range request when one is there),
    fsync, checksum, rename. A server that ignores the Range (200 instead of 206) or refuses it (416) is read again
    from the start. An interrupted transfer keeps dst.part for the next call; a checksum mismatch deletes it.
    Network errors (URLError, HTTPError, timeouts) are raised as they are."""
    from tqdm import tqdm
    part = dst + ".part"
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the part is no prefix of the file the server has now: start again
            log(f"{url}: the server refused to resume at byte {offset}; downloading from the start")
            os.unlink(part)
            return download(url, dst, sha256, timeout, progress, log)
        raise
    with resp:
        if offset and resp.status == 206:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:  # a range other than the one asked for: start again
                log(f"{url}: the server answered another range than bytes={offset}-; downloading from the start")
                os.unlink(part)
                resp.close()
                return download(url, dst, sha256, timeout, progress, log)
            log(f"{url}: resuming at byte {offset}")
        elif offset:  # 200: the Range was ignored and this is the whole file, written over the part
            log(f"{url}: the server did not resume at byte {offset}; downloading from the start")
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, mininterval=0.5,
                     desc=os.path.basename(dst), disable=not progress, file=sys.stderr) as bar:
            try:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
            except (http.client.HTTPException, OSError) as e:  # reset, timeout, TLS error (or a full disk: said)
                f.flush()
                raise FetchError(f"{url}: the transfer broke off at byte {f.tell()} of {total or '?'} "
                                 f"({type(e).__name__}: {e}); run the same command again to resume") from e
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
    if total is not None and size != total:
        raise FetchError(f"{url}: the transfer broke off at byte {size} of {total}; run the same command again to "
                         "resume")
    _check_sha256(part, url, sha256)
    publish(part, dst)
    _fsync_dir(os.path.dirname(os.path.abspath(dst)))


# ------------------------------------------------------------------------------------------------ name → --init file

def lookup(name: str) -> Weights:
    if name not in WEIGHTS:
        near = difflib.get_close_matches(name, WEIGHTS, n=3, cutoff=0.5)
        raise FetchError(f"unknown weights name {name!r}" + (f"; did you mean {', '.join(near)}?" if near else "")
                         + " (python -m models.fetch --list)")
    return WEIGHTS[name]


def _network_error(e: BaseException) -> str | None:
    """The reason a download could not start or finish, for the one-line error; None if `e` is no network error."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        r = e.reason
        return "timed out" if isinstance(r, (socket.timeout, TimeoutError)) else str(r)
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, (ConnectionError, http.client.HTTPException)):
        return f"{type(e).__name__}: {e}"
    return None


def fetch(name: str, model: str | None = None, num_classes: int = NUM_CLASSES, home: str | None = None,
          mirror: str | None = None, timeout: float = 60.0, progress: bool = True,
          log: Callable[[str], None] = print) -> str:
    """The cached, converted file for a table name (what `--init` loads): downloaded, verified and converted with
    models.convert on the first call, read from the cache afterwards. `model` defaults to the row's registry model;
    another one must fit (models.convert decides). Raises FetchError."""
    from . import MODELS
    w = lookup(name)
    model = model or w.model
    if model not in MODELS:
        raise FetchError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    raw, out, lock = paths(name, model, num_classes, home)
    if os.path.exists(out):
        return out  # written by rename, so whole: no network, no lock
    with _locked(lock, log):
        if os.path.exists(out):
            return out  # another process fetched it while this one waited
        url = source_url(w.url, mirror)
        if model != w.model:
            log(f"note: {name} is published for {w.model}; converting it into {model}")
        if os.path.exists(raw):
            _check_sha256(raw, url, w.sha256)  # placed by hand, or downloaded for another model / class count
        else:
            log(f"downloading {name}: {url}" + (f" (sha256 {w.sha256}…)" if w.sha256 else " (no checksum published)"))
            try:
                download(url, raw, w.sha256, timeout=timeout, progress=progress, log=log)
            except Exception as e:  # noqa: BLE001 - network errors get the manual route; others keep their type
                why = _network_error(e)
                if why is None:
                    raise
                raise FetchError(f"cannot download {name} from {url} ({why}). By hand: curl -L -o {raw} '{w.url}' "
                                 f"&& python -m models.convert {raw} {out} --model {model} --num-classes "
                                 f"{num_classes} --from {w.layout} (then --init {out}; a file at {raw} is also what "
                                 f"`python -m models.fetch {name}` looks for)") from None
        _convert(raw, out, model, num_classes, w.layout)
    return out


def _convert(raw: str, out: str, model: str, num_classes: int, layout: str) -> None:
    """models.convert's command line, which prints what it keeps, drops and re-initialises (an ADE20K file's 150-class
    classifiers for num_classes) and writes `out` atomically."""
    from .convert import get_args_parser, main
    argv = [raw, out, "--model", model, "--num-classes", str(num_classes), "--from", layout]
    if main(get_args_parser().parse_args(argv)) != 0:
        raise FetchError(f"{raw} does not convert into {model} (models.convert's report above); the download stays "
                         "in the cache")


def resolve_init(spec: str, model: str, num_classes: int) -> str:
    """train.py --init: an existing path as it is, a table name as its cached converted file (fetched on first use).
    Stops the script with one line (sys.exit) when a name cannot be fetched."""
    if os.path.exists(spec) or spec not in WEIGHTS:
        return spec  # a path (or a missing one, which the caller reports as such)
    try:
        return fetch(spec, model=model, num_classes=num_classes)
    except FetchError as e:
        sys.exit(f"error: --init {spec}: {e}")


# ------------------------------------------------------------------------------------------------------------ CLI

def table() -> str:
    """The names, each with the model it fits, its sha256 prefix, what it is and (indented) its URL."""
    rows = [f"{'name':44s} {'fits':24s} {'sha256':9s} what"]
    for n, w in WEIGHTS.items():
        rows += [f"{n:44s} {w.model:24s} {w.sha256 or '-':9s} {w.what}", f"    {w.url}"]
    return "\n".join(rows)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m models.fetch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("name", nargs="?", help="a name from --list")
    p.add_argument("--list", action="store_true", help="print the table of names and exit")
    p.add_argument("--model", default=None, help="registry model to convert into (default: the one the name fits)")
    p.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to connect and between reads")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(args: argparse.Namespace) -> int:
    if args.list:
        print(table())
        return 0
    if not args.name:
        print("error: give a NAME (python -m models.fetch --list shows them)", file=sys.stderr)
        return 2
    try:
        out = fetch(args.name, args.model, args.num_classes, timeout=args.timeout, progress=not args.no_progress)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))

