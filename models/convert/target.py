"""Fitting a read source to a target model: resized tables, re-initialised classifiers, initialised heads, or an
error naming every key that does not fit."""
from __future__ import annotations

import re

import torch

from .. import misfit_message
from ..registry import backbone_of
from .common import ConversionError, resize_rel_pos_table
from .source import Source, dropped_summary, parse

CLASSIFIERS = ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias",
               "auxiliary_head.conv_seg.weight", "auxiliary_head.conv_seg.bias")


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


def convert(sd: dict, model: torch.nn.Module, src: str = "auto") -> tuple[dict, list[str]]:
    """Foreign state_dict → state_dict that `model` loads strictly, and the notes on what was done (the first names
    the layout; one lists every dropped key and why)."""
    source = parse(sd, src)
    out, notes = fit(source, model)
    if source.dropped:
        notes.append(dropped_summary(source.dropped))
    return out, notes
