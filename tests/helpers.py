"""Small helpers shared by tests (importable as `helpers`: tests/ is on sys.path under pytest's rootdir layout)."""
import os

import numpy as np


def read_masks(folder) -> np.ndarray:
    """Every palette PNG under `folder` (infer.py --save-masks), in path order, flattened into one label array."""
    from PIL import Image
    return np.concatenate([np.asarray(Image.open(os.path.join(d, f))).ravel()
                           for d, _, fs in sorted(os.walk(folder)) for f in sorted(fs) if f.endswith(".png")])
