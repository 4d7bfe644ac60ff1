"""The model registry: one table of backbone families, one of named models, their optimisation recipes.

    BACKBONES["swin"]                   # a family: class, hyper-parameter keys, optimiser rules, converter rules
    MODELS["upernet_swin_tiny"]         # a named model: its family and explicit hyper-parameters
    recipe("upernet_swin_tiny")         # its optimisation defaults (SPEC §4, mmseg's configs)
    backbone_of(model.backbone)         # the family entry of a built backbone

A new backbone family is a module with its class and the three rules its parameter names decide (stage_id,
no_weight_decay, hparams_from_state_dict; see models/convnext.py), one BACKBONES entry and its MODELS entries:
build_model, param_groups (layer decay, weight decay) and models.convert read every family fact from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import convnext, swin


@dataclass(frozen=True)
class Backbone:
    """What the toolkit needs to know about a backbone family."""
    cls: type[nn.Module]
    keys: tuple[str, ...]                       # the MODELS entry's keys passed to cls(**)
    recipe: Callable[[str], dict]               # model name → the family's optimiser settings (see recipe())
    stage_id: Callable[[str], int | None]       # backbone parameter name → layer-decay id (None: the heads')
    no_weight_decay: Callable[[str, torch.Tensor], bool]  # segmentor parameter name → exempt from weight decay
    hparams: Callable[[dict], dict]             # backbone state_dict (our names) → its hyper-parameters
    size: tuple[tuple[str, str], ...]           # (label, key): the hyper-parameters that tell registry models apart
    exact: tuple[str, ...] = ()                 # further keys a converted checkpoint matches exactly or is resized to


def _convnext_recipe(name: str) -> dict:
    # mmseg's UperNet-ConvNeXt configs: layer decay 0.9 over num_layers 6 (T) or 12 (S/B/L/XL); XL at lr 8e-5.
    return {"lr": 8e-5 if name.endswith("xlarge") else 1e-4, "weight_decay": 0.05, "layer_decay": 0.9,
            "layer_decay_num_layers": 6 if name.endswith("tiny") else 12}


def _swin_recipe(name: str) -> dict:
    # mmseg's Swin configs use no layer decay (paramwise custom_keys only zero the decay of norms/position tables).
    return {"lr": 6e-5, "weight_decay": 0.01, "layer_decay": 1.0, "layer_decay_num_layers": 12}


BACKBONES: dict[str, Backbone] = {
    "convnext": Backbone(
        cls=convnext.ConvNeXt, keys=("depths", "dims", "drop_path_rate", "layer_scale_init"),
        recipe=_convnext_recipe, stage_id=convnext.stage_id, no_weight_decay=convnext.no_weight_decay,
        hparams=convnext.hparams_from_state_dict, size=(("dims", "dims"), ("depths", "depths"))),
    "swin": Backbone(
        cls=swin.SwinTransformer,
        keys=("embed_dims", "depths", "num_heads", "window_size", "mlp_ratio", "drop_path_rate"),
        recipe=_swin_recipe, stage_id=swin.stage_id, no_weight_decay=swin.no_weight_decay,
        hparams=swin.hparams_from_state_dict,
        size=(("embed", "embed_dims"), ("depths", "depths"), ("heads", "num_heads")), exact=("window_size",)),
}


def backbone_of(module: nn.Module) -> tuple[str, Backbone]:
    """(family name, entry) of a backbone module; KeyError for a class no entry names."""
    for family, entry in BACKBONES.items():
        if isinstance(module, entry.cls):
            return family, entry
    raise KeyError(f"backbone {type(module).__name__} is not in models.registry.BACKBONES")


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

# A model's departures from its family's recipe.
RECIPE_OVERRIDES: dict[str, dict] = {
    # From scratch on the CPU: a larger lr (what `make train` passes), a short warmup, no layer decay.
    "upernet_convnext_demo": {"lr": 2e-3, "layer_decay": 1.0, "warmup_iters": 50, "batch_size": 8},
}


def lookup(name: str) -> tuple[str, dict]:
    """(canonical name, MODELS entry) of a registry name or alias; KeyError listing the names otherwise."""
    name = ALIASES.get(name, name)
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from: {', '.join(MODELS)}")
    return name, MODELS[name]


def recipe(name: str) -> dict:
    """SPEC §4 optimisation defaults (mmseg configs) for a registry model.

    lr is the head's; backbone groups get lr * lr_scale from param_groups(). Schedule: linear warmup over
    warmup_iters from lr * warmup_ratio, then poly(power) to min_lr.
    """
    name, cfg = lookup(name)
    common = dict(betas=(0.9, 0.999), warmup_iters=1500, warmup_ratio=1e-6, poly_power=1.0, min_lr=0.0,
                  aux_loss_weight=0.4, batch_size=16, drop_path_rate=cfg["drop_path_rate"])
    return {**common, **BACKBONES[cfg["backbone"]].recipe(name), **RECIPE_OVERRIDES.get(name, {})}
