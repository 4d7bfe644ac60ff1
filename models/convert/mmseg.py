"""mmseg's layout (ours already) and mmcls / mmpretrain's: buffers, classifier heads and final norms to drop."""
from __future__ import annotations

import re

from .common import WHY_FINAL_NORM, WHY_HEAD, Once, buffer_reason, pointwise


def backbone(bb: dict, family: str, layout: str) -> tuple[dict, list, list[str]]:
    """mmseg UperNet backbones, mmseg's converted pretrain files (tools/model_converters/swin2mmseg.py keeps the
    official final `norm` and the `attn_mask` / `relative_position_index` buffers) and mmcls/mmpretrain backbones."""
    out, dropped, notes = Once(), [], []
    for key, v in bb.items():
        why = buffer_reason(key)
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
        out[key] = (key, pointwise(key, v))
    return out, dropped, sorted(set(notes))
