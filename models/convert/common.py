"""What every publisher layout shares: the error, the reasons a key is dropped, and the tensor rules (SPEC §5)."""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F


class ConversionError(ValueError):
    """A source that cannot be converted into the target; the message names the keys."""


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


def substitute(k: str, rules: list[tuple[str, str]]) -> str:
    """A key after each (pattern, replacement) rule in turn."""
    for pat, rep in rules:
        k = re.sub(pat, rep, k)
    return k


# A Swin PatchMerging tensor under our names: its channels are permuted from every non-mmseg layout.
MERGE = r"\.downsample\.(reduction\.weight|norm\.(weight|bias))$"


class Once(dict):
    """A mapping that refuses a second source key for the same target name (two keys must never merge silently)."""

    def __setitem__(self, k, v):
        if k in self:
            raise ConversionError(f"source keys {self[k][0]} and {v[0]} both map to {k}")
        super().__setitem__(k, v)


def buffer_reason(k: str) -> str | None:
    """Buffers that some publishers save and every target rebuilds (official, mmseg, mmcls, old HF/timm files)."""
    if k.endswith("relative_position_index"):
        return WHY_INDEX
    if k.endswith("attn_mask"):
        return WHY_MASK
    return None


def pointwise(k: str, v: torch.Tensor) -> torch.Tensor:
    # 1×1-conv MLPs (timm conv_mlp variants, mmpretrain linear_pw_conv=False): (out, in, 1, 1) → Linear (out, in).
    if re.search(r"\.pointwise_conv[12]\.weight$", k) and v.ndim == 4 and v.shape[-2:] == (1, 1):
        return v.flatten(1)
    return v


# ------------------------------------------------------------------------------------------ Swin tensors (SPEC §5)

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
