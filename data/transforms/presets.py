"""The train and eval presets: the team's pipeline (SPEC §4) as one table of knobs and a builder.

    t = build_transform("train", 512, copy_paste_p=0.5)   # every TRAIN_DEFAULTS key is a knob (train.py: --aug-*)
    image, mask = t(image, mask, np.random.default_rng(seed))
"""
from __future__ import annotations

from typing import Optional

from data.transforms.copy_paste import CopyPaste, Source
from data.transforms.steps import (Blur, Compose, GaussianBlur, MotionBlur, OneOf, Pad, PhotoMetricDistortion,
                                   RandomCrop, RandomFlip, RandomResize, RandomRotate90, Resize, _pair)

# The team's pipeline at 512 (SPEC §4). Each key becomes a --flag of train.py with this default.
TRAIN_DEFAULTS: dict = dict(
    ratio_range=(),              # () off; (0.5, 2.0): mmseg RandomResize(scale=(4·crop, crop)) + RandomCrop, not Resize
    cat_max_ratio=0.75,          # RandomCrop (only with ratio_range)
    flip_prob=0.5,
    photometric=True,            # PhotoMetricDistortion, mmseg ranges below
    brightness_delta=32,
    contrast_range=(0.5, 1.5),
    saturation_range=(0.5, 1.5),
    hue_delta=18,
    rotate90_prob=0.5,
    blur_prob=0.1,               # OneOf(Blur, GaussianBlur, MotionBlur); 0.1 as the competition teams' albu configs
    blur_limit=7,
    copy_paste_p=0.0,            # SPEC suggests 0.5 when enabled
    copy_paste_fraction=0.1,
    copy_paste_max_objects=10,
    copy_paste_blur_sigma=3.0,
)
EVAL_DEFAULTS: dict = dict(
    scale=None,                  # None: identity; (h, w) bound: keep-ratio resize of the image only (mask stays)
)


def build_transform(preset: str, crop_size=512, copy_paste_source: Optional[Source] = None, **knobs) -> Compose:
    """'train': [CopyPaste] → Resize(crop, keep_ratio) | RandomResize + RandomCrop → RandomFlip →
    PhotoMetricDistortion → RandomRotate90 → OneOf(blurs) → Pad(crop). 'eval': identity or image-only Resize.

    CopyPaste comes first, on the raw sample, so the composite then goes through the geometric and photometric steps
    as one image. Its ``source`` may be left None here and wired by data.loader.TrainSet."""
    defaults = {"train": TRAIN_DEFAULTS, "eval": EVAL_DEFAULTS}.get(preset)
    if defaults is None:
        raise ValueError(f"unknown preset {preset!r}; choose 'train' or 'eval'")
    unknown = sorted(set(knobs) - set(defaults))
    if unknown:
        raise TypeError(f"unknown {preset} knobs {unknown}; valid: {sorted(defaults)}")
    k = {**defaults, **knobs}
    crop = _pair(crop_size)
    if preset == "eval":
        return Compose([Resize(k["scale"], keep_ratio=True, resize_mask=False)] if k["scale"] else [])
    steps: list = []
    if k["copy_paste_p"] > 0:
        steps.append(CopyPaste(copy_paste_source, p=k["copy_paste_p"], fraction=k["copy_paste_fraction"],
                               max_objects=k["copy_paste_max_objects"], blur_sigma=k["copy_paste_blur_sigma"]))
    if k["ratio_range"] is not None and len(k["ratio_range"]) not in (0, 2):
        raise ValueError(f"ratio_range must be () or (min, max), got {k['ratio_range']!r}")
    if k["ratio_range"]:
        steps += [RandomResize((4 * crop[1], crop[0]), ratio_range=k["ratio_range"]),
                  RandomCrop(crop, cat_max_ratio=k["cat_max_ratio"])]
    else:
        steps.append(Resize(crop, keep_ratio=True))
    if k["flip_prob"] > 0:
        steps.append(RandomFlip(k["flip_prob"], "horizontal"))
    if k["photometric"]:
        steps.append(PhotoMetricDistortion(k["brightness_delta"], k["contrast_range"], k["saturation_range"],
                                           k["hue_delta"]))
    if k["rotate90_prob"] > 0:
        steps.append(RandomRotate90(k["rotate90_prob"]))
    if k["blur_prob"] > 0:
        lim = k["blur_limit"]
        steps.append(OneOf([Blur(lim), GaussianBlur(lim), MotionBlur(lim)], p=k["blur_prob"]))
    steps.append(Pad(crop))
    return Compose(steps)


def add_aug_args(p) -> None:
    """train.py's --aug-* flags: one per TRAIN_DEFAULTS knob, typed by its default."""
    g = p.add_argument_group("augmentation (train preset)")
    for k, v in TRAIN_DEFAULTS.items():
        flag = "--aug-" + k.replace("_", "-")
        if isinstance(v, bool):
            g.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=v, metavar="BOOL")
        elif isinstance(v, (tuple, list)):
            g.add_argument(flag, type=type(v[0]) if v else float, nargs=len(v) or "*", default=v)
        elif v is None:
            g.add_argument(flag, type=float, default=None)
        else:
            g.add_argument(flag, type=type(v), default=v)
