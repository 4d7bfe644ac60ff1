"""HF transformers' layout (UperNetForSemanticSegmentation, ConvNextModel / SwinModel and their classifiers) → ours."""
from __future__ import annotations

import re

import torch

from .common import (MERGE, WHY_HF_FINAL_NORM, ConversionError, Once, buffer_reason, merge_official_to_mmseg,
                     pointwise, substitute)

HEAD = [(r"\.batch_norm\.", ".bn."), (r"^(decode_head|auxiliary_head)\.classifier\.", r"\1.conv_seg.")]

CONVNEXT = [
    (r"^embeddings\.patch_embeddings\.", "downsample_layers.0.0."),
    (r"^embeddings\.layernorm\.", "downsample_layers.0.1."),
    (r"^encoder\.stages\.(\d+)\.downsampling_layer\.(\d+)\.", r"downsample_layers.\1.\2."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.\2."),
    (r"\.dwconv\.", ".depthwise_conv."), (r"\.layernorm\.", ".norm."), (r"\.pwconv1\.", ".pointwise_conv1."),
    (r"\.pwconv2\.", ".pointwise_conv2."), (r"\.layer_scale_parameter$", ".gamma"),
]

SWIN = [
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

QKV = re.compile(r"^(.*)\.attention\.(?:self\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")


def _convnext_key(k: str, v: torch.Tensor) -> tuple[str, torch.Tensor]:
    k2 = substitute(k, CONVNEXT)
    return k2, pointwise(k2, v)


def _swin_key(k: str, v: torch.Tensor) -> tuple[str, torch.Tensor]:
    k2 = substitute(k, SWIN)
    return k2, merge_official_to_mmseg(v) if re.search(MERGE, k2) else v


# family → (key, tensor) → (our key, our tensor); Swin's split q / k / v are joined in backbone()
RENAME = {"convnext": _convnext_key, "swin": _swin_key}


def backbone(bb: dict, family: str, layout: str = "hf") -> tuple[dict, list, list[str]]:
    """HF transformers: hub files and save_pretrained (old names), in-memory transformers 5 names (q_proj, mlp.fc1,
    `swin.`/`convnext.` inside the backbone), classification models (`swin.`/`convnext.` stripped by the caller)."""
    out, dropped, notes = Once(), [], []
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in bb.items():
        k = re.sub(r"^(swin|convnext)\.", "", key)
        why = buffer_reason(k) or (WHY_HF_FINAL_NORM if re.match(r"^layernorm\.(weight|bias)$", k) else None)
        if why:
            dropped.append((key, why, tuple(v.shape)))
            continue
        m = re.match(r"^hidden_states_norms\.(stage)?(\d)\.(weight|bias)$", k)
        if m:  # stage1..4 (1-based) in transformers' files, 0..3 in the earliest UperNet conversions
            out[f"norm{int(m.group(2)) - (1 if m.group(1) else 0)}.{m.group(3)}"] = (key, v)
            continue
        m = QKV.match(k) if family == "swin" else None
        if m:  # split q / k / v projections: gathered here, concatenated into mmseg's qkv below
            which = (m.group(2) or m.group(3))[0]  # q / k / v
            qkv.setdefault(f"{substitute(m.group(1), SWIN)}.attn.w_msa.qkv.{m.group(4)}", {})[which] = (key, v)
            continue
        k2, v = RENAME[family](k, v)
        out[k2] = (key, v)
    for k, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ConversionError(f"HF attention {k}: has only {sorted(parts)} of q/k/v")
        out[k] = ("+".join(parts[c][0] for c in "qkv"), torch.cat([parts[c][1] for c in "qkv"], dim=0))
    if family == "swin":
        notes.append("HF Swin: q/k/v concatenated into qkv; PatchMerging permuted to mmseg's unfold order")
    return out, dropped, notes
