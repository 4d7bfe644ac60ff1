"""Convert foreign checkpoints into this toolkit's layout (mmseg names), checked against the target model.

    python -m models.convert SRC DST --model NAME [--from auto|mmseg|hf|timm|official] [--num-classes C]

SRC may be: an mmseg UperNet checkpoint (`state_dict`), an HF transformers UperNet checkpoint (`pytorch_model.bin`,
`model.safetensors`, or a directory holding one), an ImageNet backbone from timm or the official ConvNeXt / Swin repos
(`model`), an mmcls/mmpretrain backbone, or an official ConvNeXt/Swin segmentation checkpoint. DST is a torch file
{'model': state_dict, 'model_name': NAME, 'num_classes': C} that `models.load_model` / `build_model(NAME, C)` loads
strictly; it is written atomically.

What is converted, and said:
- key renaming per layout (one small function each); Swin PatchMerging weights are permuted from the official/timm/HF
  channel order (x0, x1, x2, x3) to mmseg's nn.Unfold order (SPEC §5); HF's split q/k/v are concatenated;
- relative_position_bias_table is resized bicubically (mmseg's rule) when the window differs (e.g. 7 → 12);
  relative_position_index is always the target's;
- a backbone-only source leaves the heads (and any output norms it lacks) at their initialisation;
- a class count different from the source's re-initialises both classifiers (conv_seg);
- anything else that does not fit is an error that names the keys.
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

LAYOUTS = ("auto", "mmseg", "hf", "timm", "official")
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
    info: dict = {"container": "state_dict"}
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
    (r"\.attention\.(self\.|relative_position_bias\.)relative_position_index$", ".attn.w_msa.relative_position_index"),
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
    (r"\.attn\.relative_position_(bias_table|index)$", r".attn.w_msa.relative_position_\1"),
    (r"\.mlp\.fc1\.", ".ffn.layers.0.0."), (r"\.mlp\.fc2\.", ".ffn.layers.1."),
]


def _hf_backbone(bb: dict, family: str, notes: list[str]) -> dict:
    out: dict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in bb.items():
        if family == "convnext":
            out[_sub(k, _HF_CONVNEXT)] = v
            continue
        m = re.match(r"^(.*)\.attention\.(?:self\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$", k)
        if m:
            which = (m.group(2) or m.group(3))[0]  # q / k / v
            qkv.setdefault(f"{_sub(m.group(1), _HF_SWIN)}.attn.w_msa.qkv.{m.group(4)}", {})[which] = v
            continue
        k2 = _sub(k, _HF_SWIN)
        if re.search(r"\.downsample\.(reduction\.weight|norm\.(weight|bias))$", k2):
            v = merge_official_to_mmseg(v)
        out[k2] = v
    for k, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ConversionError(f"HF attention {k}: has only {sorted(parts)} of q/k/v")
        out[k] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if family == "swin" and bb:
        notes.append("HF Swin: q/k/v concatenated into qkv; PatchMerging permuted to mmseg's unfold order")
    out = {re.sub(r"^hidden_states_norms\.stage(\d+)\.", lambda m: f"norm{int(m.group(1)) - 1}.", k): v
           for k, v in out.items()}
    return out


def _official_or_timm_backbone(bb: dict, family: str, layout: str, notes: list[str]) -> dict:
    out: dict = {}
    dropped = []
    for k, v in bb.items():
        if k.startswith("head") or re.match(r"^norm\.", k) or k.endswith("attn_mask"):
            dropped.append(k)  # ImageNet classifier, its final norm, official Swin's cached shift masks
            continue
        if family == "convnext":
            k2 = _sub(k, _TIMM_CONVNEXT if layout == "timm" else _OFFICIAL_CONVNEXT)
            if k2.endswith(("pointwise_conv1.weight", "pointwise_conv2.weight")) and v.ndim == 4:
                v = v.flatten(1)  # timm conv_mlp variant: 1×1 conv weights → Linear
        else:
            if layout == "timm":  # timm puts PatchMerging at the start of the next stage
                k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", k)
            k2 = _sub(k, _OFFICIAL_SWIN)
            if re.search(r"\.downsample\.(reduction\.weight|norm\.(weight|bias))$", k2):
                v = merge_official_to_mmseg(v)
        out[k2] = v
    if dropped:
        notes.append(f"dropped {len(dropped)} ImageNet-only key(s) ({', '.join(sorted(dropped)[:4])}"
                     f"{', …' if len(dropped) > 4 else ''})")
    if family == "swin":
        notes.append("Swin PatchMerging weights permuted from official/timm order to mmseg's unfold order")
    return out


def detect_layout(bb: dict, head: dict) -> tuple[str, str]:
    """(layout, backbone family) of a prefix-free backbone dict and a head dict."""
    keys = set(bb)
    has = lambda pat: any(re.search(pat, k) for k in keys)  # noqa: E731
    if "embeddings.patch_embeddings.weight" in keys:
        return "hf", "convnext"
    if "embeddings.patch_embeddings.projection.weight" in keys:
        return "hf", "swin"
    if "stem.0.weight" in keys:
        return "timm", "convnext"
    if "downsample_layers.0.0.weight" in keys:
        return ("official" if has(r"\.dwconv\.") else "mmseg"), "convnext"
    if "patch_embed.projection.weight" in keys:
        return "mmseg", "swin"
    if "patch_embed.proj.weight" in keys:
        if has(r"^layers\.0\.downsample\.") or not has(r"^layers\.\d+\.downsample\."):
            return "official", "swin"
        return "timm", "swin"
    if not bb and any(re.search(r"\.batch_norm\.|classifier\.", k) for k in head):
        return "hf", ""
    if not bb and head:
        return "mmseg", ""
    raise ConversionError("cannot tell the checkpoint's layout; first keys: " + ", ".join(sorted(keys)[:8]))


def to_mmseg_layout(sd: dict, src: str = "auto", family: str | None = None) -> tuple[dict, str, str, list[str]]:
    """Rename a foreign state_dict to mmseg names. Returns (state_dict, layout, family, notes)."""
    notes: list[str] = []
    sd = _strip(sd)
    head = {k: v for k, v in sd.items() if k.startswith(("decode_head.", "auxiliary_head."))}
    rest = {k: v for k, v in sd.items() if k not in head}
    bb: dict = {}
    other: dict = {}
    for k, v in rest.items():
        m = re.match(r"^(backbone|convnext|swin)\.(.*)$", k)  # mmseg/HF-UperNet, HF classification models
        if m:
            bb[m.group(2)] = v
        elif k.startswith("classifier."):
            other[k] = v  # HF image-classification head
        elif not head:
            bb[k] = v  # a bare ImageNet backbone
        else:
            other[k] = v
    if bb and all(k.startswith(("swin.", "convnext.")) or k.startswith("hidden_states_norms.") for k in bb):
        bb = {re.sub(r"^(swin|convnext)\.", "", k): v for k, v in bb.items()}  # transformers 5 SwinBackbone
    if "layernorm.weight" in bb and any(k.startswith("encoder.") for k in bb):
        bb.pop("layernorm.weight"), bb.pop("layernorm.bias", None)  # HF's final (pooler) norm, unused by UperNet
        notes.append("dropped HF's final layernorm (classification pooler norm, unused by UperNet)")
    if other:
        if all(k.startswith(("classifier.", "head.")) for k in other):
            notes.append(f"dropped classification head {sorted(other)}")
        else:
            raise ConversionError("unexpected keys outside backbone/decode_head/auxiliary_head: "
                                  + ", ".join(sorted(other)[:10]))
    layout, fam = detect_layout(bb, head)
    if src != "auto" and src != layout:
        raise ConversionError(f"--from {src} given, but the keys look like the {layout} layout "
                              f"(e.g. {sorted(bb or head)[0]})")
    fam = fam or family or ""
    if family and fam and family != fam:
        raise ConversionError(f"the source is a {fam} checkpoint but the target model has a {family} backbone")
    if layout == "hf":
        bb = _hf_backbone(bb, fam, notes)
        head = {_sub(k, _HF_HEAD): v for k, v in head.items()}
    elif layout in ("timm", "official"):
        bb = _official_or_timm_backbone(bb, fam, layout, notes)
    else:
        bb = {k: v for k, v in bb.items()}
        dropped = [k for k in bb if k.startswith("head.")]  # mmcls/mmpretrain ImageNet classifier
        for k in dropped:
            bb.pop(k)
        if dropped:
            notes.append(f"dropped classification head {sorted(dropped)}")
    out = {f"backbone.{k}": v for k, v in bb.items()}
    out.update(head)
    return out, layout, fam, notes


# ---------------------------------------------------------------------------------------------- fitting the target

def fit_to_model(sd: dict, model: torch.nn.Module, notes: list[str]) -> dict:
    """Match an mmseg-layout state_dict to `model`: regenerate index buffers, resize position tables, keep the
    model's initialisation for absent heads / changed classifiers; raise ConversionError on anything else."""
    own = model.state_dict()
    out: dict = {}
    sd = dict(sd)
    resized: set[tuple[int, int]] = set()
    for k in list(sd):
        if k.endswith("relative_position_index"):
            sd.pop(k)  # a function of the window size: always the target's
    for k in [k for k in own if k.endswith("relative_position_index")]:
        out[k] = own[k]
    for k, v in list(sd.items()):
        if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape \
                and v.ndim == 2 and v.shape[1] == own[k].shape[1]:
            sd[k] = resize_rel_pos_table(v, own[k].shape[0])
            # table side 2W - 1 → window W
            resized.add(((int(round(v.shape[0] ** 0.5)) + 1) // 2, (int(round(own[k].shape[0] ** 0.5)) + 1) // 2))
    for w_src, w_dst in sorted(resized):
        notes.append(f"resized relative_position_bias_table(s) bicubically, window {w_src} → {w_dst}")

    has_backbone = any(k.startswith("backbone.") for k in sd)
    has_decode = any(k.startswith("decode_head.") for k in sd)
    has_aux = any(k.startswith("auxiliary_head.") for k in sd)
    if not has_backbone:
        raise ConversionError("the source has no backbone weights")

    # Classifiers with another class count: keep the target's fresh initialisation.
    src_classes = sd["decode_head.conv_seg.weight"].shape[0] if "decode_head.conv_seg.weight" in sd else None
    if src_classes is not None and src_classes != model.num_classes:
        for k in CLASSIFIERS:
            sd.pop(k, None)
        notes.append(f"source has {src_classes} classes, target {model.num_classes}: "
                     "decode_head.conv_seg and auxiliary_head.conv_seg re-initialised")
        reinit = set(CLASSIFIERS)
    else:
        reinit = set()

    missing, unexpected, shapes, kept_init = [], [], [], []
    for k, v in own.items():
        if k in out:
            continue
        if k in sd:
            if tuple(sd[k].shape) != tuple(v.shape):
                shapes.append(f"{k}: {tuple(sd[k].shape)} in source vs {tuple(v.shape)} in model")
            out[k] = sd[k].to(v.dtype)
        elif k in reinit or (k.startswith("decode_head.") and not has_decode) \
                or (k.startswith("auxiliary_head.") and not has_aux) or k.endswith("num_batches_tracked"):
            out[k] = v
        elif re.match(r"^backbone\.norm\d\.(weight|bias)$", k):
            out[k] = v  # ImageNet backbones carry no (timm/official) or only the last (mmcls) per-stage output norm
            kept_init.append(k)
        else:
            missing.append(k)
    unexpected = [k for k in sd if k not in own]
    from . import misfit_message
    msg = misfit_message(f"the source does not fit {model.model_name}:", missing, unexpected, shapes,
                         labels=("missing from source", "not in model"), limit=10)
    if msg:
        raise ConversionError(msg)
    if not has_decode:
        notes.append("backbone-only source: decode_head and auxiliary_head keep their initialisation")
    elif not has_aux:
        notes.append("the source has no auxiliary head: auxiliary_head keeps its initialisation")
    if kept_init:
        names = sorted({k.split(".")[1] for k in kept_init})
        notes.append(f"the source lacks output norm(s) {', '.join(names)}: they keep their initialisation")
    return out


def convert(sd: dict, model: torch.nn.Module, src: str = "auto") -> tuple[dict, list[str]]:
    """Foreign state_dict → state_dict that `model` loads strictly, and the list of notes on what was done."""
    from .convnext import ConvNeXt
    family = "convnext" if isinstance(model.backbone, ConvNeXt) else "swin"
    mm, layout, _, notes = to_mmseg_layout(sd, src, family)
    notes.insert(0, f"source layout: {layout} ({family})")
    out = fit_to_model(mm, model, notes)
    return out, notes


def source_num_classes(sd: dict) -> int | None:
    for k in ("decode_head.conv_seg.weight", "decode_head.classifier.weight"):
        for kk, v in sd.items():
            if kk.endswith(k):
                return int(v.shape[0])
    return None


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
    p.add_argument("dst", help="output torch file")
    p.add_argument("--model", required=True, help="registry name, e.g. upernet_convnext_tiny")
    p.add_argument("--from", dest="src_layout", default="auto", choices=LAYOUTS)
    p.add_argument("--num-classes", type=int, default=None,
                   help=f"default: the source's class count, or {NUM_CLASSES} for a backbone-only source")
    return p


def main(args: argparse.Namespace) -> int:
    from . import MODELS, build_model
    if args.model not in MODELS:
        print(f"error: unknown model {args.model!r}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    try:
        sd, info = read_checkpoint(args.src)
        c = args.num_classes or source_num_classes(sd) or NUM_CLASSES
        torch.manual_seed(0)
        model = build_model(args.model, c)
        out, notes = convert(sd, model, args.src_layout)
        model.load_state_dict(out, strict=True)  # the promise: build_model(NAME, C) loads it strictly
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    save_atomic({"model": out, "model_name": args.model, "num_classes": c}, args.dst)
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {args.dst}: {args.model}, {c} classes, {len(out)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
