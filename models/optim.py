"""AdamW parameter groups with mmseg's stage-wise learning-rate decay and each backbone's weight-decay rule.

The rule is mmseg's `LearningRateDecayOptimizerConstructor` with `decay_type='stage_wise'` (mmseg
`engine/optimizers/layer_decay_optimizer_constructor.py`), with `num_layers` as in the configs (ConvNeXt-T: 6;
S/B/L/XL: 12):

    layer_id = stage_id(name)   for a backbone parameter its family places in a stage (0 for the stem, i + 1 for
                                stage i; ConvNeXt: mmseg's get_stage_id_for_convnext, Swin: its counterpart)
             = num_layers + 1   for everything else (the backbone's output norms norm0..3, decode_head,
                                auxiliary_head)
    lr_scale = layer_decay ** (num_layers + 1 - layer_id)

so the heads and the output norms train at the full lr, stage 3 at decay^(num_layers-3), …, stage 0 at
decay^num_layers and the stem (for ConvNeXt every downsampling layer) at decay^(num_layers+1).

Weight decay follows each family's mmseg config (`no_weight_decay` of its entry in models.registry.BACKBONES; the
rules are in models/convnext.py and models/swin.py): ConvNeXt exempts every 1-D parameter and the position tables,
Swin only names containing 'absolute_pos_embed', 'relative_position_bias_table' or 'norm'.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .registry import backbone_of, recipe


def layer_id(name: str, num_layers: int, stage_id: Callable[[str], int | None]) -> int:
    """The layer-decay id of a segmentor parameter (full name), given its backbone family's stage_id."""
    head, _, rest = name.partition(".")
    if head == "backbone" and rest:
        sid = stage_id(rest)
        if sid is not None:
            return sid
    return num_layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 num_layers: int | None = None) -> list[dict]:
    """Groups for torch.optim.AdamW: each {'params', 'weight_decay', 'lr_scale', 'name'}.

    The training loop sets each group's lr to base_lr * lr_scale * schedule(step). `num_layers` defaults to the
    mmseg config value for the model's registry entry (ConvNeXt-T 6, others 12).
    """
    if num_layers is None:
        try:
            num_layers = recipe(getattr(model, "model_name", ""))["layer_decay_num_layers"]
        except KeyError:
            num_layers = 12
    _, family = backbone_of(model.backbone)
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = family.no_weight_decay(name, p)
        lid = layer_id(name, num_layers, family.stage_id)
        key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (num_layers + 1 - lid), "name": key}
        groups[key]["params"].append(p)
    return list(groups.values())
