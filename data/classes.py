"""Class table, palette and normalisation constants: the one place every stage reads them from (SPEC §1, §4)."""
from __future__ import annotations

# Pixel value = COCO category_id; categories are matched to these by lower-cased name (SPEC §1).
CLASSES: tuple[str, ...] = (
    "Background", "General trash", "Paper", "Paper pack", "Metal", "Glass",
    "Plastic", "Styrofoam", "Plastic bag", "Battery", "Clothing",
)
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255  # padding, low-confidence pseudo-labels, copy-paste borders; never in raw data

# The competition's palette, RGB, indexed by class id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (192, 0, 128), (0, 128, 192), (0, 128, 64), (128, 0, 0), (64, 0, 128),
    (64, 0, 192), (192, 128, 64), (192, 192, 128), (64, 64, 128), (128, 0, 192),
)

NAME_TO_ID: dict[str, int] = {name.lower(): i for i, name in enumerate(CLASSES)}

# ImageNet statistics on 0..255 RGB, as mmseg's Normalize (SPEC §4). Applied on the device, not in workers.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def palette_flat() -> list[int]:
    """Palette as a 768-entry list for PIL/OpenCV palette images (unused entries black, 255 = white)."""
    flat = [0] * 768
    for i, rgb in enumerate(PALETTE):
        flat[3 * i:3 * i + 3] = rgb
    flat[3 * IGNORE_INDEX:3 * IGNORE_INDEX + 3] = (255, 255, 255)
    return flat
