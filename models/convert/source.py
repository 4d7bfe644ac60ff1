"""A foreign state_dict read: its publisher layout and backbone family, its tensors under our (mmseg) names, and every
key it drops with the reason."""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

from .. import _strip_prefixes
from ..registry import BACKBONES, MODELS
from . import hf, mmseg, official_timm
from .common import WHY_HEAD, WHY_NECK, WHY_PREPROCESSOR, ConversionError, substitute


class Reader(NamedTuple):
    """How one publisher layout becomes ours."""
    # (backbone state_dict without its prefix, family, layout) → (our names → (source key, tensor), dropped, notes)
    backbone: Callable[[dict, str, str], tuple[dict, list, list[str]]]
    head: list[tuple[str, str]]     # renames of decode_head.* / auxiliary_head.* keys
    neighbours: dict[str, str]      # prefixes allowed next to the backbone → why they are dropped


# mmengine's data preprocessor keeps its mean/std out of the state_dict; files from older versions carry them.
READERS: dict[str, Reader] = {
    "mmseg": Reader(mmseg.backbone, [], {"data_preprocessor.": WHY_PREPROCESSOR}),
    "mmpretrain": Reader(mmseg.backbone, [], {"head.": WHY_HEAD, "neck.": WHY_NECK,
                                              "data_preprocessor.": WHY_PREPROCESSOR}),
    "hf": Reader(hf.backbone, hf.HEAD, {"classifier.": WHY_HEAD}),
    "timm": Reader(official_timm.backbone, [], {}),
    "official": Reader(official_timm.backbone, [], {}),
}
LAYOUTS = ("auto", *READERS)


def detect_layout(bb: dict) -> tuple[str, str]:
    """(layout, backbone family) of a backbone state_dict without its container prefix."""
    keys = set(bb)
    has = lambda pat: any(re.search(pat, k) for k in keys)  # noqa: E731
    if has(r"^((swin|convnext)\.)?embeddings\.patch_embeddings\.projection\."):
        return "hf", "swin"
    if has(r"^((swin|convnext)\.)?embeddings\.patch_embeddings\.(weight|bias)$"):
        return "hf", "convnext"
    if "stem.0.weight" in keys:
        return "timm", "convnext"
    if has(r"^downsample_layers\.0\.0\."):
        return ("official" if has(r"\.dwconv\.") else "mmseg"), "convnext"
    if has(r"^patch_embed\.projection\."):
        return "mmseg", "swin"
    if has(r"^patch_embed\.proj\."):
        if has(r"^layers\.0\.downsample\.") or not has(r"^layers\.\d+\.downsample\."):
            return "official", "swin"
        return "timm", "swin"
    raise ConversionError("cannot tell the checkpoint's layout (no ConvNeXt or Swin stem found); first keys: "
                          + ", ".join(sorted(keys)[:8]))


class Source:
    """A parsed checkpoint: its layout and family, its tensors under our (mmseg) names, and every dropped key with
    the reason. `origin` maps each target name to the source key(s) it came from."""

    def __init__(self, layout: str, family: str, state: dict, origin: dict, dropped: list, notes: list[str]):
        self.layout, self.family, self.state, self.origin = layout, family, state, origin
        self.dropped, self.notes = dropped, notes

    @property
    def segmentation(self) -> bool:
        return any(k.startswith("decode_head.") for k in self.state)

    @property
    def num_classes(self) -> int | None:
        """The decode head's classes, or the ImageNet classifier's for a backbone."""
        if "decode_head.conv_seg.weight" in self.state:
            return int(self.state["decode_head.conv_seg.weight"].shape[0])
        for k, why, shape in self.dropped:
            if why == WHY_HEAD and k.endswith("weight") and len(shape) == 2:
                return int(shape[0])
        return None

    def arch(self) -> dict:
        """The backbone's hyper-parameters read off the tensors (its family's rule in models.registry)."""
        bb = {k[len("backbone."):]: v for k, v in self.state.items() if k.startswith("backbone.")}
        return BACKBONES[self.family].hparams(bb)

    def registry_matches(self) -> list[str]:
        """Registry models of this size (same family and size keys), those with the same window too if any."""
        family = BACKBONES[self.family]
        a = self.arch()
        same = [n for n, c in MODELS.items() if c["backbone"] == self.family
                and all(tuple(c[k]) == a[k] if isinstance(c[k], tuple) else c[k] == a[k] for _, k in family.size)]
        exact = [n for n in same if all(MODELS[n][k] == a[k] for k in family.exact)]
        return exact or same


def parse(sd: dict, src: str = "auto") -> Source:
    """Read a foreign state_dict's layout and rename it to mmseg names, accounting for every key."""
    sd = _strip_prefixes(sd)
    head = {k: v for k, v in sd.items() if k.startswith(("decode_head.", "auxiliary_head."))}
    bb: dict = {}
    top: dict = {}
    for k, v in sd.items():
        if k in head:
            continue
        m = re.match(r"^(backbone|convnext|swin)\.(.*)$", k)  # mmseg / mmpretrain / HF UperNet; HF classification
        if m:
            bb[m.group(2)] = v
        else:
            top[k] = v
    bb_prefix = {k: re.match(r"^(backbone|convnext|swin)\.", k).group(1) + "." for k in sd
                 if k not in head and re.match(r"^(backbone|convnext|swin)\.", k)}
    if not bb:
        bb, top = top, {}  # a bare backbone: timm, official, mmseg's swin2mmseg output
    if not bb:
        raise ConversionError("the source has no backbone weights (only " + ", ".join(sorted(sd)[:4]) + ")")
    layout, family = detect_layout(bb)
    if layout == "mmseg" and any(k.startswith(("head.", "neck.")) for k in top):
        layout = "mmpretrain"  # an mmcls / mmpretrain classifier: backbone. + neck. + head.
    if src in ("mmseg", "mmpretrain") and layout in ("mmseg", "mmpretrain"):
        layout = src  # a headless mmpretrain backbone has mmseg's names: the user's word decides
    elif src != "auto" and src != layout:
        raise ConversionError(f"--from {src} given, but the keys look like the {layout} layout "
                              f"(e.g. {sorted(bb)[0]})")
    reader = READERS[layout]
    allowed = reader.neighbours
    dropped = []
    for k, v in top.items():
        why = next((w for p, w in allowed.items() if k.startswith(p)), None)
        if why is None:
            raise ConversionError(f"unexpected keys outside backbone/decode_head/auxiliary_head for the {layout} "
                                  "layout: " + ", ".join(sorted(k for k in top
                                                                if not k.startswith(tuple(allowed)))[:10]))
        dropped.append((k, why, tuple(v.shape)))
    mapped, more, notes = reader.backbone(bb, family, layout)
    head = {substitute(k, reader.head): (k, v) for k, v in head.items()}

    def full(k):  # a backbone key back to the name it has in the file
        for p in ("backbone.", "convnext.", "swin."):
            if p + k in bb_prefix:
                return p + k
        return k
    dropped += [(full(k), why, shape) for k, why, shape in more]
    state, origin = {}, {}
    for k, (src_key, v) in list(((f"backbone.{k}", kv) for k, kv in mapped.items())) + list(head.items()):
        state[k] = v
        origin[k] = "+".join(full(s) for s in src_key.split("+"))
    return Source(layout, family, state, origin, dropped, notes)


def dropped_summary(dropped: list) -> str:
    """One line per reason, keys folded into patterns (digits → *) with counts, so every dropped key is named."""
    by_why: dict[str, dict[str, int]] = {}
    for k, why, _ in dropped:
        pat = re.sub(r"\.\d+\.", ".*.", re.sub(r"\.\d+\.", ".*.", k))
        by_why.setdefault(why, {}).setdefault(pat, 0)
        by_why[why][pat] += 1
    lines = [f"dropped {len(dropped)} source key(s):"]
    for why, pats in by_why.items():
        keys = ", ".join(f"{p} (×{n})" if n > 1 else p for p, n in pats.items())
        lines.append(f"  {keys}: {why}")
    return "\n".join(lines)
