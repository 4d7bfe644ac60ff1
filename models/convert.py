"""Convert published checkpoints into this toolkit's layout (mmseg names), strictly, checked against the target model.

    python -m models.convert SRC DST --model NAME [--from auto|mmseg|mmpretrain|hf|timm|official] [--num-classes C]
    python -m models.convert SRC --inspect [--model NAME]      # layout, family, size, window, classes, drops; no file

SRC, in each publisher's own layout (README "Converting checkpoints" has the table):
- mmseg UperNet checkpoints, 0.x and 1.x ({'meta', 'state_dict', ...}), and mmseg's backbone pretrain files as
  tools/model_converters/swin2mmseg.py writes them (bare dict, `w_msa`, `ffn`, unfold merge order, buffers, `norm`);
- mmcls / mmpretrain classifiers (`backbone.`, `neck.`, `head.`; ConvNeXt `norm3`, Swin `norm3` or pre-v2 `norm`);
- HF transformers: openmmlab/upernet-* hub files, the pinned version's save_pretrained output (a directory,
  model.safetensors or pytorch_model.bin), facebook/convnext-* and microsoft/swin-* classification models;
- timm ConvNeXt (including 1×1-conv MLP and head-norm-first variants) and Swin, any in1k / in22k head;
- the official ConvNeXt / Swin repositories ({'model'}: classifier files with `head`, `norm`,
  `relative_position_index` / `attn_mask` buffers, `layers.I.downsample` at the end of a stage) and their
  segmentation checkpoints.
DST is a torch file {'model': state_dict, 'model_name': NAME, 'num_classes': C} that `models.load_model` /
`build_model(NAME, C)` loads strictly; it is written atomically.

Strict, and explained:
- every source key is mapped or dropped on purpose; each dropped key is printed with its reason (classifier head,
  classification neck, the classifier's final norm, relative_position_index / attn_mask buffers rebuilt for the
  target, HF's unused final layernorm);
- Swin PatchMerging weights are permuted from the official/timm/HF channel order (x0, x1, x2, x3) to mmseg's
  nn.Unfold order (SPEC §5); HF's split q/k/v are concatenated; 1×1-conv MLP weights become Linear weights;
- relative_position_bias_table is resized bicubically (mmseg's rule) when the window differs (e.g. 7 → 12);
- a segmentation checkpoint (one with a decode head) must supply every tensor of the target, output norms and the
  auxiliary head included; only a class count change (--num-classes) re-initialises the two classifiers;
- an ImageNet backbone leaves the heads at their initialisation and the output norms it lacks at LayerNorm's
  (weight 1, bias 0), as mmseg's non-strict loading does;
- anything else that does not fit is an error naming the keys (exit 2).
Loading uses torch.load(weights_only=True); classes that a training framework pickled next to the weights (mmengine
message hubs, yacs configs) are replaced by inert placeholders, never imported or run.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

import torch
import torch.nn.functional as F

from data.classes import NUM_CLASSES
from data.io import publish

from .registry import BACKBONES, MODELS, backbone_of

LAYOUTS = ("auto", "mmseg", "mmpretrain", "hf", "timm", "official")
CLASSIFIERS = ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias",
               "auxiliary_head.conv_seg.weight", "auxiliary_head.conv_seg.bias")


class ConversionError(ValueError):
    pass


# ----------------------------------------------------------------------------------------------------------- reading

class _Inert(list):
    """Stands in for any non-allowlisted class in a pickle: accepts construction and state, keeps nothing."""

    def __new__(cls, *args, **kwargs):
        return list.__new__(cls)

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        pass


def _torch_load(path: str) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - retried below with placeholders, re-raised if that fails too
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001
            raise first
        if not names:
            raise
        with torch.serialization.safe_globals([(_Inert, n) for n in names]):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as second:  # noqa: BLE001
                raise ConversionError(f"{path}: cannot be read with weights_only=True ({second}); re-save its "
                                      "state_dict alone with torch.save") from first


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (flat state_dict, info) from a file or an HF model directory. info has 'container' and, for our own
    files, 'model_name' / 'num_classes'."""
    if os.path.isdir(path):
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, fname)):
                path = os.path.join(path, fname)
                break
        else:
            raise ConversionError(f"{path}: directory holds neither model.safetensors nor pytorch_model.bin "
                                  "(sharded checkpoints are not supported)")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ConversionError("reading .safetensors needs the `safetensors` package (pip install safetensors)") \
                from e
        return dict(load_file(path)), {"container": "safetensors"}
    obj = _torch_load(path)
    info: dict = {"container": "none (a bare state_dict)"}
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            if key in obj and isinstance(obj[key], dict):
                info = {"container": key}
                if key == "model":
                    info.update({k: obj[k] for k in ("model_name", "num_classes") if k in obj})
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConversionError(f"{path}: no state_dict found (looked at the top level and under "
                              "'state_dict', 'model', 'module')")
    return dict(obj), info


def _strip(sd: dict, prefixes=("module.", "_orig_mod.")) -> dict:
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------ Swin helpers (SPEC §5)

def merge_official_to_mmseg(t: torch.Tensor) -> torch.Tensor:
    """PatchMerging reduction.weight (out, 4C) or norm (4C,) from official order [x0 (0,0), x1 (1,0), x2 (0,1),
    x3 (1,1)] × C to mmseg's nn.Unfold order C × [(0,0), (0,1), (1,0), (1,1)] (mmseg swin2mmseg's
    correct_unfold_*_order)."""
    lead = t.shape[:-1]
    c = t.shape[-1] // 4
    return t.reshape(*lead, 4, c)[..., [0, 2, 1, 3], :].transpose(-1, -2).reshape(*lead, 4 * c)


def merge_mmseg_to_official(t: torch.Tensor) -> torch.Tensor:
    """Inverse of merge_official_to_mmseg."""
    lead = t.shape[:-1]
    c = t.shape[-1] // 4
    return t.reshape(*lead, c, 4).transpose(-1, -2)[..., [0, 2, 1, 3], :].reshape(*lead, 4 * c)


def resize_rel_pos_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """((2W-1)^2, heads) → (length, heads), bicubic as mmseg's SwinTransformer.init_weights does."""
    l1, heads = table.shape
    s1, s2 = int(round(l1 ** 0.5)), int(round(length ** 0.5))
    t = table.float().permute(1, 0).reshape(1, heads, s1, s1)
    t = F.interpolate(t, size=(s2, s2), mode="bicubic")
    return t.view(heads, length).permute(1, 0).contiguous().to(table.dtype)


# ------------------------------------------------------------------------ layout → mmseg names, one function each

# Why a source key is dropped; every dropped key is printed with one of these.
WHY_HEAD = "ImageNet classifier head (the segmentation model has its own heads)"
WHY_NECK = "mmpretrain classification neck"
WHY_FINAL_NORM = ("final norm of the ImageNet classifier; the segmentation model normalises each stage with "
                  "norm0..3 instead (mmseg and the official segmentation code load such files non-strictly and "
                  "leave it unused)")
WHY_HF_FINAL_NORM = ("HF's final layernorm (the classification pooler's norm, still saved by save_pretrained); "
                     "UperNet reads hidden_states_norms instead")
WHY_INDEX = "relative_position_index buffer: a function of the window size, rebuilt for the target"
WHY_MASK = "attn_mask buffer: shifted-window masks are rebuilt for each input size"
WHY_PREPROCESSOR = "mmengine data preprocessor constants (the Segmentor normalises with its own)"


def _sub(k: str, rules: list[tuple[str, str]]) -> str:
    for pat, rep in rules:
        k = re.sub(pat, rep, k)
    return k


_HF_HEAD = [(r"\.batch_norm\.", ".bn."), (r"^(decode_head|auxiliary_head)\.classifier\.", r"\1.conv_seg.")]

_HF_CONVNEXT = [
    (r"^embeddings\.patch_embeddings\.", "downsample_layers.0.0."),
    (r"^embeddings\.layernorm\.", "downsample_layers.0.1."),
    (r"^encoder\.stages\.(\d+)\.downsampling_layer\.(\d+)\.", r"downsample_layers.\1.\2."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.\2."),
    (r"\.dwconv\.", ".depthwise_conv."), (r"\.layernorm\.", ".norm."), (r"\.pwconv1\.", ".pointwise_conv1."),
    (r"\.pwconv2\.", ".pointwise_conv2."), (r"\.layer_scale_parameter$", ".gamma"),
]

_HF_SWIN = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.projection."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^encoder\.layers\.(\d+)\.", r"stages.\1."),
    (r"\.layernorm_before\.", ".norm1."), (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.(self\.|relative_position_bias\.)relative_position_bias_table$",
     ".attn.w_msa.relative_position_bias_table"),
    (r"\.attention\.(output\.dense|o_proj)\.", ".attn.w_msa.proj."),
    (r"\.(intermediate\.dense|mlp\.fc1)\.", ".ffn.layers.0.0."),
    (r"\.(output\.dense|mlp\.fc2)\.", ".ffn.layers.1."),
]

_OFFICIAL_CONVNEXT = [(r"\.dwconv\.", ".depthwise_conv."), (r"\.pwconv1\.", ".pointwise_conv1."),
                      (r"\.pwconv2\.", ".pointwise_conv2.")]

_TIMM_CONVNEXT = [
    (r"^stem\.(\d+)\.", r"downsample_layers.0.\1."),
    (r"^stages\.(\d+)\.downsample\.(\d+)\.", r"downsample_layers.\1.\2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"\.conv_dw\.", ".depthwise_conv."), (r"\.mlp\.fc1\.", ".pointwise_conv1."), (r"\.mlp\.fc2\.", ".pointwise_conv2."),
]

_OFFICIAL_SWIN = [
    (r"^patch_embed\.proj\.", "patch_embed.projection."),
    (r"^layers\.(\d+)\.", r"stages.\1."),
    (r"\.attn\.(qkv|proj)\.", r".attn.w_msa.\1."),
    (r"\.attn\.relative_position_bias_table$", r".attn.w_msa.relative_position_bias_table"),
    (r"\.mlp\.fc1\.", ".ffn.layers.0.0."), (r"\.mlp\.fc2\.", ".ffn.layers.1."),
]

_MERGE = r"\.downsample\.(reduction\.weight|norm\.(weight|bias))$"


class _Once(dict):
    """A mapping that refuses a second source key for the same target name (two keys must never merge silently)."""

    def __setitem__(self, k, v):
        if k in self:
            raise ConversionError(f"source keys {self[k][0]} and {v[0]} both map to {k}")
        super().__setitem__(k, v)


def _buffer_reason(k: str) -> str | None:
    """Buffers that some publishers save and every target rebuilds (official, mmseg, mmcls, old HF/timm files)."""
    if k.endswith("relative_position_index"):
        return WHY_INDEX
    if k.endswith("attn_mask"):
        return WHY_MASK
    return None


def _pointwise(k: str, v: torch.Tensor) -> torch.Tensor:
    # 1×1-conv MLPs (timm conv_mlp variants, mmpretrain linear_pw_conv=False): (out, in, 1, 1) → Linear (out, in).
    if re.search(r"\.pointwise_conv[12]\.weight$", k) and v.ndim == 4 and v.shape[-2:] == (1, 1):
        return v.flatten(1)
    return v


def _hf_backbone(bb: dict, family: str) -> tuple[dict, list, list[str]]:
    """HF transformers: hub files and save_pretrained (old names), in-memory transformers 5 names (q_proj, mlp.fc1,
    `swin.`/`convnext.` inside the backbone), classification models (`swin.`/`convnext.` stripped by the caller)."""
    out, dropped, notes = _Once(), [], []
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in bb.items():
        k = re.sub(r"^(swin|convnext)\.", "", key)
        why = _buffer_reason(k) or (WHY_HF_FINAL_NORM if re.match(r"^layernorm\.(weight|bias)$", k) else None)
        if why:
            dropped.append((key, why, tuple(v.shape)))
            continue
        m = re.match(r"^hidden_states_norms\.(stage)?(\d)\.(weight|bias)$", k)
        if m:  # named stage1..4 (1-based); the first UperNet conversions used 0..3
            out[f"norm{int(m.group(2)) - (1 if m.group(1) else 0)}.{m.group(3)}"] = (key, v)
            continue
        if family == "convnext":
            k2 = _sub(k, _HF_CONVNEXT)
            out[k2] = (key, _pointwise(k2, v))
            continue
        m = re.match(r"^(.*)\.attention\.(?:self\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$", k)
        if m:
            which = (m.group(2) or m.group(3))[0]  # q / k / v
            qkv.setdefault(f"{_sub(m.group(1), _HF_SWIN)}.attn.w_msa.qkv.{m.group(4)}", {})[which] = (key, v)
            continue
        k2 = _sub(k, _HF_SWIN)
        out[k2] = (key, merge_official_to_mmseg(v) if re.search(_MERGE, k2) else v)
    for k, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ConversionError(f"HF attention {k}: has only {sorted(parts)} of q/k/v")
        out[k] = ("+".join(parts[c][0] for c in "qkv"), torch.cat([parts[c][1] for c in "qkv"], dim=0))
    if family == "swin":
        notes.append("HF Swin: q/k/v concatenated into qkv; PatchMerging permuted to mmseg's unfold order")
    return out, dropped, notes


def _official_or_timm_backbone(bb: dict, family: str, layout: str) -> tuple[dict, list, list[str]]:
    """timm (stem / stages.I.downsample / blocks / conv_dw / mlp.fc*, PatchMerging at the start of the next Swin stage)
    and the official repositories (dwconv / pwconv*, `layers.I.downsample` at the end of a Swin stage)."""
    out, dropped, notes = _Once(), [], []
    for key, v in bb.items():
        k = key
        why = _buffer_reason(k)
        if why is None and k.startswith("head."):
            # timm keeps its final norm under head.norm (ConvNeXt); head / head.fc are the classifier
            why = WHY_FINAL_NORM if k.startswith("head.norm.") else WHY_HEAD
        if why is None and re.match(r"^(norm|norm_pre)\.(weight|bias)$", k):
            why = WHY_FINAL_NORM  # official / timm Swin final norm; timm *_hnf ConvNeXt's norm_pre
        if why:
            dropped.append((key, why, tuple(v.shape)))
            continue
        if family == "convnext":
            k2 = _sub(k, _TIMM_CONVNEXT if layout == "timm" else _OFFICIAL_CONVNEXT)
            v = _pointwise(k2, v)
        else:
            if layout == "timm":  # timm puts PatchMerging at the start of the next stage
                k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", k)
            k2 = _sub(k, _OFFICIAL_SWIN)
            if re.search(_MERGE, k2):
                v = merge_official_to_mmseg(v)
        out[k2] = (key, v)
    if family == "swin":
        notes.append(f"Swin PatchMerging weights permuted from {layout} order to mmseg's unfold order")
    return out, dropped, notes


def _mmseg_backbone(bb: dict, family: str, layout: str) -> tuple[dict, list, list[str]]:
    """mmseg UperNet backbones, mmseg's converted pretrain files (tools/model_converters/swin2mmseg.py keeps the
    official final `norm` and the `attn_mask` / `relative_position_index` buffers) and mmcls/mmpretrain backbones."""
    out, dropped, notes = _Once(), [], []
    for key, v in bb.items():
        why = _buffer_reason(key)
        if why is None and key.startswith("head."):
            why = WHY_HEAD
        m = re.match(r"^norm\.(weight|bias)$", key)
        if why is None and m:
            if layout == "mmpretrain" and family == "swin":
                # mmpretrain SwinTransformer._load_from_state_dict: files before version 2 call norm3 `norm`.
                out[f"norm3.{m.group(1)}"] = (key, v)
                notes.append("mmcls Swin `norm` is mmpretrain's norm3 (its pre-v2 name): mapped to norm3")
                continue
            why = WHY_FINAL_NORM
        if why:
            dropped.append((key, why, tuple(v.shape)))
            continue
        out[key] = (key, _pointwise(key, v))
    return out, dropped, sorted(set(notes))


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
    sd = _strip(sd)
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
    # What may sit next to the backbone, per layout: HF classification heads; mmpretrain necks and heads; mmengine's
    # data preprocessor (its mean/std are non-persistent today, older files may carry them).
    allowed = {"hf": {"classifier.": WHY_HEAD},
               "mmpretrain": {"head.": WHY_HEAD, "neck.": WHY_NECK, "data_preprocessor.": WHY_PREPROCESSOR},
               "mmseg": {"data_preprocessor.": WHY_PREPROCESSOR}}.get(layout, {})
    dropped = []
    for k, v in top.items():
        why = next((w for p, w in allowed.items() if k.startswith(p)), None)
        if why is None:
            raise ConversionError(f"unexpected keys outside backbone/decode_head/auxiliary_head for the {layout} "
                                  "layout: " + ", ".join(sorted(k for k in top
                                                                if not k.startswith(tuple(allowed)))[:10]))
        dropped.append((k, why, tuple(v.shape)))
    if layout == "hf":
        mapped, more, notes = _hf_backbone(bb, family)
        head = {_sub(k, _HF_HEAD): (k, v) for k, v in head.items()}
    elif layout in ("timm", "official"):
        mapped, more, notes = _official_or_timm_backbone(bb, family, layout)
        head = {k: (k, v) for k, v in head.items()}
    else:
        mapped, more, notes = _mmseg_backbone(bb, family, layout)
        head = {k: (k, v) for k, v in head.items()}

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


def to_mmseg_layout(sd: dict, src: str = "auto", family: str | None = None) -> tuple[dict, str, str, list[str]]:
    """Rename a foreign state_dict to mmseg names. Returns (state_dict, layout, family, notes)."""
    s = parse(sd, src)
    if family and s.family != family:
        raise ConversionError(f"the source is a {s.family} checkpoint but the target model has a {family} backbone")
    return s.state, s.layout, s.family, s.notes + [dropped_summary(s.dropped)] if s.dropped else s.notes


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


# ---------------------------------------------------------------------------------------------- fitting the target

def fit(source: Source, model: torch.nn.Module) -> tuple[dict, list[str]]:
    """Match a parsed source to `model`. Returns (state_dict that `model` loads strictly, notes).

    Filled from the target, always: relative_position_index (a function of the window) and BatchNorm
    num_batches_tracked counters when absent. A segmentation source (one with a decode head) must supply every other
    tensor; only a class count change re-initialises the two classifiers. An ImageNet backbone leaves the heads at
    their initialisation and the output norms it lacks at LayerNorm's identity. Anything else raises
    ConversionError naming the keys."""
    family, _ = backbone_of(model.backbone)
    if source.family != family:
        raise ConversionError(f"the source is a {source.family} checkpoint but the target model "
                              f"{getattr(model, 'model_name', '')} has a {family} backbone")
    notes = [f"source layout: {source.layout} ({source.family}, "
             f"{'segmentation checkpoint' if source.segmentation else 'ImageNet backbone'})"] + list(source.notes)
    own = model.state_dict()
    sd = dict(source.state)
    out: dict = {k: own[k] for k in own if k.endswith("relative_position_index")}
    resized: set[tuple[int, int]] = set()
    for k, v in list(sd.items()):
        if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape \
                and v.ndim == 2 and v.shape[1] == own[k].shape[1]:
            sd[k] = resize_rel_pos_table(v, own[k].shape[0])
            # table side 2W - 1 → window W
            resized.add(((int(round(v.shape[0] ** 0.5)) + 1) // 2, (int(round(own[k].shape[0] ** 0.5)) + 1) // 2))
    for w_src, w_dst in sorted(resized):
        notes.append(f"resized relative_position_bias_table(s) bicubically, window {w_src} → {w_dst} "
                     "(mmseg's SwinTransformer.init_weights rule)")

    reinit: set[str] = set()
    src_classes = source.num_classes if source.segmentation else None
    if src_classes is not None and src_classes != model.num_classes:
        for k in CLASSIFIERS:
            sd.pop(k, None)
        notes.append(f"source has {src_classes} classes, target {model.num_classes}: "
                     "decode_head.conv_seg and auxiliary_head.conv_seg re-initialised")
        reinit = set(CLASSIFIERS)

    missing, shapes, heads_init, norms_init = [], [], [], []
    for k, v in own.items():
        if k in out:
            continue
        if k in sd:
            if tuple(sd[k].shape) != tuple(v.shape):
                shapes.append(f"{k} ({source.origin.get(k, k)}): {tuple(sd[k].shape)} in source vs "
                              f"{tuple(v.shape)} in model")
            out[k] = sd[k].to(v.dtype)
        elif k in reinit or k.endswith("num_batches_tracked"):
            out[k] = v
        elif not source.segmentation and k.startswith(("decode_head.", "auxiliary_head.")):
            out[k] = v
            heads_init.append(k)
        elif not source.segmentation and re.match(r"^backbone\.norm\d\.(weight|bias)$", k):
            # ImageNet backbones carry no per-stage output norms (timm, official, HF) or only the last (mmpretrain):
            # mmseg loads them non-strictly and the others keep LayerNorm's identity initialisation, as here.
            out[k] = torch.ones_like(v) if k.endswith("weight") else torch.zeros_like(v)
            norms_init.append(k)
        else:
            missing.append(k)
    unexpected = [f"{k} (from {source.origin.get(k, k)})" if source.origin.get(k, k) != k else k
                  for k in sd if k not in own]
    from . import misfit_message
    what = "segmentation checkpoint" if source.segmentation else "source"
    msg = misfit_message(f"the {what} does not fit {getattr(model, 'model_name', type(model).__name__)}:",
                         missing, unexpected, shapes, labels=("missing from source", "not in model"), limit=10)
    if msg:
        if source.segmentation and missing:
            msg += "\n  (a segmentation checkpoint must supply every tensor of the model, output norms included)"
        raise ConversionError(msg)
    if heads_init:
        notes.append("ImageNet backbone: decode_head and auxiliary_head keep their initialisation")
    if norms_init:
        names = sorted({k.split(".")[1] for k in norms_init})
        notes.append(f"ImageNet backbone without output norm(s) {', '.join(names)}: LayerNorm's initialisation "
                     "(weight 1, bias 0), as mmseg leaves them")
    return out, notes


def fit_to_model(sd: dict, model: torch.nn.Module, notes: list[str]) -> dict:
    """Backward-compatible wrapper: fit an mmseg-layout state_dict (see fit)."""
    out, more = fit(parse(sd, "mmseg"), model)
    notes.extend(more[1:])
    return out


def convert(sd: dict, model: torch.nn.Module, src: str = "auto") -> tuple[dict, list[str]]:
    """Foreign state_dict → state_dict that `model` loads strictly, and the notes on what was done (the first names
    the layout; one lists every dropped key and why)."""
    source = parse(sd, src)
    out, notes = fit(source, model)
    if source.dropped:
        notes.append(dropped_summary(source.dropped))
    return out, notes


def source_num_classes(sd: dict) -> int | None:
    for k in ("decode_head.conv_seg.weight", "decode_head.classifier.weight"):
        for kk, v in sd.items():
            if kk.endswith(k):
                return int(v.shape[0])
    return None


def inspect(source: Source, info: dict | None = None) -> str:
    """What --inspect prints: layout, family, size, window, class count, and what a conversion drops and fills."""
    a = source.arch()
    matches = source.registry_matches()
    size = ", ".join(matches) if matches else "no registry model has these widths/depths"
    shape = ", ".join(f"{label} {a[k]}" for label, k in BACKBONES[source.family].size)
    window = str(a["window_size"]) if "window_size" in a else "-"
    c = source.num_classes
    aux = any(k.startswith("auxiliary_head.") for k in source.state)
    kind = f"segmentation checkpoint (decode head, {'auxiliary head' if aux else 'no auxiliary head'})" \
        if source.segmentation else "ImageNet backbone"
    lines = [f"layout:   {source.layout}" + (f" (container: {info['container']})" if info else ""),
             f"family:   {source.family} ({shape})",
             f"size:     {size}",
             f"window:   {window}",
             f"classes:  {c if c is not None else 'unknown (no classifier)'}"
             + ("" if source.segmentation or c is None else " (ImageNet head, dropped)"),
             f"kind:     {kind}",
             f"tensors:  {len(source.state)} kept under our names"]
    lines += source.notes
    lines.append(dropped_summary(source.dropped) if source.dropped else "dropped nothing")
    if not source.segmentation:
        lines.append("a conversion initialises decode_head and auxiliary_head, and any output norm (norm0..3) the "
                     "source lacks at LayerNorm's initialisation (weight 1, bias 0)")
    return "\n".join(lines)


def save_atomic(obj: object, dst: str) -> None:
    d = os.path.dirname(os.path.abspath(dst))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".convert-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        publish(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m models.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="checkpoint file, or an HF model directory")
    p.add_argument("dst", nargs="?", help="output torch file (not with --inspect)")
    p.add_argument("--model", help="registry name, e.g. upernet_convnext_tiny (required unless --inspect)")
    p.add_argument("--from", dest="src_layout", default="auto", choices=LAYOUTS)
    p.add_argument("--num-classes", type=int, default=None,
                   help=f"default: the source's class count, or {NUM_CLASSES} for a backbone-only source")
    p.add_argument("--inspect", action="store_true",
                   help="print the source's layout, family, size, window, classes and what a conversion drops; "
                        "write nothing (with --model: also check that it fits)")
    return p


def main(args: argparse.Namespace) -> int:
    from . import build_model
    if not args.inspect and (args.dst is None or args.model is None):
        print("error: SRC DST --model NAME are required (or SRC --inspect)", file=sys.stderr)
        return 2
    if args.inspect and args.dst is not None:
        print("error: --inspect writes nothing: drop DST", file=sys.stderr)
        return 2
    if args.model is not None and args.model not in MODELS:
        print(f"error: unknown model {args.model!r}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    try:
        sd, info = read_checkpoint(args.src)
        source = parse(sd, args.src_layout)
        if args.inspect:
            print(inspect(source, info))
            if args.model is None:
                return 0
        c = args.num_classes or (source.num_classes if source.segmentation else None) or NUM_CLASSES
        torch.manual_seed(0)
        model = build_model(args.model, c)
        out, notes = fit(source, model)
        model.load_state_dict(out, strict=True)  # the promise: build_model(NAME, C) loads it strictly
    except ConversionError as e:
        print(f"error: {args.src}: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, ValueError) as e:
        print(f"error: {args.src}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    for n in notes[:1] + ([] if args.inspect else [dropped_summary(source.dropped)] if source.dropped else []) \
            + notes[1:]:
        print(f"note: {n}")
    if args.inspect:
        print(f"fits {args.model} with {c} classes (nothing written)")
        return 0
    save_atomic({"model": out, "model_name": args.model, "num_classes": c}, args.dst)
    print(f"wrote {args.dst}: {args.model}, {c} classes, {len(out)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
