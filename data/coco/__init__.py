"""COCO segmentation root → (RGB image, class-id mask, image_id), validated up front (SPEC §1).

    ds = CocoSegDataset(root, ["train.json"])          # every file checked now; a problem is one-line DataError
    sample = ds[0]                                      # dict(image (H, W, 3) uint8, mask (H, W) uint8, image_id)
    python -m data.coco masks|stats --data-root R --json J

Three parts: the strict checks of a COCO file (checks.py: JSON, categories, segmentations, image records), the
dataset over the checked files (dataset.py: decoding, mask painting and its cache, copy-paste instances) and the two
command-line tools (cli.py). This package re-exports their public names.
"""
from data.coco.checks import (BOX_TOL_FRAC, BOX_TOL_PX, DataError, category_map, load_coco_json,  # noqa: F401
                              load_json, rle_string_counts, segm_to_mask, segm_to_rle)
from data.coco.cli import get_args_parser, main  # noqa: F401
from data.coco.dataset import CocoSegDataset, train_val_sets  # noqa: F401
