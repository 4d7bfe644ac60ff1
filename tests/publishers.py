"""Checkpoint files laid out exactly as their publishers write them, for the models.convert tests.

Where an installed library writes the layout, that library writes it (transformers' save_pretrained, timm's
state_dict). For the layouts nobody installed here writes, each function re-implements the publisher's own code,
named in its docstring, starting from the tensors of a library model (so the reference outputs come from that
library). None of this renames keys of our own model.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch


def randomise(model, seed=0):
    """Non-trivial values everywhere (BN statistics, norms, layer scales, position tables), so that a mistaken
    mapping cannot hide behind an identity initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                base = 1.0 if re.search(r"(norm|layernorm|batch_norm|bn|layer_scale_parameter|gamma)", n) \
                    and n.endswith(("weight", "layer_scale_parameter", "gamma")) else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(p * (1 + 0.5 * torch.rand(p.shape, generator=g)))
        for n, b in model.named_buffers():
            if n.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif n.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


# ------------------------------------------------------------------------------------------------ HF transformers

def hf_hub_upernet(hf_model) -> dict:
    """The layout of the hub files openmmlab/upernet-{convnext,swin}-*: written by transformers 4.2x's
    save_pretrained after transformers/models/upernet/convert_{convnext,swin}_upernet_to_pytorch.py. Names as today's
    save_pretrained writes them, without what only transformers 5 adds (SwinBackbone's `swin.layernorm`), with the
    `attention.self.relative_position_index` buffers that 4.x's SwinSelfAttention saved (persistent then; the
    conversion script renames mmseg's index into them)."""
    import tempfile

    from safetensors.torch import load_file
    with tempfile.TemporaryDirectory() as d:
        hf_model.save_pretrained(d)
        sd = load_file(f"{d}/model.safetensors")
    sd = {k: v for k, v in sd.items() if not re.match(r"^backbone\.(swin|convnext)\.layernorm\.", k)}
    for n, b in hf_model.named_buffers():
        m = re.match(r"^backbone\.swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\..*relative_position_index$", n)
        if m:
            side = int(round(b.numel() ** 0.5))
            sd[f"backbone.encoder.layers.{m[1]}.blocks.{m[2]}.attention.self.relative_position_index"] = \
                b.reshape(side, side).clone()
    return sd


# ---------------------------------------------------------------------------------------- mmsegmentation UperNet

def _correct_unfold_reduction_order(x):  # mmseg tools/model_converters/swin2mmseg.py
    out_channel, in_channel = x.shape
    return x.reshape(out_channel, 4, in_channel // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_channel,
                                                                                                in_channel)


def _correct_unfold_norm_order(x):  # mmseg tools/model_converters/swin2mmseg.py
    in_channel = x.shape[0]
    return x.reshape(4, in_channel // 4)[[0, 2, 1, 3], :].transpose(0, 1).reshape(in_channel)


def mmseg_relative_position_index(window: int) -> torch.Tensor:
    """mmseg mmseg/models/backbones/swin.py WindowMSA.__init__ (double_step_seq, then flip(1)); persistent there."""
    def double_step_seq(step1, len1, step2, len2):
        seq1 = torch.arange(0, step1 * len1, step1)
        seq2 = torch.arange(0, step2 * len2, step2)
        return (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    coords = double_step_seq(2 * window - 1, window, 1, window)
    return (coords + coords.T).flip(1).contiguous()


def mmseg_upernet_from_hf_hub(hub: dict) -> "OrderedDict[str, torch.Tensor]":
    """An mmseg UperNet state_dict: transformers/models/upernet/convert_swin_upernet_to_pytorch.py and
    convert_convnext_upernet_to_pytorch.py run backwards (their create_rename_keys tables, `bn` → `batch_norm`,
    read_in_q_k_v's q/k/v split, reverse_correct_unfold_{reduction,norm}_order), plus mmseg's persistent
    relative_position_index buffers."""
    out = OrderedDict()
    qkv: dict = {}
    swin = any(".attention.self.query." in k for k in hub)
    for k, v in hub.items():
        k = k.replace("batch_norm", "bn").replace("decode_head.classifier.", "decode_head.conv_seg.") \
            .replace("auxiliary_head.classifier.", "auxiliary_head.conv_seg.")
        m = re.match(r"^backbone\.hidden_states_norms\.stage(\d)\.(weight|bias)$", k)
        if m:
            out[f"backbone.norm{int(m[1]) - 1}.{m[2]}"] = v
            continue
        if not k.startswith("backbone."):
            out[k] = v
            continue
        if swin:
            m = re.match(r"^backbone\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.(query|key|value)\."
                         r"(weight|bias)$", k)
            if m:
                qkv.setdefault((m[1], m[2], m[4]), {})[m[3]] = v
                continue
            if k.endswith("relative_position_index"):
                continue  # mmseg's own index is added below
            rules = [(r"^backbone\.embeddings\.patch_embeddings\.projection\.", "backbone.patch_embed.projection."),
                     (r"^backbone\.embeddings\.norm\.", "backbone.patch_embed.norm."),
                     (r"^backbone\.encoder\.layers\.", "backbone.stages."),
                     (r"\.layernorm_before\.", ".norm1."), (r"\.layernorm_after\.", ".norm2."),
                     (r"\.attention\.self\.relative_position_bias_table$", ".attn.w_msa.relative_position_bias_table"),
                     (r"\.attention\.output\.dense\.", ".attn.w_msa.proj."),
                     (r"\.intermediate\.dense\.", ".ffn.layers.0.0."), (r"\.output\.dense\.", ".ffn.layers.1.")]
            for a, b in rules:
                k = re.sub(a, b, k)
            if ".downsample.reduction." in k:
                v = _correct_unfold_reduction_order(v)
            elif ".downsample.norm." in k:
                v = _correct_unfold_norm_order(v)
        else:
            rules = [(r"^backbone\.embeddings\.patch_embeddings\.", "backbone.downsample_layers.0.0."),
                     (r"^backbone\.embeddings\.layernorm\.", "backbone.downsample_layers.0.1."),
                     (r"^backbone\.encoder\.stages\.(\d+)\.downsampling_layer\.", r"backbone.downsample_layers.\1."),
                     (r"^backbone\.encoder\.stages\.(\d+)\.layers\.", r"backbone.stages.\1."),
                     (r"\.dwconv\.", ".depthwise_conv."), (r"\.layernorm\.", ".norm."),
                     (r"\.pwconv(\d)\.", r".pointwise_conv\1."), (r"\.layer_scale_parameter$", ".gamma")]
            for a, b in rules:
                k = re.sub(a, b, k)
        out[k] = v
    for (i, j, wb), parts in qkv.items():
        out[f"backbone.stages.{i}.blocks.{j}.attn.w_msa.qkv.{wb}"] = torch.cat([parts[c] for c in
                                                                              ("query", "key", "value")])
        table = out[f"backbone.stages.{i}.blocks.{j}.attn.w_msa.relative_position_bias_table"]
        window = (int(round(table.shape[0] ** 0.5)) + 1) // 2
        out[f"backbone.stages.{i}.blocks.{j}.attn.w_msa.relative_position_index"] = \
            mmseg_relative_position_index(window)
    return out


class MessageHub:
    """Stands for mmengine's MessageHub, which mmseg 1.x pickles into every checkpoint next to the weights."""

    def __init__(self):
        self.log_scalars = {"train/loss": [0.5, 0.4]}
        self.runtime_info = {"iter": 160000}


def mmseg_checkpoint(state_dict: dict, version: int, classes: int) -> dict:
    """The container mmseg writes: 0.x (mmcv runner save_checkpoint) {'meta', 'state_dict', 'optimizer'}; 1.x
    (mmengine CheckpointHook) adds 'message_hub' (a pickled object) and 'param_schedulers'."""
    names = tuple(f"class{i}" for i in range(classes))
    opt = {"state": {}, "param_groups": [{"lr": 1e-4, "weight_decay": 0.05, "params": [0, 1]}]}
    if version == 0:
        return {"meta": {"mmseg_version": "0.30.0", "config": "model = dict(...)", "CLASSES": names,
                         "PALETTE": [[0, 0, 0]] * classes, "iter": 160000}, "state_dict": state_dict, "optimizer": opt}
    return {"meta": {"dataset_meta": {"classes": names}, "mmengine_version": "0.10.4", "iter": 160000, "seed": 0},
            "state_dict": state_dict, "message_hub": MessageHub(), "optimizer": opt,
            "param_schedulers": [{"last_step": 160000}]}


# ------------------------------------------------------------------------------------------- official ConvNeXt

def official_convnext(timm_model) -> dict:
    """facebookresearch/ConvNeXt models/convnext.py: `downsample_layers.I`, `stages.I.J.{dwconv, norm, pwconv1,
    pwconv2, gamma}`, final `norm`, `head`; released as {'model': state_dict}. From timm's tensors through timm's
    convnext.py checkpoint_filter_fn (official → timm) run backwards."""
    sd = OrderedDict()
    for k, v in timm_model.state_dict().items():
        k = k.replace("stem.", "downsample_layers.0.")
        k = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", k)
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv").replace("head.fc.", "head.")
        k = k.replace("head.norm.", "norm.")
        sd[k] = v
    return {"model": sd}


def mmpretrain_convnext(official: dict) -> dict:
    """mmpretrain tools/model_converters/convnext_to_mmpretrain.py (the mmcls/mmpretrain ConvNeXt model zoo):
    dwconv → depthwise_conv, pwconv → pointwise_conv, final norm → norm3, `backbone.` prefix, head → head.fc;
    saved as dict(state_dict=...)."""
    new = OrderedDict()
    for k, v in official["model"].items():
        if k.startswith("head"):
            new[k.replace("head.", "head.fc.")] = v
            continue
        if k.startswith("stages"):
            k = k.replace("dwconv", "depthwise_conv").replace("pwconv", "pointwise_conv")
        elif k.startswith("norm"):
            k = k.replace("norm", "norm3")
        new["backbone." + k] = v
    return {"state_dict": new}


# ---------------------------------------------------------------------------------------------- official Swin

def _official_index(window: int) -> torch.Tensor:
    """microsoft/Swin-Transformer models/swin_transformer.py WindowAttention.__init__ (persistent buffer)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def _official_mask(res: int, window: int, shift: int) -> torch.Tensor:
    """microsoft/Swin-Transformer SwinTransformerBlock.__init__'s attn_mask for a res×res input (persistent)."""
    img = torch.zeros(1, res, res, 1)
    cnt = 0
    for h in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for w in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, h, w, :] = cnt
            cnt += 1
    win = img.view(1, res // window, window, res // window, window, 1).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(-1, window * window)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def official_swin(timm_model, img_size: int) -> dict:
    """microsoft/Swin-Transformer models/swin_transformer.py, released as {'model': state_dict}: PatchMerging at the
    end of a stage (`layers.I.downsample`, I = 0..2), `head`, final `norm`, and the persistent buffers
    `layers.I.blocks.J.attn.relative_position_index` and, for each shifted block whose stage is larger than the
    window, `layers.I.blocks.J.attn_mask` built for img_size. From timm's tensors through timm's swin_transformer.py
    checkpoint_filter_fn (official → timm) run backwards."""
    sd = OrderedDict()
    window = timm_model.layers[0].blocks[0].window_size[0]
    for k, v in timm_model.state_dict().items():
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", k)
        sd[k.replace("head.fc.", "head.")] = v
    for i, layer in enumerate(timm_model.layers):
        res = img_size // 4 // 2 ** i
        for j in range(len(layer.blocks)):
            sd[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = _official_index(window)
            if j % 2 == 1 and res > window:
                sd[f"layers.{i}.blocks.{j}.attn_mask"] = _official_mask(res, window, window // 2)
    return {"model": sd}


def swin2mmseg(official: dict) -> "OrderedDict[str, torch.Tensor]":
    """mmsegmentation tools/model_converters/swin2mmseg.py convert_swin, the file every mmseg Swin config's
    `checkpoint_file` points at: head dropped; `layers` → `stages`; `attn.` → `attn.w_msa.` (so the index buffer
    moves too, and `attn_mask` stays put); mlp.fc1/fc2 → ffn.layers.0.0 / ffn.layers.1; PatchMerging permuted to
    the nn.Unfold order; `patch_embed.proj` → `patch_embed.projection`; everything else (the final `norm`) kept.
    main() saves the bare dict with torch.save (no prefix, no container)."""
    new = OrderedDict()
    for k, v in official["model"].items():
        if k.startswith("head"):
            continue
        elif k.startswith("layers"):
            new_v = v
            if "attn." in k:
                new_k = k.replace("attn.", "attn.w_msa.")
            elif "mlp." in k:
                new_k = k.replace("mlp.fc1.", "ffn.layers.0.0.") if "mlp.fc1." in k else \
                    k.replace("mlp.fc2.", "ffn.layers.1.") if "mlp.fc2." in k else k.replace("mlp.", "ffn.")
            elif "downsample" in k:
                new_k = k
                if "reduction." in k:
                    new_v = _correct_unfold_reduction_order(v)
                elif "norm." in k:
                    new_v = _correct_unfold_norm_order(v)
            else:
                new_k = k
            new_k = new_k.replace("layers", "stages", 1)
        elif k.startswith("patch_embed"):
            new_v = v
            new_k = k.replace("proj", "projection") if "proj" in k else k
        else:
            new_v, new_k = v, k
        new[new_k] = new_v
    return new


def mmcls_swin(official: dict, version: int) -> dict:
    """mmcls / mmpretrain Swin classifier ({'meta', 'state_dict'}): the mmpretrain SwinTransformer module layout
    (mmpretrain/models/backbones/swin_transformer.py: patch_embed.projection, stages.I.blocks.J.attn.w_msa,
    ffn.layers, stages.I.downsample with mmcv's nn.Unfold PatchMerging, norm3) under `backbone.`, ImageNet head under
    `head.fc.`. Files written before its state-dict version 2 call norm3 `norm`, before version 3 they hold the
    blocks' `attn.attn_mask` buffers; mmpretrain's _load_from_state_dict renames / deletes them."""
    body = swin2mmseg(official)  # the same per-block renaming and unfold permutation
    sd = OrderedDict()
    for k, v in body.items():
        if k.endswith("attn_mask"):
            if version < 3:
                sd["backbone." + k.replace(".attn_mask", ".attn.attn_mask")] = v
            continue
        if k.startswith("norm.") and version >= 2:
            k = k.replace("norm.", "norm3.")
        sd["backbone." + k] = v
    sd["head.fc.weight"], sd["head.fc.bias"] = official["model"]["head.weight"], official["model"]["head.bias"]
    return {"meta": {"mmcls_version": "0.25.0" if version < 3 else "1.0.0"}, "state_dict": sd}


# ------------------------------------------------------------------------ official segmentation repositories

def official_swin_seg(mmseg: dict) -> dict:
    """SwinTransformer/Swin-Transformer-Semantic-Segmentation mmseg/models/backbones/swin_transformer.py under
    mmseg 0.11's EncoderDecoder: `backbone.patch_embed.proj`, `backbone.layers.I.blocks.J.attn.{qkv, proj,
    relative_position_bias_table, relative_position_index}`, `mlp.fc1/fc2`, `layers.I.downsample` in the official
    (x0, x1, x2, x3) channel order, `backbone.norm0..3`; heads as mmseg. From an mmseg UperNet state_dict through
    swin2mmseg.py run backwards."""
    def reverse_reduction(x):  # transformers convert_swin_upernet_to_pytorch.py reverse_correct_unfold_*_order
        o, i = x.shape
        return x.reshape(o, i // 4, 4)[:, :, [0, 2, 1, 3]].transpose(1, 2).reshape(o, i)

    def reverse_norm(x):
        i = x.shape[0]
        return x.reshape(i // 4, 4)[:, [0, 2, 1, 3]].transpose(0, 1).reshape(i)
    out = OrderedDict()
    for k, v in mmseg.items():
        if k.startswith("backbone."):
            k = k.replace("patch_embed.projection.", "patch_embed.proj.").replace("attn.w_msa.", "attn.")
            k = k.replace("ffn.layers.0.0.", "mlp.fc1.").replace("ffn.layers.1.", "mlp.fc2.")
            k = re.sub(r"^backbone\.stages\.", "backbone.layers.", k)
            if ".downsample.reduction." in k:
                v = reverse_reduction(v)
            elif ".downsample.norm." in k:
                v = reverse_norm(v)
        out[k] = v
    return {"meta": {"mmseg_version": "0.11.0"}, "state_dict": out}


def official_convnext_seg(mmseg: dict) -> dict:
    """facebookresearch/ConvNeXt semantic_segmentation/backbone/convnext.py under mmseg: the classification module
    names (`dwconv`, `pwconv1/2`, `gamma`) with per-stage `norm0..3`; heads as mmseg."""
    out = OrderedDict()
    for k, v in mmseg.items():
        if k.startswith("backbone."):
            k = k.replace("depthwise_conv", "dwconv").replace("pointwise_conv", "pwconv")
        out[k] = v
    return {"meta": {"mmseg_version": "0.20.2"}, "state_dict": out}
