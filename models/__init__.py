"""models/: image → logits. The registry (models/registry.py: name → explicit hyper-parameters), build/load helpers.

    model = build_model("upernet_convnext_tiny", num_classes=11)      # random init (mmseg initialisation)
    model = load_model("work/convnext_t.pth")                           # {'model', 'model_name', 'num_classes'}
    groups = param_groups(model, **{k: recipe(name)[k] for k in ("weight_decay", "layer_decay")})

Architectures follow mmseg's configs (SPEC §4): UperNet head with 512 channels, FCN auxiliary head with 256 on stage 3.
"""
from __future__ import annotations

import os

import torch

from data.classes import NUM_CLASSES

from .optim import param_groups
from .registry import ALIASES, BACKBONES, MODELS, lookup, recipe
from .segmentor import Segmentor

__all__ = ["ALIASES", "BACKBONES", "MODELS", "Segmentor", "build_model", "load_model", "param_groups", "recipe"]


def build_model(name: str, num_classes: int = NUM_CLASSES, **overrides) -> Segmentor:
    """Build a registry model with mmseg's initialisation. overrides replace registry entries (e.g. drop_path_rate,
    channels); an unknown key is an error."""
    name, cfg = lookup(name)
    unknown = set(overrides) - set(cfg) - {"backbone"}
    if unknown:
        raise TypeError(f"unknown override(s) {sorted(unknown)} for {name}; known: {sorted(set(cfg) - {'backbone'})}")
    cfg = {**cfg, **overrides}
    family = BACKBONES[cfg["backbone"]]
    backbone = family.cls(**{k: cfg[k] for k in family.keys})
    return Segmentor(backbone, num_classes, cfg["channels"], cfg["aux_channels"], model_name=name)


WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile


def _strip_prefixes(sd: dict) -> dict:
    """Tolerate DDP ('module.') and torch.compile ('_orig_mod.') wrappers, nested in any order, in a state_dict's
    keys (train.py's --init, load_model, models.convert)."""
    out = {}
    for k, v in sd.items():
        while k.startswith(WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def misfit_message(head: str, missing: list[str], unexpected: list[str], shapes: list[str],
                   labels: tuple[str, str] = ("missing keys", "unexpected keys"), limit: int = 8) -> str | None:
    """The report of a state dict that does not fit a model (the first `limit` keys of each kind), or None if it fits.
    Shared by check_state_dict (checkpoints) and models.convert (sources), which word the two key lists their way."""
    if not (missing or unexpected or shapes):
        return None

    def show(xs):
        return ", ".join(xs[:limit]) + (f", … ({len(xs)} in all)" if len(xs) > limit else "")
    rows = [(labels[0], missing), (labels[1], unexpected), ("shape mismatches", shapes)]
    return "\n".join([head] + [f"  {label}: {show(xs)}" for label, xs in rows if xs])


def check_state_dict(model: torch.nn.Module, sd: dict, what: str = "checkpoint") -> None:
    """Raise a ValueError naming missing / unexpected keys and shape mismatches (the first few of each)."""
    own = model.state_dict()
    shapes = [f"{k}: {tuple(sd[k].shape)} in {what} vs {tuple(own[k].shape)} in model"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    msg = misfit_message(f"{what} does not fit {getattr(model, 'model_name', type(model).__name__)}:",
                         [k for k in own if k not in sd], [k for k in sd if k not in own], shapes)
    if msg:
        raise ValueError(msg)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu", num_classes: int | None = None,
               **overrides) -> Segmentor:
    """Build and strictly load a model from a torch file {'model': state_dict, 'model_name', 'num_classes'} (what
    models.convert writes and what train.py saves; other keys are ignored). Raises ValueError saying what differs."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or not {"model", "model_name", "num_classes"} <= set(ckpt):
        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path}: expected a dict with 'model', 'model_name', 'num_classes' (got {keys}); "
                         "convert foreign checkpoints with `python -m models.convert`")
    name, c = ckpt["model_name"], int(ckpt["num_classes"])
    if ALIASES.get(name, name) not in MODELS:
        raise ValueError(f"{path}: model_name {name!r} is not in the registry ({', '.join(MODELS)})")
    if num_classes is not None and num_classes != c:
        raise ValueError(f"{path}: has {c} classes but {num_classes} were asked for; re-convert with "
                         f"`python -m models.convert {path} NEW.pth --model {name} --num-classes {num_classes}`")
    model = build_model(name, c, **overrides)
    sd = _strip_prefixes(ckpt["model"])
    check_state_dict(model, sd, what=str(path))
    model.load_state_dict(sd, strict=True)
    return model.to(map_location) if not isinstance(map_location, dict) and map_location is not None else model


def load_init(model: torch.nn.Module, path: str, spec: str, num_classes: int) -> int:
    """train.py --init: the checkpoint at `path` (given as `spec`: a path or a published name) loaded into `model`,
    strictly; the number of tensors. Bad input ends the script with one line (SystemExit)."""
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"error: --init {spec}: no such file, nor a published name (python -m models.fetch --list)")
    except Exception as e:  # truncated, not a torch file, or holding objects weights_only refuses
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise SystemExit(f"error: --init {spec}: cannot be read as a checkpoint ({type(e).__name__}: {first})")
    state = _strip_prefixes(src.get("model", src))
    try:
        check_state_dict(model, state, what=f"--init {spec}")
    except ValueError as e:
        raise SystemExit(f"error: {e}\n(convert foreign or other-class-count checkpoints with python -m models.convert "
                         f"SRC DST --model {getattr(model, 'model_name', '?')} --num-classes {num_classes})")
    model.load_state_dict(state)
    return len(state)
