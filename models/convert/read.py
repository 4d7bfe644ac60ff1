"""Reading a checkpoint file or an HF model directory into a flat state_dict, with torch.load(weights_only=True)."""
from __future__ import annotations

import os

import torch

from .common import ConversionError


class _Inert(list):
    """Stands in for any non-allowlisted class in a pickle: accepts construction and state, keeps nothing."""

    def __new__(cls, *args, **kwargs):
        return list.__new__(cls)

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        pass


def _torch_load(path: str) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - retried below with placeholders, re-raised if that fails too
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001
            raise first
        if not names:
            raise
        with torch.serialization.safe_globals([(_Inert, n) for n in names]):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as second:  # noqa: BLE001
                raise ConversionError(f"{path}: cannot be read with weights_only=True ({second}); re-save its "
                                      "state_dict alone with torch.save") from first


def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (flat state_dict, info) from a file or an HF model directory. info has 'container' and, for our own
    files, 'model_name' / 'num_classes'."""
    if os.path.isdir(path):
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, fname)):
                path = os.path.join(path, fname)
                break
        else:
            raise ConversionError(f"{path}: directory holds neither model.safetensors nor pytorch_model.bin "
                                  "(sharded checkpoints are not supported)")
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ConversionError("reading .safetensors needs the `safetensors` package (pip install safetensors)") \
                from e
        return dict(load_file(path)), {"container": "safetensors"}
    obj = _torch_load(path)
    info: dict = {"container": "none (a bare state_dict)"}
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            if key in obj and isinstance(obj[key], dict):
                info = {"container": key}
                if key == "model":
                    info.update({k: obj[k] for k in ("model_name", "num_classes") if k in obj})
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConversionError(f"{path}: no state_dict found (looked at the top level and under "
                              "'state_dict', 'model', 'module')")
    return dict(obj), info
