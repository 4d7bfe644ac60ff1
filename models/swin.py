"""Swin Transformer backbone that computes what mmseg's `SwinTransformer` computes, under mmseg's parameter names.

Layout (SPEC §5): `patch_embed.{projection, norm}`, `stages.I.blocks.J.{norm1, attn.w_msa.{qkv, proj,
relative_position_bias_table, relative_position_index}, norm2, ffn.layers.0.0, ffn.layers.1}`,
`stages.I.downsample.{norm, reduction}` (at the end of stage I, like the official code), `norm0..3` on the pre-merge
output of each stage.

Any input size is handled the mmseg way: PatchEmbed pads the image to a multiple of 4 (bottom/right); every block pads
its input to a multiple of the window (padded tokens are zeros after norm1 and are not masked in plain windows);
shift masks are built for the padded size; PatchMerging pads odd sizes; the shift is never disabled for small stages.
Activations stay (B, H, W, C) between blocks, so windows are cut with reshapes only.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import DropPath, drop_path_rates, init_trunc_normal


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) index into the ((2W-1)^2, heads) bias table, N = W*W; identical to mmseg's and the official one."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), each in [0, 2W-2]
    return rel[0] * (2 * window - 1) + rel[1]  # (N, N)


def shift_window_mask(h_pad: int, w_pad: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """(nW, N, N) additive mask (0 / -100) for shifted windows on a padded (h_pad, w_pad) map (mmseg's slices)."""
    h = torch.arange(h_pad, device=device)
    w = torch.arange(w_pad, device=device)
    # Region 0: [0, L - W), 1: [L - W, L - shift), 2: [L - shift, L): mmseg's (h_slices × w_slices) numbering.
    h_region = (h >= h_pad - window).long() + (h >= h_pad - shift).long()
    w_region = (w >= w_pad - window).long() + (w >= w_pad - shift).long()
    region = h_region[:, None] * 3 + w_region[None, :]  # (h_pad, w_pad)
    region = region.view(h_pad // window, window, w_pad // window, window).transpose(1, 2).reshape(-1, window * window)
    mask = region[:, None, :] != region[:, :, None]  # (nW, N, N)
    return torch.zeros(mask.shape, device=device).masked_fill_(mask, -100.0)


class WindowMSA(nn.Module):
    """Multi-head self-attention inside one window, with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        # Persistent like mmseg's, so mmseg checkpoints (which carry it) load strictly; it is never trained.
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, batch: int, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape  # (B * nW, N, C)
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B * nW, heads, N, hd)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (N * N, heads)
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            # Fused SDPA kernels want 4-D inputs, so the per-window mask is repeated over the batch.
            bias = (bias + mask.unsqueeze(1)).expand(batch, -1, -1, -1, -1)  # (B, nW, heads, N, N)
            bias = bias.reshape(bw, self.num_heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))  # (B * nW, N, C)


class ShiftWindowMSA(nn.Module):
    """Pads to the window, cyclically shifts, attends inside windows, and undoes all three."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.w_msa = WindowMSA(dim, num_heads, window)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # (B, Hp, Wp, C), zeros after norm1 as in mmseg
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = x.view(b, hp // ws, ws, wp // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)  # (B*nW, N, C)
        windows = self.w_msa(windows, b, mask if self.shift else None)
        x = windows.view(b, hp // ws, wp // ws, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        if pad_b or pad_r:
            x = x[:, :h, :w, :]
        return x  # (B, H, W, C)


class FFN(nn.Module):
    """mmcv FFN with two fcs; module layout gives `ffn.layers.0.0` and `ffn.layers.1`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0)),
                                    nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, shift: bool, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftWindowMSA(dim, num_heads, window, window // 2 if shift else 0)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask))  # (B, H, W, C)
        return x + self.drop_path(self.ffn(self.norm2(x)))


class PatchMerging(nn.Module):
    """2×2 neighbourhood → LN(4C) → Linear(2C), channels in nn.Unfold order (c-major, then (kh, kw)) as mmseg."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, 2C)


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 drop_path: list[float], downsample: bool):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, shift=j % 2 == 1, mlp_ratio=mlp_ratio, drop_path=drop_path[j])
            for j in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, h, w, _ = x.shape
        ws = self.window
        mask = None
        if len(self.blocks) > 1:  # one mask per stage, shared by its shifted blocks
            mask = shift_window_mask(-(-h // ws) * ws, -(-w // ws) * ws, ws, ws // 2, x.device)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        out = x  # (B, H, W, C) before merging: this stage's feature
        if self.downsample is not None:
            x = self.downsample(x)
        return out, x


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int = 4):
        super().__init__()
        self.patch = patch
        self.projection = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = self.patch
        if h % p or w % p:  # mmseg AdaptivePadding('corner'): pad bottom/right
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        return self.norm(self.projection(x).permute(0, 2, 3, 1))  # (B, H/4, W/4, C)


class SwinTransformer(nn.Module):
    def __init__(self, embed_dims: int = 96, depths: tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: tuple[int, ...] = (3, 6, 12, 24), window_size: int = 7, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.3, in_chans: int = 3):
        super().__init__()
        assert len(depths) == len(num_heads) == 4, "Swin has four stages"
        self.window_size = window_size
        dims = [embed_dims * 2 ** i for i in range(4)]
        self.out_channels = dims
        self.patch_embed = PatchEmbed(in_chans, embed_dims)
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList(
            SwinStage(dims[i], depths[i], num_heads[i], window_size, mlp_ratio, dpr[i], downsample=i < 3)
            for i in range(4))
        for i in range(4):
            self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))
        # mmseg SwinTransformer.init_weights (no pretrained): TruncNormal(.02) on Linear, Constant(1, 0) on LayerNorm,
        # WindowMSA tables TruncNormal(.02); the patch-embedding conv keeps PyTorch's default init.
        init_trunc_normal(self, std=0.02, types=(nn.Linear,))
        for m in self.modules():
            if isinstance(m, WindowMSA):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        outs = []
        for i, stage in enumerate(self.stages):
            out, x = stage(x)
            # (B, C, H, W) view of an NHWC tensor: channels_last memory format, which the head's convs like.
            outs.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2))
        return outs


# ------------------------------------------------------------ rules tied to the names above (models.registry's entry)

def stage_id(name: str) -> int | None:
    """Layer-decay id of a backbone parameter (its name under `backbone.`): 0 for patch_embed.*, i + 1 for stages.i.*
    (the PatchMerging at its end included), None for the output norms norm0..3, which train with the heads. mmseg has
    no Swin rule (its Swin configs use no layer decay): this is the ConvNeXt rule's counterpart, and the recipe's
    layer_decay = 1.0 makes it a no-op."""
    parts = name.split(".")
    if parts[0] == "patch_embed":
        return 0
    if parts[0] == "stages":
        return int(parts[1]) + 1
    return None


# mmseg's Swin configs' paramwise_cfg.custom_keys with decay_mult=0 (configs/swin/swin-tiny-patch4-window7-in1k-pre_
# upernet_8xb2-160k_ade20k-512x512.py), matched as substrings of the full name (mmengine
# DefaultOptimWrapperConstructor: `if key in name`).
NO_DECAY_KEYS = ("absolute_pos_embed", "relative_position_bias_table", "norm")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Whether a segmentor parameter (full name) is exempt from weight decay under mmseg's UperNet-Swin configs: only
    names containing one of NO_DECAY_KEYS; every other parameter, biases and the heads' BatchNorm (`bn`) included,
    decays."""
    return any(key in name for key in NO_DECAY_KEYS)


def hparams_from_state_dict(sd: dict) -> dict:
    """embed_dims, depths, num_heads and window_size read off a backbone state_dict under the names above (no
    `backbone.` prefix); the window follows from the bias table's side 2W - 1."""
    depths = []
    for i in range(4):
        pat = rf"^stages\.{i}\.(blocks\.)?(\d+)\."
        depths.append(len({re.match(pat, k).groups()[-1] for k in sd if re.match(pat, k)}))
    embed = sd.get("patch_embed.projection.weight")
    heads, window = [], None
    for i in range(4):
        t = sd.get(f"stages.{i}.blocks.0.attn.w_msa.relative_position_bias_table")
        if t is not None:
            heads.append(int(t.shape[1]))
            window = (int(round(t.shape[0] ** 0.5)) + 1) // 2
    return {"embed_dims": int(embed.shape[0]) if embed is not None else None, "depths": tuple(depths),
            "num_heads": tuple(heads), "window_size": window}
