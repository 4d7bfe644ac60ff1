"""models/: image → logits. A plain registry from name to explicit hyper-parameters, plus build/load helpers.

    model = build_model("upernet_convnext_tiny", num_classes=11)      # random init (mmseg initialisation)
    model = load_model("work/convnext_t.pth")                           # {'model', 'model_name', 'num_classes'}
    groups = param_groups(model, **{k: recipe(name)[k] for k in ("weight_decay", "layer_decay")})

Architectures follow mmseg's configs (SPEC §4): UperNet head with 512 channels, FCN auxiliary head with 256 on stage 3.
"""
from __future__ import annotations

import os

import torch

from data.classes import NUM_CLASSES

from .convnext import ConvNeXt
from .optim import param_groups
from .segmentor import Segmentor
from .swin import SwinTransformer

__all__ = ["MODELS", "Segmentor", "build_model", "load_model", "param_groups", "recipe"]


def _convnext(depths, dims, drop_path_rate):
    # layer_scale_init 1.0 as in mmseg's UperNet-ConvNeXt configs (the pretrained gammas replace it anyway).
    return dict(backbone="convnext", depths=depths, dims=dims, drop_path_rate=drop_path_rate,
                layer_scale_init=1.0, channels=512, aux_channels=256)


def _swin(embed_dims, depths, num_heads, window_size):
    return dict(backbone="swin", embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                window_size=window_size, mlp_ratio=4.0, drop_path_rate=0.3, channels=512, aux_channels=256)


MODELS: dict[str, dict] = {
    "upernet_convnext_tiny": _convnext((3, 3, 9, 3), (96, 192, 384, 768), 0.4),
    "upernet_convnext_small": _convnext((3, 3, 27, 3), (96, 192, 384, 768), 0.3),
    "upernet_convnext_base": _convnext((3, 3, 27, 3), (128, 256, 512, 1024), 0.4),
    "upernet_convnext_large": _convnext((3, 3, 27, 3), (192, 384, 768, 1536), 0.4),
    "upernet_convnext_xlarge": _convnext((3, 3, 27, 3), (256, 512, 1024, 2048), 0.4),
    "upernet_swin_tiny": _swin(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "upernet_swin_small": _swin(96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "upernet_swin_base": _swin(128, (2, 2, 18, 2), (4, 8, 16, 32), 7),
    "upernet_swin_large": _swin(192, (2, 2, 18, 2), (6, 12, 24, 48), 7),
    "upernet_swin_base_w12": _swin(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "upernet_swin_large_w12": _swin(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
    # Small enough to train from scratch on 2 CPU cores at 256 px in minutes (the `make train` demo).
    # 1.7 M parameters, 2.1 GFLOPs per 256×256 image (the UPerHead's stride-4 fusion conv is 1.2 of them).
    "upernet_convnext_demo": dict(backbone="convnext", depths=(1, 1, 2, 1), dims=(32, 64, 128, 256),
                                  drop_path_rate=0.0, layer_scale_init=1.0, channels=64, aux_channels=32),
}
ALIASES = {"upernet_demo": "upernet_convnext_demo"}

_BACKBONE_KEYS = {"convnext": ("depths", "dims", "drop_path_rate", "layer_scale_init"),
                  "swin": ("embed_dims", "depths", "num_heads", "window_size", "mlp_ratio", "drop_path_rate")}


def _lookup(name: str) -> tuple[str, dict]:
    name = ALIASES.get(name, name)
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}")
    return name, MODELS[name]


def build_model(name: str, num_classes: int = NUM_CLASSES, **overrides) -> Segmentor:
    """Build a registry model with mmseg's initialisation. overrides replace registry entries (e.g. drop_path_rate,
    channels); an unknown key is an error."""
    name, cfg = _lookup(name)
    unknown = set(overrides) - set(cfg) - {"backbone"}
    if unknown:
        raise TypeError(f"unknown override(s) {sorted(unknown)} for {name}; known: {sorted(set(cfg) - {'backbone'})}")
    cfg = {**cfg, **overrides}
    kw = {k: cfg[k] for k in _BACKBONE_KEYS[cfg["backbone"]]}
    backbone = ConvNeXt(**kw) if cfg["backbone"] == "convnext" else SwinTransformer(**kw)
    return Segmentor(backbone, num_classes, cfg["channels"], cfg["aux_channels"], model_name=name)


def recipe(name: str) -> dict:
    """SPEC §4 optimisation defaults (mmseg configs) for a registry model.

    lr is the head's; backbone groups get lr * lr_scale from param_groups(). Schedule: linear warmup over
    warmup_iters from lr * warmup_ratio, then poly(power) to min_lr.
    """
    name, cfg = _lookup(name)
    common = dict(betas=(0.9, 0.999), warmup_iters=1500, warmup_ratio=1e-6, poly_power=1.0, min_lr=0.0,
                  aux_loss_weight=0.4, batch_size=16, drop_path_rate=cfg["drop_path_rate"])
    if name == "upernet_convnext_demo":
        # From scratch on CPU: a larger lr (what `make train` passes), a short warmup, no layer decay.
        return {**common, "lr": 2e-3, "weight_decay": 0.05, "layer_decay": 1.0, "layer_decay_num_layers": 12,
                "warmup_iters": 50, "batch_size": 8}
    if cfg["backbone"] == "convnext":
        return {**common, "lr": 8e-5 if name.endswith("xlarge") else 1e-4, "weight_decay": 0.05,
                "layer_decay": 0.9, "layer_decay_num_layers": 6 if name.endswith("tiny") else 12}
    # mmseg's Swin configs use no layer decay (paramwise custom_keys only zero the decay of norms/position tables).
    return {**common, "lr": 6e-5, "weight_decay": 0.01, "layer_decay": 1.0, "layer_decay_num_layers": 12}


def _strip_prefixes(sd: dict) -> dict:
    """Tolerate DDP ('module.') and torch.compile ('_orig_mod.') wrappers in a saved state_dict."""
    out = {}
    for k, v in sd.items():
        for p in ("module.", "_orig_mod."):
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def misfit_message(head: str, missing: list[str], unexpected: list[str], shapes: list[str],
                   labels: tuple[str, str] = ("missing keys", "unexpected keys"), limit: int = 8) -> str | None:
    """The report of a state dict that does not fit a model (the first `limit` keys of each kind), or None if it fits.
    Shared by check_state_dict (checkpoints) and models.convert (sources), which word the two key lists their way."""
    if not (missing or unexpected or shapes):
        return None

    def show(xs):
        return ", ".join(xs[:limit]) + (f", … ({len(xs)} in all)" if len(xs) > limit else "")
    rows = [(labels[0], missing), (labels[1], unexpected), ("shape mismatches", shapes)]
    return "\n".join([head] + [f"  {label}: {show(xs)}" for label, xs in rows if xs])


def check_state_dict(model: torch.nn.Module, sd: dict, what: str = "checkpoint") -> None:
    """Raise a ValueError naming missing / unexpected keys and shape mismatches (the first few of each)."""
    own = model.state_dict()
    shapes = [f"{k}: {tuple(sd[k].shape)} in {what} vs {tuple(own[k].shape)} in model"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    msg = misfit_message(f"{what} does not fit {getattr(model, 'model_name', type(model).__name__)}:",
                         [k for k in own if k not in sd], [k for k in sd if k not in own], shapes)
    if msg:
        raise ValueError(msg)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", num_classes: int | None = None,
               **overrides) -> Segmentor:
    """Build and strictly load a model from a torch file {'model': state_dict, 'model_name', 'num_classes'} (what
    models.convert writes and what train.py saves; other keys are ignored). Raises ValueError saying what differs."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or not {"model", "model_name", "num_classes"} <= set(ckpt):
        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: expected a dict with 'model', 'model_name', 'num_classes' (got {keys}); "
                         "convert foreign checkpoints with `python -m models.convert`")
    name, c = ckpt["model_name"], int(ckpt["num_classes"])
    if ALIASES.get(name, name) not in MODELS:
        raise ValueError(f"{path}: model_name {name!r} is not in the registry ({', '.join(MODELS)})")
    if num_classes is not None and num_classes != c:
        raise ValueError(f"{path}: has {c} classes but {num_classes} were asked for; re-convert with "
                         f"`python -m models.convert {path} NEW.pth --model {name} --num-classes {num_classes}`")
    model = build_model(name, c, **overrides)
    sd = _strip_prefixes(ckpt["model"])
    check_state_dict(model, sd, what=str(path))
    model.load_state_dict(sd, strict=True)
    return model.to(map_location) if not isinstance(map_location, dict) and map_location is not None else model
