"""data/: COCO → (image, mask), demo data, splits, transforms and loaders. Imports nothing downstream."""
from data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES, PALETTE, PIXEL_MEAN, PIXEL_STD  # noqa: F401
