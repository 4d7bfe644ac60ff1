"""AdamW parameter groups with mmseg's stage-wise learning-rate decay and no weight decay for 1-D parameters.

The rule is mmseg's `LearningRateDecayOptimizerConstructor` with `decay_type='stage_wise'` (mmseg
`engine/optimizers/layer_decay_optimizer_constructor.py`, `get_stage_id_for_convnext`), with `num_layers` as in the
configs (ConvNeXt-T: 6; S/B/L/XL: 12):

    layer_id = 0            for backbone.downsample_layers.*  (the stem AND the three between-stage downsamplers)
             = i + 1        for backbone.stages.i.*
             = num_layers+1 for everything else (backbone.norm0..3, decode_head, auxiliary_head)
    lr_scale = layer_decay ** (num_layers + 1 - layer_id)

so the heads and the output norms train at the full lr, stage 3 at decay^(num_layers-3), …, stage 0 at
decay^num_layers and every downsampling layer at decay^(num_layers+1). mmseg has no Swin rule (its Swin configs use no
layer decay); for Swin the same mapping is applied with patch_embed as layer 0 and stages.i (including the merge at
its end) as i+1, and it is a no-op at the recipe's layer_decay = 1.0.

Weight decay follows each family's mmseg config:
- ConvNeXt (the layer-decay constructor): 0 for every 1-D parameter (norm weights and biases, conv/linear biases,
  layer-scale `gamma`) and for `relative_position_bias_table` / `absolute_pos_embed`;
- Swin (`configs/swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py`: DefaultOptimWrapper
  with `paramwise_cfg.custom_keys` {'absolute_pos_embed', 'relative_position_bias_table', 'norm'} → decay_mult 0):
  0 only for parameters whose name contains one of those three substrings; every other parameter, biases and the
  heads' BatchNorm (`bn`) included, is decayed.
"""
from __future__ import annotations

from torch import nn

from .swin import SwinTransformer

NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed", "pos_embed", "gamma")
# mmseg Swin configs' paramwise_cfg.custom_keys with decay_mult=0, matched as substrings of the full name (mmengine
# DefaultOptimWrapperConstructor: `if key in name`).
SWIN_NO_DECAY_KEYS = ("absolute_pos_embed", "relative_position_bias_table", "norm")


def no_weight_decay(name: str, param, swin: bool) -> bool:
    """Whether `name` is exempt from weight decay under its family's mmseg config (see the module docstring)."""
    if swin:
        return any(key in name for key in SWIN_NO_DECAY_KEYS)
    return param.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES


def layer_id(name: str, num_layers: int) -> int:
    parts = name.split(".")
    if parts[0] == "backbone" and len(parts) > 2:
        if parts[1] in ("downsample_layers", "patch_embed"):
            return 0
        if parts[1] == "stages":
            return int(parts[2]) + 1
    return num_layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 num_layers: int | None = None) -> list[dict]:
    """Groups for torch.optim.AdamW: each {'params', 'weight_decay', 'lr_scale', 'name'}.

    The training loop sets each group's lr to base_lr * lr_scale * schedule(step). `num_layers` defaults to the
    mmseg config value for the model's registry entry (ConvNeXt-T 6, others 12).
    """
    if num_layers is None:
        from . import recipe  # late import: the registry imports this module
        try:
            num_layers = recipe(getattr(model, "model_name", ""))["layer_decay_num_layers"]
        except KeyError:
            num_layers = 12
    swin = isinstance(getattr(model, "backbone", None), SwinTransformer)
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = no_weight_decay(name, p, swin)
        lid = layer_id(name, num_layers)
        key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (num_layers + 1 - lid), "name": key}
        groups[key]["params"].append(p)
    return list(groups.values())
