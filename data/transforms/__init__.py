"""Paired augmentations on (uint8 H×W×3 RGB image, uint8 H×W mask) and the train/eval presets.

    from data.transforms import build_transform
    t = build_transform("train", 512)                      # presets.py: the team's pipeline, every knob a flag
    image, mask = t(image, mask, np.random.default_rng(seed))

Three seams, one module each: the steps (steps.py: Resize ... Normalize, mmseg / albumentations semantics),
copy-paste (copy_paste.py) and the presets (presets.py). This package re-exports their public names. The preview
of the train pipeline on a COCO root is a picture, so it lives with the other pictures: `python -m viz.preview`.
"""
from data.transforms.copy_paste import CopyPaste, DatasetSource, Instances, Source, copy_paste_steps  # noqa: F401
from data.transforms.presets import EVAL_DEFAULTS, TRAIN_DEFAULTS, add_aug_args, build_transform  # noqa: F401
from data.transforms.steps import (IMAGE_INTERP, MASK_INTERP, Blur, Compose, GaussianBlur, Mask,  # noqa: F401
                                   MotionBlur, Normalize, OneOf, Pad, PhotoMetricDistortion, RandomCrop, RandomFlip,
                                   RandomResize, RandomRotate90, Resize, rescale_size)
