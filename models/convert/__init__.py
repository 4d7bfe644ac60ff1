"""Convert published checkpoints into this toolkit's layout (mmseg names), strictly, checked against the target model.

    python -m models.convert SRC DST --model NAME [--from auto|mmseg|mmpretrain|hf|timm|official] [--num-classes C]
    python -m models.convert SRC --inspect [--model NAME]      # layout, family, size, window, classes, drops; no file

SRC, in each publisher's own layout (README "Converting checkpoints" has the table):
- mmseg UperNet checkpoints, 0.x and 1.x ({'meta', 'state_dict', ...}), and mmseg's backbone pretrain files as
  tools/model_converters/swin2mmseg.py writes them (bare dict, `w_msa`, `ffn`, unfold merge order, buffers, `norm`);
- mmcls / mmpretrain classifiers (`backbone.`, `neck.`, `head.`; ConvNeXt `norm3`, Swin `norm3` or pre-v2 `norm`);
- HF transformers: openmmlab/upernet-* hub files, the pinned version's save_pretrained output (a directory,
  model.safetensors or pytorch_model.bin), facebook/convnext-* and microsoft/swin-* classification models;
- timm ConvNeXt (including 1×1-conv MLP and head-norm-first variants) and Swin, any in1k / in22k head;
- the official ConvNeXt / Swin repositories ({'model'}: classifier files with `head`, `norm`,
  `relative_position_index` / `attn_mask` buffers, `layers.I.downsample` at the end of a stage) and their
  segmentation checkpoints.
DST is a torch file {'model': state_dict, 'model_name': NAME, 'num_classes': C} that `models.load_model` /
`build_model(NAME, C)` loads strictly; it is written atomically.

Strict, and explained:
- every source key is mapped or dropped on purpose; each dropped key is printed with its reason (classifier head,
  classification neck, the classifier's final norm, relative_position_index / attn_mask buffers rebuilt for the
  target, HF's unused final layernorm);
- Swin PatchMerging weights are permuted from the official/timm/HF channel order (x0, x1, x2, x3) to mmseg's
  nn.Unfold order (SPEC §5); HF's split q/k/v are concatenated; 1×1-conv MLP weights become Linear weights;
- relative_position_bias_table is resized bicubically (mmseg's rule) when the window differs (e.g. 7 → 12);
- a segmentation checkpoint (one with a decode head) must supply every tensor of the target, output norms and the
  auxiliary head included; only a class count change (--num-classes) re-initialises the two classifiers;
- an ImageNet backbone leaves the heads at their initialisation and the output norms it lacks at LayerNorm's
  (weight 1, bias 0), as mmseg's non-strict loading does;
- anything else that does not fit is an error naming the keys (exit 2).
Loading uses torch.load(weights_only=True); classes that a training framework pickled next to the weights (mmengine
message hubs, yacs configs) are replaced by inert placeholders, never imported or run.

One module per publisher layout (mmseg.py: mmseg and mmcls/mmpretrain; hf.py; official_timm.py), plus read.py (files),
source.py (layout detection, Source, parse), target.py (fit to a model), cli.py and common.py (the rules they share).
"""
from .cli import get_args_parser, inspect, main
from .common import ConversionError, merge_mmseg_to_official, merge_official_to_mmseg, resize_rel_pos_table
from .read import read_checkpoint
from .source import LAYOUTS, Source, detect_layout, dropped_summary, parse
from .target import CLASSIFIERS, convert, fit

__all__ = ["CLASSIFIERS", "LAYOUTS", "ConversionError", "Source", "convert", "detect_layout", "dropped_summary", "fit",
           "get_args_parser", "inspect", "main", "merge_mmseg_to_official", "merge_official_to_mmseg", "parse",
           "read_checkpoint", "resize_rel_pos_table"]
