"""The encoder-decoder that every script uses: backbone → UPerHead (+ FCN auxiliary head in training)."""
from __future__ import annotations

import torch
from torch import nn

from data.classes import PIXEL_MEAN, PIXEL_STD

from .upernet import FCNHead, UPerHead, resize

MIN_INPUT = 32  # ConvNeXt's stem (stride 4) and three stride-2 downsamplers floor the size: below 32 px stage 4
#                 is empty and the conv fails. Swin pads itself; 32 is the largest output stride of every backbone.


def min_input_padding(h, w):
    """(bottom, right) padding that lifts a side under MIN_INPUT to MIN_INPUT, zero otherwise: the one rule for
    inputs smaller than the model's stride (engine.predict.forward_padded, models.export). torch.sym_max gives plain
    ints for ints and keeps symbolic sizes arithmetic under torch.export (no branch on the size)."""
    return torch.sym_max(h, MIN_INPUT) - h, torch.sym_max(w, MIN_INPUT) - w


class Segmentor(nn.Module):
    """mmseg EncoderDecoder layout: submodules `backbone`, `decode_head`, `auxiliary_head`.

    forward(x) takes a normalised float image (B, 3, H, W). In eval mode it returns the main logits
    (B, num_classes, H, W); in train mode the tuple (main_logits, aux_logits), both at the input size.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int = 512, aux_channels: int = 256,
                 model_name: str = ""):
        super().__init__()
        self.model_name = model_name
        self.num_classes = num_classes
        self.backbone = backbone
        in_ch = list(backbone.out_channels)
        self.decode_head = UPerHead(in_ch, channels, num_classes)
        self.auxiliary_head = FCNHead(in_ch[2], aux_channels, num_classes, in_index=2)
        # Non-persistent: constants, not weights, so mmseg/HF checkpoints still load with strict=True.
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float 0..255 RGB (B, 3, H, W) → normalised float32, on whatever device x is."""
        return (x.float() - self.pixel_mean) / self.pixel_std

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute backbone blocks in backward: much less activation memory for the large backbones."""
        self.backbone.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[2:]
        feats = self.backbone(x)  # 4 × (B, C_i, H / 2^(i+2), W / 2^(i+2))
        logits = resize(self.decode_head(feats), size)  # (B, classes, H, W)
        if not self.training:
            return logits
        return logits, resize(self.auxiliary_head(feats), size)

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, num_classes={self.num_classes}"
