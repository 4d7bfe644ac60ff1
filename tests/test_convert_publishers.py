"""models.convert on files laid out exactly as each publisher writes them (tests/publishers.py says whose code wrote
each layout), converted through the CLI and compared with the publisher's own model: transformers' UperNet logits,
timm's backbone features. Small widths first (every layout, fast), then the real sizes (ConvNeXt-T, Swin-T window 7,
Swin-B window 12), then strictness and --inspect.

timm's Swin rolls before padding and drops the shift for stages no larger than the window, so it agrees with mmseg
only when every stage is a multiple of the window and larger than it (192 px with window 3; 448 px for Swin-T).
transformers 5's UperNet Swin partitions every stage with the full window and shift (always_partition), as mmseg does.
"""
import os
import re

import pytest
import torch

from models import build_model, load_model
from models.convert import get_args_parser, main
from publishers import (hf_hub_upernet, mmcls_swin, mmpretrain_convnext, mmseg_checkpoint, mmseg_upernet_from_hf_hub,
                        official_convnext, official_convnext_seg, official_swin, official_swin_seg, randomise,
                        swin2mmseg)

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402  (transformers depends on it)

STAGES = ["stage1", "stage2", "stage3", "stage4"]
CNX = dict(dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), channels=24, aux_channels=16)
SWIN = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=3, channels=24, aux_channels=16)
ATOL = 1e-5


def cli(*argv):
    return main(get_args_parser().parse_args([str(a) for a in argv]))


def hf_upernet(family, num_labels=5, small=True, **real):
    from transformers import ConvNextConfig, SwinConfig, UperNetConfig, UperNetForSemanticSegmentation
    torch.manual_seed(0)
    if family == "convnext":
        bb = ConvNextConfig(hidden_sizes=list(real.get("dims", CNX["dims"])),
                            depths=list(real.get("depths", CNX["depths"])), out_features=STAGES)
    else:
        bb = SwinConfig(embed_dim=real.get("embed_dims", SWIN["embed_dims"]),
                        depths=list(real.get("depths", SWIN["depths"])),
                        num_heads=list(real.get("num_heads", SWIN["num_heads"])),
                        window_size=real.get("window_size", SWIN["window_size"]), out_features=STAGES)
    hidden, aux = (24, 16) if small else (512, 256)
    cfg = UperNetConfig(backbone_config=bb, hidden_size=hidden, auxiliary_channels=aux, num_labels=num_labels,
                        auxiliary_in_channels=bb.hidden_sizes[2] if family == "convnext" else bb.embed_dim * 4)
    return randomise(UperNetForSemanticSegmentation(cfg)).eval()


def convert_with(tmp_path, src, family, classes=5):
    """The CLI's code path (read_checkpoint → convert → strict load) onto a registry model whose widths are
    overridden to the small test widths (the CLI itself only builds registry models)."""
    from models.convert import convert, read_checkpoint
    name, ov = ("upernet_convnext_tiny", CNX) if family == "convnext" else ("upernet_swin_tiny", SWIN)
    model = build_model(name, classes, **ov).eval()
    sd, _ = read_checkpoint(str(src))
    out, notes = convert(sd, model)
    model.load_state_dict(out, strict=True)
    return model, notes


@pytest.fixture(scope="module", params=["convnext", "swin"])
def hf_small(request):
    return request.param, hf_upernet(request.param)


def _logits_equal(hf, ours, hw):
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------ segmentation files, small widths

def test_hf_save_pretrained_directory(hf_small, tmp_path):
    """What the pinned transformers' save_pretrained writes (model.safetensors + config.json), extras included."""
    family, hf = hf_small
    hf.save_pretrained(tmp_path / "hf")
    ours, notes = convert_with(tmp_path, tmp_path / "hf", family)
    _logits_equal(hf, ours, (70, 90))
    if family == "swin":  # transformers 5 keeps SwinModel's final layernorm in the backbone; said and dropped
        assert "backbone.swin.layernorm.weight" in notes[-1] and "final layernorm" in notes[-1]


def test_hf_hub_file(hf_small, tmp_path):
    """openmmlab/upernet-* as published (pytorch_model.bin with relative_position_index buffers)."""
    family, hf = hf_small
    torch.save(hf_hub_upernet(hf), tmp_path / "pytorch_model.bin")
    ours, notes = convert_with(tmp_path, tmp_path / "pytorch_model.bin", family)
    _logits_equal(hf, ours, (61, 35))
    if family == "swin":
        assert "relative_position_index" in notes[-1]


@pytest.mark.parametrize("version", [0, 1])
def test_mmseg_upernet_checkpoint(hf_small, tmp_path, version):
    family, hf = hf_small
    sd = mmseg_upernet_from_hf_hub(hf_hub_upernet(hf))
    torch.save(mmseg_checkpoint(sd, version, 5), tmp_path / "mmseg.pth")
    ours, notes = convert_with(tmp_path, tmp_path / "mmseg.pth", family)
    _logits_equal(hf, ours, (64, 80))
    assert notes[0].startswith(f"source layout: mmseg ({family}, segmentation checkpoint)")


def test_official_segmentation_checkpoint(hf_small, tmp_path):
    """The official ConvNeXt / Swin segmentation repositories' UperNet checkpoints (mmseg heads, official backbone
    names, Swin merges in the official order)."""
    family, hf = hf_small
    mm = mmseg_upernet_from_hf_hub(hf_hub_upernet(hf))
    torch.save((official_convnext_seg if family == "convnext" else official_swin_seg)(mm), tmp_path / "off.pth")
    ours, notes = convert_with(tmp_path, tmp_path / "off.pth", family)
    _logits_equal(hf, ours, (64, 64))
    assert notes[0] == f"source layout: official ({family}, segmentation checkpoint)"


# ---------------------------------------------------------------------------------- ImageNet backbones, small

def timm_convnext(conv_mlp=False, head_norm_first=False, classes=10):
    from timm.models.convnext import ConvNeXt
    torch.manual_seed(0)
    return randomise(ConvNeXt(depths=CNX["depths"], dims=CNX["dims"], num_classes=classes, conv_mlp=conv_mlp,
                              head_norm_first=head_norm_first)).eval()


def timm_swin(img=192, window=3, classes=10):
    from timm.models.swin_transformer import SwinTransformer
    torch.manual_seed(0)
    return randomise(SwinTransformer(img_size=img, embed_dim=SWIN["embed_dims"], depths=SWIN["depths"],
                                     num_heads=SWIN["num_heads"], window_size=window, num_classes=classes)).eval()


def timm_stages(m, x):
    """Stage outputs (B, C, H, W) before any norm."""
    swin = hasattr(m, "layers")
    x = m.patch_embed(x) if swin else m.stem(x)
    out = []
    for stage in (m.layers if swin else m.stages):
        x = stage(x)
        out.append(x.permute(0, 3, 1, 2) if swin else x)
    return out


def features_equal(ours, ref_stages, x, norm3=None):
    """Our backbone returns norm_i(stage_i). An ImageNet backbone leaves norm_i at LayerNorm's initialisation
    (weight 1, bias 0), except norm3 where the publisher maps the classifier's final norm there (`norm3` = its
    (weight, bias)): check the norms' values, then our stages through our norms against the reference stages."""
    for i in range(4):
        n = getattr(ours.backbone, f"norm{i}")
        w, b = norm3 if (i == 3 and norm3 is not None) else (torch.ones_like(n.weight), torch.zeros_like(n.bias))
        assert torch.equal(n.weight, w) and torch.equal(n.bias, b), f"norm{i}"
    with torch.no_grad():
        got = ours.backbone(x)
        for i, (g, r) in enumerate(zip(got, ref_stages)):
            n = getattr(ours.backbone, f"norm{i}")
            want = torch.nn.functional.layer_norm(r.permute(0, 2, 3, 1), r.shape[1:2], n.weight, n.bias,
                                                  eps=n.eps).permute(0, 3, 1, 2)
            torch.testing.assert_close(g, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["timm", "timm_conv_mlp", "timm_hnf", "official", "mmpretrain", "hf_cls"])
def test_convnext_imagenet_files(kind, tmp_path):
    tm = timm_convnext(conv_mlp=kind == "timm_conv_mlp", head_norm_first=kind == "timm_hnf")
    src = tmp_path / "in1k.pth"
    norm3 = None
    if kind.startswith("timm"):
        save_file(tm.state_dict(), str(src.with_suffix(".safetensors")))
        src = src.with_suffix(".safetensors")
    elif kind == "official":
        torch.save(official_convnext(tm), src)
    elif kind == "mmpretrain":
        torch.save(mmpretrain_convnext(official_convnext(tm)), src)
        norm3 = (tm.head.norm.weight, tm.head.norm.bias)  # convnext_to_mmpretrain.py: final norm → norm3
    if kind == "hf_cls":
        from transformers import ConvNextConfig, ConvNextForImageClassification
        hf = randomise(ConvNextForImageClassification(ConvNextConfig(
            hidden_sizes=list(CNX["dims"]), depths=list(CNX["depths"]), num_labels=10))).eval()
        hf.save_pretrained(tmp_path / "hfcls")
        ours, notes = convert_with(tmp_path, tmp_path / "hfcls", "convnext", classes=11)
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad():
            ref = hf.convnext(x, output_hidden_states=True).hidden_states[1:]
        features_equal(ours, ref, x)
        return
    ours, notes = convert_with(tmp_path, src, "convnext", classes=11)
    x = torch.randn(2, 3, 64, 96)
    features_equal(ours, timm_stages(tm, x), x, norm3)
    assert "ImageNet backbone" in notes[0] and "head" in notes[-1]


@pytest.mark.parametrize("kind", ["timm", "official", "mmseg_pretrain", "mmcls_v1", "mmcls_v3", "hf_cls"])
def test_swin_imagenet_files(kind, tmp_path, capsys):
    tm = timm_swin()
    src = tmp_path / "in1k.pth"
    norm3 = None
    official = official_swin(tm, 192)
    if kind == "timm":
        torch.save(tm.state_dict(), src)
    elif kind == "official":
        torch.save(official, src)
    elif kind == "mmseg_pretrain":
        torch.save(swin2mmseg(official), src)
    elif kind.startswith("mmcls"):
        torch.save(mmcls_swin(official, version=1 if kind == "mmcls_v1" else 3), src)
        norm3 = (tm.norm.weight, tm.norm.bias)  # mmpretrain: norm3 (pre-v2 files: `norm`)
    if kind == "hf_cls":
        from transformers import SwinConfig, SwinForImageClassification
        hf = randomise(SwinForImageClassification(SwinConfig(
            embed_dim=SWIN["embed_dims"], depths=list(SWIN["depths"]), num_heads=list(SWIN["num_heads"]),
            window_size=3, num_labels=10))).eval()
        hf.save_pretrained(tmp_path / "hfcls")
        ours, notes = convert_with(tmp_path, tmp_path / "hfcls", "swin", classes=11)
        x = torch.randn(1, 3, 192, 192)
        with torch.no_grad():  # stage outputs before PatchMerging, (B, C, H, W)
            emb, dims = hf.swin.embeddings(x)[:2]
            ref = hf.swin.encoder(emb, dims, output_hidden_states=True,
                                  output_hidden_states_before_downsampling=True).reshaped_hidden_states[1:]
        features_equal(ours, ref, x)
        return
    ours, notes = convert_with(tmp_path, src, "swin", classes=11)
    x = torch.randn(1, 3, 192, 192)
    features_equal(ours, timm_stages(tm, x), x, norm3)
    if kind == "mmseg_pretrain":  # the file the issue reports as refused: every dropped key named with its reason
        dropped = notes[-1]
        assert re.search(r"norm\.weight.*final norm of the ImageNet classifier", dropped)
        assert "stages.*.blocks.*.attn_mask" in dropped and "rebuilt for each input size" in dropped
        assert "stages.*.blocks.*.attn.w_msa.relative_position_index" in dropped


# ------------------------------------------------------------------------------------------------ real sizes

REAL = {"convnext_tiny": dict(dims=(96, 192, 384, 768), depths=(3, 3, 9, 3)),
        "swin_tiny": dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7),
        "swin_base_w12": dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12)}


# fp32 rounding alone separates two correct implementations by more than 1e-5 on a real-width Swin (transformers
# computes q, k, v and the masked softmax apart, we use one qkv and SDPA): measured 2.8e-5 on Swin-T logits. So the
# mapping is checked in float64, where any mapping error shows and rounding does not (1e-9), and fp32 at 1e-5 where
# it holds (ConvNeXt) or at 5e-5 (Swin).
FP32_ATOL = {"convnext_tiny": 1e-5, "swin_tiny": 5e-5, "swin_base_w12": 5e-5}


@pytest.mark.slow
@pytest.mark.parametrize("name,hw", [
    ("convnext_tiny", (96, 128)),
    ("swin_tiny", (232, 256)),  # stages 58×64 … 8×8: all larger than window 7, none a multiple of it
    ("swin_base_w12", (388, 420)),  # 97×105 … 13×14: all larger than 12, none a multiple of it
])
@pytest.mark.heavy
def test_real_size_upernet_logits(name, hw, tmp_path, capsys):
    """transformers' UperNet at the registry's real widths (random weights, BN statistics too): its
    save_pretrained directory and the mmseg 1.x checkpoint of the same weights, through the CLI, give its logits."""
    family = name.split("_")[0]
    hf = hf_upernet(family, num_labels=11, small=False, **REAL[name])
    if name != "swin_base_w12":
        hf.save_pretrained(tmp_path / "hf")
    torch.save(mmseg_checkpoint(mmseg_upernet_from_hf_hub(hf_hub_upernet(hf)), 1, 11), tmp_path / "mmseg.pth")
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        ref = hf(x).logits
        ref64 = hf.double()(x.double()).logits
    # Swin-B: the mmseg file only (the save_pretrained route is the same code at Swin-T), to halve its CPU time.
    for src in ("hf", "mmseg.pth") if name != "swin_base_w12" else ("mmseg.pth",):
        assert cli(tmp_path / src, tmp_path / f"{src}.pt", "--model", f"upernet_{name}") == 0
        ours = load_model(tmp_path / f"{src}.pt").eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref, atol=FP32_ATOL[name], rtol=0)
            torch.testing.assert_close(ours.double()(x.double()), ref64, atol=1e-9, rtol=0)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("timm_name,model,hw", [
    pytest.param("convnext_tiny", "upernet_convnext_tiny", (64, 96), marks=pytest.mark.slow),
    pytest.param("swin_tiny_patch4_window7_224", "upernet_swin_tiny", (448, 448),  # stages 112 … 14: 7k, > 7
                 marks=pytest.mark.slow),
])
@pytest.mark.heavy
def test_real_size_timm_features(timm_name, model, hw, tmp_path):
    kw = {"img_size": hw[0]} if "swin" in timm_name else {}
    tm = randomise(timm.create_model(timm_name, pretrained=False, **kw)).eval()
    save_file(tm.state_dict(), str(tmp_path / "timm.safetensors"))
    assert cli(tmp_path / "timm.safetensors", tmp_path / "out.pt", "--model", model) == 0
    ours = load_model(tmp_path / "out.pt").eval()
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        features_equal(ours, timm_stages(tm, x), x)


# ----------------------------------------------------------------------------------------- strict, explained

def test_segmentation_file_missing_a_tensor_is_refused(tmp_path, capsys):
    from models import MODELS
    c = MODELS["upernet_convnext_demo"]
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation
    hf = randomise(UperNetForSemanticSegmentation(UperNetConfig(
        backbone_config=ConvNextConfig(hidden_sizes=list(c["dims"]), depths=list(c["depths"]), out_features=STAGES),
        hidden_size=c["channels"], auxiliary_channels=c["aux_channels"], num_labels=6))).eval()
    hub = hf_hub_upernet(hf)
    assert cli_file(tmp_path, hub, "ok") == 0  # the whole file converts
    for drop, named in [("backbone.hidden_states_norms.stage4.weight", "backbone.norm3.weight"),
                        ("auxiliary_head.classifier.bias", "auxiliary_head.conv_seg.bias"),
                        ("backbone.encoder.stages.1.layers.0.dwconv.weight",
                         "backbone.stages.1.0.depthwise_conv.weight")]:
        capsys.readouterr()
        sd = {k: v for k, v in hub.items() if k != drop}
        assert cli_file(tmp_path, sd, "bad") == 2
        err = capsys.readouterr().err
        assert "segmentation checkpoint does not fit" in err and named in err, err
        assert not (tmp_path / "bad.pt").exists()
    sd = dict(hub, **{"backbone.encoder.stages.0.layers.0.extra.weight": torch.zeros(3)})
    assert cli_file(tmp_path, sd, "bad") == 2
    assert "backbone.stages.0.0.extra.weight (from backbone.encoder.stages.0.layers.0.extra.weight)" in \
        capsys.readouterr().err


def cli_file(tmp_path, sd, stem):
    torch.save(sd, tmp_path / f"{stem}.bin")
    return cli(tmp_path / f"{stem}.bin", tmp_path / f"{stem}.pt", "--model", "upernet_convnext_demo")


def test_cli_prints_every_dropped_key_with_its_reason(tmp_path, capsys):
    from models import MODELS
    c = MODELS["upernet_convnext_demo"]
    from timm.models.convnext import ConvNeXt
    tm = randomise(ConvNeXt(depths=c["depths"], dims=c["dims"], num_classes=1000)).eval()
    torch.save(official_convnext(tm), tmp_path / "convnext_1k.pth")
    assert cli(tmp_path / "convnext_1k.pth", tmp_path / "out.pt", "--model", "upernet_convnext_demo") == 0
    out = capsys.readouterr().out
    assert "dropped 4 source key(s)" in out
    assert re.search(r"head\.weight, head\.bias: ImageNet classifier head", out)
    assert re.search(r"norm\.weight, norm\.bias: final norm of the ImageNet classifier", out)
    assert "LayerNorm's initialisation" in out and "11 classes" in out


def test_inspect_reports_and_writes_nothing(tmp_path, capsys):
    tm = timm_swin()
    torch.save(swin2mmseg(official_swin(tm, 192)), tmp_path / "swin_pre.pth")
    before = set(os.listdir(tmp_path))
    assert cli(tmp_path / "swin_pre.pth", "--inspect") == 0
    out = capsys.readouterr().out
    assert "layout:   mmseg" in out and "family:   swin (embed 16, depths (2, 2, 2, 2), heads (1, 2, 2, 4))" in out
    assert "window:   3" in out and "classes:  unknown" in out and "ImageNet backbone" in out
    assert "norm.weight, norm.bias: final norm" in out and "attn_mask" in out
    assert set(os.listdir(tmp_path)) == before
    # A segmentation file: the registry model it fits and its class count; --model checks the fit, writes nothing.
    from models import MODELS
    c = MODELS["upernet_convnext_demo"]
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation
    hf = UperNetForSemanticSegmentation(UperNetConfig(
        backbone_config=ConvNextConfig(hidden_sizes=list(c["dims"]), depths=list(c["depths"]), out_features=STAGES),
        hidden_size=c["channels"], auxiliary_channels=c["aux_channels"], num_labels=150))
    torch.save(mmseg_checkpoint(mmseg_upernet_from_hf_hub(hf_hub_upernet(hf)), 0, 150), tmp_path / "b.pth")
    assert cli(tmp_path / "b.pth", "--inspect") == 0
    out = capsys.readouterr().out
    assert "size:     upernet_convnext_demo" in out and "window:   -" in out and "classes:  150" in out
    assert "segmentation checkpoint (decode head, auxiliary head)" in out and "dropped nothing" in out
    assert cli(tmp_path / "b.pth", "--inspect", "--model", "upernet_convnext_tiny") == 2
    assert "shape mismatches" in capsys.readouterr().err
    assert cli(tmp_path / "b.pth", "--inspect", "--model", "upernet_convnext_demo") == 0
    assert "fits upernet_convnext_demo with 150 classes (nothing written)" in capsys.readouterr().out
    assert set(os.listdir(tmp_path)) == before | {"b.pth"}


def test_two_keys_for_one_tensor_are_refused(tmp_path):
    """An mmcls Swin file holding both its pre-v2 `norm` and `norm3` would merge two tensors into norm3: refused."""
    f = mmcls_swin(official_swin(timm_swin(), 192), version=3)
    f["state_dict"]["backbone.norm.weight"] = f["state_dict"]["backbone.norm3.weight"] + 1
    f["state_dict"]["backbone.norm.bias"] = f["state_dict"]["backbone.norm3.bias"]
    torch.save(f, tmp_path / "both.pth")
    from models.convert import ConversionError
    with pytest.raises(ConversionError, match=r"both map to norm3\.weight"):
        convert_with(tmp_path, tmp_path / "both.pth", "swin")
