"""Weight-decay groups against the publishers' configs (issue 14, item 5).

Oracle: the rule as mmseg's configs state it, applied by name here, independent of models.optim:
- Swin (configs/swin/*_upernet_*.py): `paramwise_cfg=dict(custom_keys={'absolute_pos_embed': dict(decay_mult=0.),
  'relative_position_bias_table': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)})`, matched as substrings of the
  parameter name by mmengine's DefaultOptimWrapperConstructor; everything else, biases included, decays.
- ConvNeXt (LearningRateDecayOptimizerConstructor): no decay for 1-D parameters, `.bias`, and the position tables.
"""
import pytest
import torch

from models import build_model, param_groups


def _decay_by_name(model, wd):
    decay = {}
    for g in param_groups(model, wd, 1.0):
        for p in g["params"]:
            decay[id(p)] = g["weight_decay"]
    return {n: decay[id(p)] for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["upernet_swin_tiny", "upernet_swin_base_w12"])
def test_swin_weight_decay_is_mmseg_custom_keys(name):
    with torch.device("meta"):
        m = build_model(name, 11)
    got = _decay_by_name(m, 0.01)
    want = {n: 0.0 if any(k in n for k in ("absolute_pos_embed", "relative_position_bias_table", "norm")) else 0.01
            for n, _ in m.named_parameters()}
    assert got == want
    # The differences from the ConvNeXt rule, spelled out: biases and the heads' BatchNorm decay under Swin's config.
    assert got["backbone.stages.0.blocks.0.attn.w_msa.qkv.bias"] == 0.01
    assert got["decode_head.conv_seg.bias"] == 0.01 and got["decode_head.bottleneck.bn.weight"] == 0.01
    assert got["backbone.stages.1.downsample.norm.weight"] == 0.0 and got["backbone.norm3.bias"] == 0.0


def test_convnext_weight_decay_unchanged():
    with torch.device("meta"):
        m = build_model("upernet_convnext_tiny", 11)
    got = _decay_by_name(m, 0.05)
    want = {n: 0.0 if p.ndim <= 1 or n.endswith(".bias") or n.endswith(".gamma") else 0.05
            for n, p in m.named_parameters()}
    assert got == want
    assert got["decode_head.conv_seg.bias"] == 0.0 and got["decode_head.bottleneck.bn.weight"] == 0.0
