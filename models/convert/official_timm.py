"""The official ConvNeXt / Swin repositories' layout and timm's → ours."""
from __future__ import annotations

import re

import torch

from .common import (MERGE, WHY_FINAL_NORM, WHY_HEAD, Once, buffer_reason, merge_official_to_mmseg, pointwise,
                     substitute)

OFFICIAL_CONVNEXT = [(r"\.dwconv\.", ".depthwise_conv."), (r"\.pwconv1\.", ".pointwise_conv1."),
                     (r"\.pwconv2\.", ".pointwise_conv2.")]

TIMM_CONVNEXT = [
    (r"^stem\.(\d+)\.", r"downsample_layers.0.\1."),
    (r"^stages\.(\d+)\.downsample\.(\d+)\.", r"downsample_layers.\1.\2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"\.conv_dw\.", ".depthwise_conv."), (r"\.mlp\.fc1\.", ".pointwise_conv1."),
    (r"\.mlp\.fc2\.", ".pointwise_conv2."),
]

OFFICIAL_SWIN = [
    (r"^patch_embed\.proj\.", "patch_embed.projection."),
    (r"^layers\.(\d+)\.", r"stages.\1."),
    (r"\.attn\.(qkv|proj)\.", r".attn.w_msa.\1."),
    (r"\.attn\.relative_position_bias_table$", r".attn.w_msa.relative_position_bias_table"),
    (r"\.mlp\.fc1\.", ".ffn.layers.0.0."), (r"\.mlp\.fc2\.", ".ffn.layers.1."),
]

CONVNEXT = {"official": OFFICIAL_CONVNEXT, "timm": TIMM_CONVNEXT}


def _convnext_key(k: str, v: torch.Tensor, layout: str) -> tuple[str, torch.Tensor]:
    k2 = substitute(k, CONVNEXT[layout])
    return k2, pointwise(k2, v)


def _swin_key(k: str, v: torch.Tensor, layout: str) -> tuple[str, torch.Tensor]:
    if layout == "timm":  # timm puts PatchMerging at the start of the next stage
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", k)
    k2 = substitute(k, OFFICIAL_SWIN)
    return k2, merge_official_to_mmseg(v) if re.search(MERGE, k2) else v


# family → (key, tensor, layout) → (our key, our tensor)
RENAME = {"convnext": _convnext_key, "swin": _swin_key}


def backbone(bb: dict, family: str, layout: str) -> tuple[dict, list, list[str]]:
    """timm (stem / stages.I.downsample / blocks / conv_dw / mlp.fc*, PatchMerging at the start of the next Swin stage)
    and the official repositories (dwconv / pwconv*, `layers.I.downsample` at the end of a Swin stage)."""
    out, dropped, notes = Once(), [], []
    for key, v in bb.items():
        k = key
        why = buffer_reason(k)
        if why is None and k.startswith("head."):
            # timm keeps its final norm under head.norm (ConvNeXt); head / head.fc are the classifier
            why = WHY_FINAL_NORM if k.startswith("head.norm.") else WHY_HEAD
        if why is None and re.match(r"^(norm|norm_pre)\.(weight|bias)$", k):
            why = WHY_FINAL_NORM  # official / timm Swin final norm; timm *_hnf ConvNeXt's norm_pre
        if why:
            dropped.append((key, why, tuple(v.shape)))
            continue
        k2, v = RENAME[family](k, v, layout)
        out[k2] = (key, v)
    if family == "swin":
        notes.append(f"Swin PatchMerging weights permuted from {layout} order to mmseg's unfold order")
    return out, dropped, notes
