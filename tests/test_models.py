"""models/: registry, shapes, mmseg layout, Swin padding/masks against mmseg's own formulas, optimiser groups,
checkpoint loading. Oracle comparisons with transformers / timm live in test_convert.py."""
import re

import pytest
import torch
import torch.nn.functional as F

import models
from models import build_model, load_model, param_groups, recipe
from models.swin import PatchMerging, relative_position_index, shift_window_mask

# Small overrides that keep each family's code path but run in milliseconds.
TINY_CONVNEXT = dict(dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), channels=16, aux_channels=8)
TINY_SWIN = dict(embed_dims=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=3, channels=16,
                 aux_channels=8)

# Published UperNet parameter counts with 150 ADE20K classes (M): ConvNeXt paper table / mmseg model zoo.
PUBLISHED_M = {
    "upernet_convnext_tiny": 60, "upernet_convnext_small": 82, "upernet_convnext_base": 122,
    "upernet_convnext_large": 235, "upernet_convnext_xlarge": 391,
    "upernet_swin_tiny": 60, "upernet_swin_small": 81, "upernet_swin_base": 121, "upernet_swin_large": 234,
    "upernet_swin_base_w12": 121, "upernet_swin_large_w12": 234,
}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", list(PUBLISHED_M))
def test_registry_param_counts_match_published(name):
    with torch.device("meta"):
        m = build_model(name, 150)
    assert abs(n_params(m) / 1e6 - PUBLISHED_M[name]) < 0.6
    assert m.model_name == name and m.num_classes == 150


def test_registry_lists_every_required_name():
    need = [f"upernet_convnext_{s}" for s in ("tiny", "small", "base", "large", "xlarge")] + \
           [f"upernet_swin_{s}" for s in ("tiny", "small", "base", "large")] + \
           ["upernet_swin_base_w12", "upernet_swin_large_w12", "upernet_convnext_demo"]
    assert set(need) <= set(models.MODELS)
    assert build_model("upernet_demo").model_name == "upernet_convnext_demo"  # alias
    with pytest.raises(KeyError, match="unknown model"):
        build_model("upernet_resnet50")
    with pytest.raises(TypeError, match="unknown override"):
        build_model("upernet_convnext_demo", not_a_knob=1)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_entry_runs_forward_and_backward(name):
    """Every registry entry, with its real architecture, through forward + backward. The big ones on the 'meta'
    device (shapes and autograd only, no memory), the small ones with real numbers."""
    real = name == "upernet_convnext_demo"  # real-number runs of both families: the tests with TINY_* overrides
    dev = "cpu" if real else "meta"
    torch.manual_seed(0)
    with torch.device(dev):
        m = build_model(name, 5, drop_path_rate=0.1).train()
        x = torch.randn(2, 3, 70, 90)  # not a multiple of 32 nor of the window
    main, aux = m(x)
    assert main.shape == aux.shape == (2, 5, 70, 90)
    (main.float().mean() + aux.float().mean()).backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None for g in grads)
    if real:
        assert all(torch.isfinite(g).all() for g in grads)
        m.eval()
        with torch.no_grad():
            out = m(x)
        assert out.shape == (2, 5, 70, 90) and torch.isfinite(out).all()


def test_eval_returns_logits_train_returns_pair():
    m = build_model("upernet_convnext_demo", 7, **{k: v for k, v in TINY_CONVNEXT.items()}).eval()
    x = torch.randn(2, 3, 64, 48)  # batch 2: the PPM's 1×1 pooled BN needs more than one value in training
    assert isinstance(m(x), torch.Tensor) and m(x).shape == (2, 7, 64, 48)
    out = m.train()(x)
    assert isinstance(out, tuple) and len(out) == 2


def test_normalize_uint8_and_buffers_not_in_state_dict():
    from data.classes import PIXEL_MEAN, PIXEL_STD
    m = build_model("upernet_convnext_demo", **TINY_CONVNEXT)
    img = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8)
    y = m.normalize(img)
    ref = (img.float() - torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    assert y.dtype == torch.float32 and torch.allclose(y, ref)
    assert torch.allclose(m.normalize(img.float()), ref)
    assert not any("pixel_" in k for k in m.state_dict())


def _keys_pattern(model):
    return {re.sub(r"\.\d+", ".#", k) for k in model.state_dict()}


def test_mmseg_key_layout_convnext():
    """SPEC §5 mmseg layout, exactly (digits folded to #), for the real ConvNeXt-T config."""
    with torch.device("meta"):
        m = build_model("upernet_convnext_tiny", 150)
    sd = m.state_dict()
    for k in ("backbone.downsample_layers.0.0.weight", "backbone.downsample_layers.0.1.bias",
              "backbone.downsample_layers.3.1.weight", "backbone.stages.2.8.depthwise_conv.weight",
              "backbone.stages.2.8.norm.weight", "backbone.stages.2.8.pointwise_conv1.weight",
              "backbone.stages.2.8.pointwise_conv2.bias", "backbone.stages.3.2.gamma", "backbone.norm3.weight",
              "decode_head.psp_modules.0.1.conv.weight", "decode_head.psp_modules.3.1.bn.running_var",
              "decode_head.bottleneck.conv.weight", "decode_head.lateral_convs.2.bn.num_batches_tracked",
              "decode_head.fpn_convs.0.conv.weight", "decode_head.fpn_bottleneck.bn.weight",
              "decode_head.conv_seg.weight", "auxiliary_head.convs.0.conv.weight", "auxiliary_head.conv_seg.bias"):
        assert k in sd, k
    assert sd["decode_head.conv_seg.weight"].shape == (150, 512, 1, 1)
    assert sd["auxiliary_head.convs.0.conv.weight"].shape == (256, 384, 3, 3)
    assert sd["decode_head.fpn_bottleneck.conv.weight"].shape == (512, 2048, 3, 3)
    assert sd["decode_head.bottleneck.conv.weight"].shape == (512, 768 + 4 * 512, 3, 3)
    bn = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    head = {f"decode_head.{m}.conv.weight" for m in ("psp_modules.#.#", "bottleneck", "lateral_convs.#",
                                                     "fpn_convs.#", "fpn_bottleneck")}
    head |= {f"decode_head.{m}.bn.{b}" for m in ("psp_modules.#.#", "bottleneck", "lateral_convs.#", "fpn_convs.#",
                                                 "fpn_bottleneck") for b in bn}
    head |= {"decode_head.conv_seg.weight", "decode_head.conv_seg.bias", "auxiliary_head.convs.#.conv.weight",
             "auxiliary_head.conv_seg.weight", "auxiliary_head.conv_seg.bias"}
    head |= {f"auxiliary_head.convs.#.bn.{b}" for b in bn}
    backbone = {f"backbone.downsample_layers.#.#.{w}" for w in ("weight", "bias")}
    backbone |= {f"backbone.stages.#.#.{m}.{w}" for m in ("depthwise_conv", "norm", "pointwise_conv1",
                                                          "pointwise_conv2") for w in ("weight", "bias")}
    backbone |= {"backbone.stages.#.#.gamma"} | {f"backbone.norm{i}.{w}" for i in range(4) for w in ("weight", "bias")}
    assert _keys_pattern(m) == backbone | head


def test_mmseg_key_layout_swin():
    with torch.device("meta"):
        m = build_model("upernet_swin_tiny", 150)
    sd = m.state_dict()
    for k in ("backbone.patch_embed.projection.weight", "backbone.patch_embed.norm.weight",
              "backbone.stages.0.blocks.0.attn.w_msa.relative_position_bias_table",
              "backbone.stages.0.blocks.0.attn.w_msa.relative_position_index",
              "backbone.stages.2.blocks.5.attn.w_msa.qkv.weight", "backbone.stages.2.blocks.5.attn.w_msa.proj.bias",
              "backbone.stages.2.blocks.5.ffn.layers.0.0.weight", "backbone.stages.2.blocks.5.ffn.layers.1.bias",
              "backbone.stages.1.blocks.1.norm2.weight", "backbone.stages.0.downsample.reduction.weight",
              "backbone.stages.2.downsample.norm.bias", "backbone.norm0.weight", "backbone.norm3.bias"):
        assert k in sd, k
    assert not any(k.startswith("backbone.stages.3.downsample") for k in sd)
    assert "backbone.stages.0.downsample.reduction.bias" not in sd
    assert sd["backbone.stages.0.blocks.0.attn.w_msa.relative_position_bias_table"].shape == (169, 3)
    assert sd["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"].shape == (49, 49)
    assert sd["backbone.stages.0.downsample.reduction.weight"].shape == (192, 384)
    with torch.device("meta"):
        w12 = build_model("upernet_swin_large_w12", 150)
    assert w12.state_dict()["backbone.stages.3.blocks.1.attn.w_msa.relative_position_bias_table"].shape == (529, 48)


# ------------------------------------------------------------------------- Swin details against mmseg's formulas

def _mmseg_rel_index(wh, ww):
    """mmseg WindowMSA: double_step_seq + transpose + flip."""
    def double_step_seq(step1, len1, step2, len2):
        seq1 = torch.arange(0, step1 * len1, step1)
        seq2 = torch.arange(0, step2 * len2, step2)
        return (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    coords = double_step_seq(2 * ww - 1, wh, 1, ww)
    return (coords + coords.T).flip(1).contiguous()


def _mmseg_shift_mask(h_pad, w_pad, ws, shift):
    """mmseg ShiftWindowMSA: slice-painted region ids → window partition → pairwise != → -100."""
    img_mask = torch.zeros((1, h_pad, w_pad, 1))
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    x = img_mask.view(1, h_pad // ws, ws, w_pad // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    m = x.unsqueeze(1) - x.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


@pytest.mark.parametrize("ws", [3, 7, 12])
def test_relative_position_index_is_mmsegs(ws):
    assert torch.equal(relative_position_index(ws), _mmseg_rel_index(ws, ws))


@pytest.mark.parametrize("hw,ws", [((14, 14), 7), ((21, 14), 7), ((7, 7), 7), ((24, 36), 12), ((9, 6), 3)])
def test_shift_mask_is_mmsegs(hw, ws):
    got = shift_window_mask(*hw, ws, ws // 2, torch.device("cpu"))
    assert torch.equal(got, _mmseg_shift_mask(*hw, ws, ws // 2))


@pytest.mark.parametrize("hw", [(4, 6), (5, 7)])
def test_patch_merging_uses_unfold_order(hw):
    """mmseg's PatchMerging is nn.Unfold(2, stride 2) after padding odd sizes; ours reshapes instead."""
    torch.manual_seed(0)
    c = 3
    pm = PatchMerging(c)
    x = torch.randn(2, *hw, c)  # (B, H, W, C)
    xp = x.permute(0, 3, 1, 2)
    xp = F.pad(xp, (0, hw[1] % 2, 0, hw[0] % 2))
    unf = torch.nn.Unfold(2, stride=2)(xp).transpose(1, 2)  # (B, L, 4C)
    ref = pm.reduction(pm.norm(unf)).view(2, (hw[0] + 1) // 2, (hw[1] + 1) // 2, 2 * c)
    assert torch.allclose(pm(x), ref, atol=1e-6)


# ------------------------------------------------------------------------------------------- speed/memory habits

def test_channels_last_and_bf16_autocast():
    torch.manual_seed(0)
    for ov in (TINY_CONVNEXT, TINY_SWIN):
        name = "upernet_convnext_demo" if "dims" in ov else "upernet_swin_tiny"
        m = build_model(name, 4, **ov).eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            ref = m(x)
            m_cl = m.to(memory_format=torch.channels_last)
            out = m_cl(x.contiguous(memory_format=torch.channels_last))
            assert torch.allclose(out, ref, atol=1e-4)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = m_cl(x.contiguous(memory_format=torch.channels_last))
        assert low.shape == ref.shape and torch.isfinite(low.float()).all()
        assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
        m.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = m(x)
            (a.float().sum() + b.float().sum()).backward()


@pytest.mark.parametrize("name,ov", [("upernet_convnext_demo", TINY_CONVNEXT), ("upernet_swin_tiny", TINY_SWIN)])
def test_grad_checkpointing_gives_the_same_gradients(name, ov):
    torch.manual_seed(0)
    m = build_model(name, 4, drop_path_rate=0.2, **{k: v for k, v in ov.items()}).train()
    x = torch.randn(2, 3, 48, 40)

    def grads():
        m.zero_grad()
        torch.manual_seed(1)
        a, b = m(x)
        (a.square().mean() + b.mean()).backward()
        return [p.grad.clone() for p in m.parameters()]

    plain = grads()
    m.set_grad_checkpointing(True)
    ckpt = grads()
    m.set_grad_checkpointing(False)
    for g0, g1 in zip(plain, ckpt):
        assert torch.allclose(g0, g1, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("name,ov", [("upernet_convnext_demo", TINY_CONVNEXT), ("upernet_swin_tiny", TINY_SWIN)])
def test_torch_compile(name, ov):
    torch.manual_seed(0)
    m = build_model(name, 4, **ov).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m)(x)
    assert torch.allclose(out, ref, atol=1e-4)
    if name == "upernet_convnext_demo":  # the training graph too (train.py --compile)
        m.train()
        a, b = torch.compile(m)(x)
        (a.mean() + b.mean()).backward()


# ------------------------------------------------------------------------------------------ optimiser groups

def _scales(model, decay, layer_decay=0.9, num_layers=None):
    out = {}
    for g in param_groups(model, decay, layer_decay, num_layers):
        for p in g["params"]:
            out[id(p)] = (g["lr_scale"], g["weight_decay"])
    return {n: out[id(p)] for n, p in model.named_parameters()}


def test_layer_decay_convnext_tiny_is_mmseg_stage_wise():
    """mmseg stage_wise rule with the ConvNeXt-T config's num_layers=6: downsample_layers 0.9^7, stage i
    0.9^(6-i), norms and heads 1; no decay on 1-D params."""
    with torch.device("meta"):
        m = build_model("upernet_convnext_tiny", 11)
    s = _scales(m, 0.05)  # num_layers from recipe(): 6 for tiny
    assert recipe("upernet_convnext_tiny")["layer_decay_num_layers"] == 6
    assert s["backbone.downsample_layers.0.0.weight"] == pytest.approx((0.9 ** 7, 0.05))
    assert s["backbone.downsample_layers.2.1.weight"] == pytest.approx((0.9 ** 7, 0.05))
    assert s["backbone.downsample_layers.0.1.weight"] == pytest.approx((0.9 ** 7, 0.0))
    assert s["backbone.stages.0.0.depthwise_conv.weight"] == pytest.approx((0.9 ** 6, 0.05))
    assert s["backbone.stages.1.2.pointwise_conv1.weight"] == pytest.approx((0.9 ** 5, 0.05))
    assert s["backbone.stages.2.8.pointwise_conv2.bias"] == pytest.approx((0.9 ** 4, 0.0))
    assert s["backbone.stages.3.0.gamma"] == pytest.approx((0.9 ** 3, 0.0))
    assert s["backbone.norm2.weight"] == pytest.approx((1.0, 0.0))
    assert s["decode_head.fpn_bottleneck.conv.weight"] == pytest.approx((1.0, 0.05))
    assert s["decode_head.fpn_bottleneck.bn.weight"] == pytest.approx((1.0, 0.0))
    assert s["auxiliary_head.conv_seg.bias"] == pytest.approx((1.0, 0.0))
    # The S/B/L/XL configs use num_layers=12: stage 0 at 0.9^12, downsampling at 0.9^13.
    s12 = _scales(m, 0.05, num_layers=12)
    assert s12["backbone.stages.0.0.norm.weight"][0] == pytest.approx(0.9 ** 12)
    assert s12["backbone.downsample_layers.3.1.weight"][0] == pytest.approx(0.9 ** 13)
    groups = param_groups(m, 0.05, 0.9)
    assert all(set(g) == {"params", "weight_decay", "lr_scale", "name"} for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_swin_groups_no_decay_for_tables_and_norms():
    with torch.device("meta"):
        m = build_model("upernet_swin_tiny", 11)
    r = recipe("upernet_swin_tiny")
    s = _scales(m, r["weight_decay"], r["layer_decay"])
    assert {v[0] for v in s.values()} == {1.0}
    assert s["backbone.stages.0.blocks.0.attn.w_msa.relative_position_bias_table"][1] == 0.0
    assert s["backbone.stages.0.blocks.0.norm1.weight"][1] == 0.0
    assert s["backbone.stages.0.blocks.0.attn.w_msa.qkv.weight"][1] == 0.01


def test_recipes():
    t, xl, sw = recipe("upernet_convnext_tiny"), recipe("upernet_convnext_xlarge"), recipe("upernet_swin_large_w12")
    assert (t["lr"], t["weight_decay"], t["layer_decay"], t["warmup_iters"]) == (1e-4, 0.05, 0.9, 1500)
    assert xl["lr"] == 8e-5 and xl["layer_decay_num_layers"] == 12
    assert (sw["lr"], sw["weight_decay"], sw["layer_decay"], sw["drop_path_rate"]) == (6e-5, 0.01, 1.0, 0.3)
    assert t["betas"] == (0.9, 0.999) and t["warmup_ratio"] == 1e-6 and t["drop_path_rate"] == 0.4
    for n in models.MODELS:
        assert {"lr", "weight_decay", "layer_decay", "warmup_iters", "betas", "drop_path_rate"} <= set(recipe(n))


# -------------------------------------------------------------------------------------------------- load_model

def _save(tmp_path, obj, name="m.pth"):
    p = tmp_path / name
    torch.save(obj, p)
    return p


def test_load_model_roundtrip_and_wrappers(tmp_path):
    torch.manual_seed(0)
    m = build_model("upernet_convnext_demo", 5).eval()
    sd = {f"_orig_mod.{k}": v for k, v in m.state_dict().items()}  # a compiled model's keys are tolerated
    p = _save(tmp_path, {"model": sd, "model_name": "upernet_convnext_demo", "num_classes": 5, "iter": 10})
    m2 = load_model(p, num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_load_model_errors_say_what_differs(tmp_path):
    m = build_model("upernet_convnext_demo", 5)
    sd = m.state_dict()
    good = {"model": sd, "model_name": "upernet_convnext_demo", "num_classes": 5}
    with pytest.raises(ValueError, match="has 5 classes but 11"):
        load_model(_save(tmp_path, good), num_classes=11)
    with pytest.raises(ValueError, match="not in the registry"):
        load_model(_save(tmp_path, {**good, "model_name": "upernet_vit"}))
    with pytest.raises(ValueError, match="expected a dict with 'model'"):
        load_model(_save(tmp_path, sd))
    bad = dict(sd)
    bad.pop("backbone.norm0.weight")
    bad["decode_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: backbone\.norm0\.weight[\s\S]*unexpected keys: "
                                         r"decode_head\.extra\.weight"):
        load_model(_save(tmp_path, {**good, "model": bad}))
    ch = models.MODELS["upernet_convnext_demo"]["channels"]
    with pytest.raises(ValueError, match=rf"shape mismatches: decode_head\.conv_seg\.weight: \(5, {ch}, 1, 1\) in .* "
                                         rf"vs \(7, {ch}, 1, 1\)"):
        load_model(_save(tmp_path, {**good, "num_classes": 7}))


def test_python_m_models_prints_params_and_flops(capsys):
    from models.__main__ import get_args_parser, main
    assert main(get_args_parser().parse_args(["upernet_convnext_demo", "upernet_swin_tiny"])) == 0
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("upernet_swin_tiny")][0]
    params, gflops = float(line.split()[1]), float(line.split()[2])
    assert 59 < params < 61 and 400 < gflops < 520  # mmseg: 236 GMACs at 512×512 (945 at 512×2048)


@pytest.mark.gpu
@pytest.mark.parametrize("name,ov", [("upernet_convnext_demo", TINY_CONVNEXT), ("upernet_swin_tiny", TINY_SWIN)])
def test_cuda_matches_cpu_and_runs_bf16_channels_last(name, ov):
    torch.manual_seed(0)
    m = build_model(name, 4, **ov).eval()
    x = torch.randn(2, 3, 100, 76)
    with torch.no_grad():
        ref = m(x)
        mc = m.cuda().to(memory_format=torch.channels_last)
        xc = x.cuda().contiguous(memory_format=torch.channels_last)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        assert torch.allclose(mc(xc).cpu(), ref, atol=1e-4, rtol=1e-4)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = mc(xc)
    assert (low.float().cpu() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
    mc.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = mc(xc)
        (a.float().mean() + b.float().mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in mc.parameters())
