"""The extension tables: backbone families (models.registry.BACKBONES), decode-head losses (models.losses.LOSSES) and
the ops' fake kernels (csrc's one @_fake table).

Each is checked the way it is used: a new entry is all a new family or loss needs, and a name missing from a table is
an error, never a fall-through to another entry."""
import pytest
import torch
from torch import nn

import models
from models import build_model, param_groups, recipe
from models import losses as L
from models import registry
from models.convert import ConversionError, Source, fit


# ------------------------------------------------------------------------------------------------ backbones

def test_every_model_names_a_family_and_its_keys():
    for name, cfg in models.MODELS.items():
        family = models.BACKBONES[cfg["backbone"]]
        assert set(family.keys) <= set(cfg), name
        assert {k for _, k in family.size} | set(family.exact) <= set(cfg), name
    for alias, name in models.ALIASES.items():
        assert name in models.MODELS, alias


@pytest.mark.parametrize("family", list(registry.BACKBONES))
def test_hparams_read_back_from_a_built_backbone(family):
    """The converter's reading of a backbone's size agrees with the hyper-parameters it was built from."""
    name = next(n for n, c in models.MODELS.items() if c["backbone"] == family)
    with torch.device("meta"):
        m = build_model(name, 11)
    entry = registry.BACKBONES[family]
    assert registry.backbone_of(m.backbone) == (family, entry)
    got = entry.hparams(m.backbone.state_dict())
    cfg = models.MODELS[name]
    for _, k in entry.size:
        assert tuple(got[k]) == tuple(cfg[k]) if isinstance(cfg[k], tuple) else got[k] == cfg[k]
    for k in entry.exact:
        assert got[k] == cfg[k]


class TwoStage(nn.Module):
    """A stand-in backbone family: two conv stages, four outputs (the heads want four)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 4, stride=4)
        self.stages = nn.ModuleList(nn.Conv2d(width, width, 3, stride=2, padding=1) for _ in range(3))
        self.out_channels = [width] * 4

    def forward(self, x):
        outs = [self.stem(x)]
        for s in self.stages:
            outs.append(s(outs[-1]))
        return outs


def _two_stage_id(name):
    parts = name.split(".")
    return 0 if parts[0] == "stem" else int(parts[1]) + 1 if parts[0] == "stages" else None


def test_a_new_family_is_one_table_entry(monkeypatch):
    """One BACKBONES entry and one MODELS entry: build_model, recipe and param_groups (its layer-decay and
    weight-decay rules) follow, without a branch anywhere else."""
    entry = registry.Backbone(
        cls=TwoStage, keys=("width",), recipe=lambda name: {"lr": 1e-3, "weight_decay": 0.1, "layer_decay": 0.5,
                                                            "layer_decay_num_layers": 3},
        stage_id=_two_stage_id, no_weight_decay=lambda name, p: name.endswith(".bias"),
        hparams=lambda sd: {"width": int(sd["stem.weight"].shape[0])}, size=(("width", "width"),))
    monkeypatch.setitem(registry.BACKBONES, "twostage", entry)
    monkeypatch.setitem(registry.MODELS, "upernet_twostage", dict(backbone="twostage", width=8, drop_path_rate=0.0,
                                                                  channels=8, aux_channels=4))
    m = build_model("upernet_twostage", 3)
    assert isinstance(m.backbone, TwoStage) and m.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    rec = recipe("upernet_twostage")
    assert rec["lr"] == 1e-3 and rec["layer_decay_num_layers"] == 3 and rec["warmup_iters"] == 1500
    scale = {}
    for g in param_groups(m, rec["weight_decay"], rec["layer_decay"]):
        for p in g["params"]:
            scale[id(p)] = (g["lr_scale"], g["weight_decay"])
    by_name = {n: scale[id(p)] for n, p in m.named_parameters()}
    assert by_name["backbone.stem.weight"] == (0.5 ** 4, 0.1)
    assert by_name["backbone.stages.2.weight"] == (0.5 ** 1, 0.1)
    assert by_name["backbone.stages.2.bias"] == (0.5 ** 1, 0.0)
    assert by_name["decode_head.conv_seg.weight"] == (1.0, 0.1)
    src = Source("mmseg", "twostage", {f"backbone.{k}": v for k, v in m.backbone.state_dict().items()}, {}, [], [])
    assert src.arch() == {"width": 8} and src.registry_matches() == ["upernet_twostage"]


def test_an_unregistered_backbone_is_named():
    m = build_model("upernet_convnext_demo", 3)
    m.backbone = TwoStage()
    with pytest.raises(KeyError, match="TwoStage is not in models.registry.BACKBONES"):
        param_groups(m, 0.05)
    with pytest.raises(KeyError, match="TwoStage"):
        fit(Source("mmseg", "convnext", {}, {}, [], []), m)


def test_converter_refuses_another_family():
    with torch.device("meta"):
        m = build_model("upernet_swin_tiny", 11)
    with pytest.raises(ConversionError, match="convnext checkpoint but the target model upernet_swin_tiny has a swin"):
        fit(Source("mmseg", "convnext", {}, {}, [], []), m)


# ------------------------------------------------------------------------------------------------ losses

def _batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, generator=g)
    target = torch.randint(0, 4, (2, 6, 6), generator=g)
    target[0, 0] = 255
    return logits, target, (target != 255).sum().clamp(min=1)


def test_every_loss_name_is_its_own_function():
    """Each table entry computes its own loss: no two names give the same value (a fall-through would)."""
    logits, target, kept = _batch()
    values = {n: float(L.SegCriterion([(n, 1.0)]).main(logits, target, kept)) for n in L.LOSSES}
    assert values["ce"] == pytest.approx(float(L.cross_entropy(logits, target, kept)))
    assert values["focal"] == pytest.approx(float(L.focal_loss(logits, target, kept)))
    assert values["dice"] == pytest.approx(float(L.dice_loss(logits, target)))
    assert values["lovasz"] == pytest.approx(float(L.lovasz_softmax(logits, target)))
    assert len({round(v, 6) for v in values.values()}) == len(values)


def test_an_unknown_loss_cannot_fall_through():
    with pytest.raises(ValueError, match="unknown loss"):
        L.parse_loss_spec(["tversky:1"])
    with pytest.raises(ValueError, match=r"unknown loss\(es\) \['tversky'\]"):
        L.SegCriterion([("ce", 1.0), ("tversky", 0.5)])


def test_a_new_loss_is_one_entry(monkeypatch):
    logits, target, kept = _batch()
    monkeypatch.setitem(L.LOSSES, "mean_logit", lambda logits, target, kept, weight, mask: logits.mean())
    terms = L.parse_loss_spec(["ce:1", "mean_logit:0.5"])
    assert terms == [("ce", 1.0), ("mean_logit", 0.5)]
    got = L.SegCriterion(terms).main(logits, target, kept)
    assert torch.allclose(got, L.cross_entropy(logits, target, kept) + 0.5 * logits.mean())


# ------------------------------------------------------------------------------------------------ op fakes

def test_every_op_registers_its_fake_the_same_way():
    """Every tensor op of the library has its fake kernel in the one table that the loader registers from (cpu_isa
    takes and returns a string: it is never traced)."""
    from torch._library.simple_registry import singleton

    from csrc import ops
    if ops.backend()["cpu"] != "ext":
        pytest.skip("extension not built")
    names = {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("trashseg::")}
    assert set(ops._FAKES) == names - {"trashseg::cpu_isa"}
    for name in ops._FAKES:
        assert singleton.find(name).fake_impl.kernel is not None, name
