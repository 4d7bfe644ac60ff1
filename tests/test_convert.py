"""models.convert against the implementations the checkpoints come from: transformers' UperNet (ConvNeXt and Swin
backbones, random init, built offline from configs) must give our logits after conversion at many input sizes; mmseg
layouts must round-trip; errors name the keys. Every publisher's file layout (timm, official, mmpretrain, mmseg
pretrain files, HF hub files, real widths) is tested in test_convert_publishers.py.

Sizes: transformers 5's SwinBackbone keeps the shift at every stage size (always_partition=True) and pads each block
to the window before shifting, as mmseg does, so it agrees with us at any input size; we test multiples and
non-multiples of the window and of 32 (odd merges), and tiny inputs whose last stages are smaller than the window.
timm's Swin rolls *before* padding and drops the shift for stages no larger than the window, so it agrees with mmseg
only when every stage is a multiple of the window and larger than it: the timm test uses 192 px with window 3.
"""
import os

import pytest
import torch

import models
from models import build_model, load_model
from models.convert import (ConversionError, convert, get_args_parser, main, merge_mmseg_to_official,
                            merge_official_to_mmseg, read_checkpoint, resize_rel_pos_table)
from publishers import randomise

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

STAGES = ["stage1", "stage2", "stage3", "stage4"]
CNX = dict(dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), channels=24, aux_channels=16)
SWIN = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=3, channels=24, aux_channels=16)


_randomise = randomise  # tests/publishers.py: non-trivial values everywhere


def hf_upernet(backbone, num_labels=5, hidden=24, aux=16):
    from transformers import ConvNextConfig, SwinConfig, UperNetConfig, UperNetForSemanticSegmentation
    torch.manual_seed(0)
    if backbone == "convnext":
        bb = ConvNextConfig(hidden_sizes=list(CNX["dims"]), depths=list(CNX["depths"]), out_features=STAGES)
    else:
        bb = SwinConfig(embed_dim=SWIN["embed_dims"], depths=list(SWIN["depths"]), num_heads=list(SWIN["num_heads"]),
                        window_size=SWIN["window_size"], out_features=STAGES)
    cfg = UperNetConfig(backbone_config=bb, hidden_size=hidden, auxiliary_channels=aux, num_labels=num_labels)
    return _randomise(UperNetForSemanticSegmentation(cfg)).eval()


@pytest.fixture(scope="module")
def hf_convnext():
    return hf_upernet("convnext")


@pytest.fixture(scope="module")
def hf_swin():
    return hf_upernet("swin")


def ours_like(backbone, num_classes=5):
    name, ov = ("upernet_convnext_tiny", CNX) if backbone == "convnext" else ("upernet_swin_tiny", SWIN)
    return build_model(name, num_classes, **ov).eval()


def _close(a, b, tol=1e-4):
    scale = max(1.0, a.abs().max().item())
    assert (a - b).abs().max().item() <= tol * scale, (a - b).abs().max().item()


# --------------------------------------------------------------------------------------- transformers' UperNet

@pytest.mark.parametrize("hw", [(64, 64), (70, 90), (33, 47)])
def test_hf_convnext_upernet_same_logits(hf_convnext, hw):
    ours = ours_like("convnext")
    sd, notes = convert(hf_convnext.state_dict(), ours)
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        _close(hf_convnext(x).logits, ours(x))
    assert notes[0] == "source layout: hf (convnext, segmentation checkpoint)"


@pytest.mark.parametrize("hw", [(96, 96), (192, 144), (100, 76), (61, 35), (20, 20)])
def test_hf_swin_upernet_same_logits(hf_swin, hw):
    """96: every stage a multiple of window 3; 100×76 / 61×35: neither the window nor 32 divides (padding to the
    window, odd PatchMerging); 20: the last stages are smaller than the window."""
    ours = ours_like("swin")
    sd, notes = convert(hf_swin.state_dict(), ours)
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        _close(hf_swin(x).logits, ours(x))
    assert any("PatchMerging" in n for n in notes)


def test_hf_aux_head_matches_in_train_mode(hf_swin):
    """The auxiliary head's logits too (eval statistics, no dropout)."""
    ours = ours_like("swin")
    ours.load_state_dict(convert(hf_swin.state_dict(), ours)[0])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = hf_swin.auxiliary_head(hf_swin.backbone(x).feature_maps)
        _close(ref, ours.auxiliary_head(ours.backbone(x)))


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "dir"])
def test_cli_converts_hf_files(tmp_path, fmt, capsys):
    """The real path: HF files on disk (old-style key names as transformers still writes them) → CLI → load_model."""
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation
    cfg = models.MODELS["upernet_convnext_demo"]
    bb = ConvNextConfig(hidden_sizes=list(cfg["dims"]), depths=list(cfg["depths"]), out_features=STAGES)
    hf = _randomise(UperNetForSemanticSegmentation(UperNetConfig(
        backbone_config=bb, hidden_size=cfg["channels"], auxiliary_channels=cfg["aux_channels"], num_labels=6))).eval()
    d = tmp_path / "hf"
    if fmt == "bin":
        d.mkdir()
        src = d / "pytorch_model.bin"
        torch.save(hf.state_dict(), src)
    else:
        hf.save_pretrained(d)
        src = d if fmt == "dir" else d / "model.safetensors"
    dst = tmp_path / "out" / "demo.pth"
    assert main(get_args_parser().parse_args([str(src), str(dst), "--model", "upernet_convnext_demo"])) == 0
    assert "6 classes" in capsys.readouterr().out
    ours = load_model(dst, num_classes=6).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _close(hf(x).logits, ours(x))
    assert not [f for f in os.listdir(dst.parent) if f.endswith(".tmp")]


def test_class_count_change_reinitialises_classifiers(hf_convnext, tmp_path, capsys):
    src = tmp_path / "pytorch_model.bin"
    torch.save(hf_convnext.state_dict(), src)
    dst = tmp_path / "c3.pth"
    # The demo model is not the HF config: use the function with a same-shaped model instead of the CLI.
    ours = ours_like("convnext", num_classes=3)
    fresh = {k: v.clone() for k, v in ours.state_dict().items()}
    sd, notes = convert(read_checkpoint(str(src))[0], ours)
    assert any("source has 5 classes, target 3" in n and "re-initialised" in n for n in notes)
    assert torch.equal(sd["decode_head.conv_seg.weight"], fresh["decode_head.conv_seg.weight"])
    assert torch.equal(sd["auxiliary_head.conv_seg.bias"], fresh["auxiliary_head.conv_seg.bias"])
    assert torch.equal(sd["decode_head.fpn_bottleneck.conv.weight"],
                       hf_convnext.state_dict()["decode_head.fpn_bottleneck.conv.weight"])
    ours.load_state_dict(sd, strict=True)
    assert not dst.exists()


# ------------------------------------------------------------------------------------------------ timm / official

# ------------------------------------------------------------------------------------------------- mmseg layout

@pytest.mark.parametrize("backbone", ["convnext", "swin"])
def test_mmseg_checkpoint_roundtrips(backbone, tmp_path):
    """An mmseg checkpoint ({'meta', 'state_dict'}) is our layout: it converts to identical tensors (and would load
    strictly without conversion)."""
    ours = _randomise(ours_like(backbone, 7), seed=3)
    sd = ours.state_dict()
    src = tmp_path / "mmseg.pth"
    torch.save({"meta": {"CLASSES": ("a",) * 7, "iter": 160000, "config": "..."}, "state_dict": sd}, src)
    got, info = read_checkpoint(str(src))
    assert info["container"] == "state_dict"
    target = ours_like(backbone, 7)
    target.load_state_dict(got, strict=True)  # strict, no renaming
    out, notes = convert(got, target, src="mmseg")
    assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd)
    assert notes[0] == f"source layout: mmseg ({backbone}, segmentation checkpoint)"
    # mmseg saves Swin's relative_position_index buffers: dropped (rebuilt for the target), and said so
    assert len(notes) == (2 if backbone == "swin" else 1)
    assert backbone == "convnext" or "relative_position_index (×8): relative_position_index buffer" in notes[1]


def test_window_change_resizes_position_tables_bicubically():
    """A window-3 Swin checkpoint into a window-5 model: tables resized as mmseg's init_weights does, indices are the
    target's; everything else copied."""
    src = _randomise(ours_like("swin"), seed=5)
    ov = dict(SWIN, window_size=5)
    dst_model = build_model("upernet_swin_tiny", 5, **ov)
    out, notes = convert(src.state_dict(), dst_model)
    dst_model.load_state_dict(out, strict=True)
    key = "backbone.stages.1.blocks.1.attn.w_msa.relative_position_bias_table"
    t = src.state_dict()[key]  # (25, heads)
    ref = torch.nn.functional.interpolate(t.permute(1, 0).reshape(1, -1, 5, 5), size=(9, 9), mode="bicubic")
    assert torch.allclose(out[key], ref.view(-1, 81).permute(1, 0))
    idx = "backbone.stages.1.blocks.1.attn.w_msa.relative_position_index"
    assert torch.equal(out[idx], dst_model.state_dict()[idx]) and out[idx].shape == (25, 25)
    assert any("window 3 → 5" in n for n in notes)
    assert resize_rel_pos_table(t, 25).equal(t)


def test_patch_merging_permutation_inverts():
    w = torch.arange(2 * 12, dtype=torch.float).view(2, 12)  # (out, 4C) with C = 3
    assert torch.equal(merge_mmseg_to_official(merge_official_to_mmseg(w)), w)
    # official channel p*C + c (p: x0 (0,0), x1 (1,0), x2 (0,1), x3 (1,1)) → mmseg c*4 + kh*2 + kw
    m = merge_official_to_mmseg(w)
    c = 3
    for ch in range(c):
        for p, (kh, kw) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
            assert torch.equal(m[:, ch * 4 + kh * 2 + kw], w[:, p * c + ch])


# ----------------------------------------------------------------------------------------------------------- errors

def test_errors_name_the_keys(hf_convnext):
    sd = dict(hf_convnext.state_dict())
    sd["backbone.encoder.stages.0.layers.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match=r"not in model: backbone\.stages\.0\.0\.extra\.weight"):
        convert(sd, ours_like("convnext"))
    sd = dict(hf_convnext.state_dict())
    sd.pop("backbone.encoder.stages.1.layers.0.dwconv.weight")
    with pytest.raises(ConversionError, match=r"missing from source: backbone\.stages\.1\.0\.depthwise_conv\.weight"):
        convert(sd, ours_like("convnext"))
    wide = build_model("upernet_convnext_tiny", 5, **dict(CNX, dims=(16, 32, 48, 80)))
    with pytest.raises(ConversionError, match=r"shape mismatches: backbone\.downsample_layers\.3\.1\.weight"):
        convert(hf_convnext.state_dict(), wide)
    with pytest.raises(ConversionError,
                       match="source is a convnext checkpoint but the target model upernet_swin_tiny has a swin"):
        convert(hf_convnext.state_dict(), ours_like("swin"))
    with pytest.raises(ConversionError, match="--from timm given, but the keys look like the hf layout"):
        convert(hf_convnext.state_dict(), ours_like("convnext"), src="timm")
    with pytest.raises(ConversionError, match="unexpected keys outside backbone"):
        convert({**hf_convnext.state_dict(), "neck.weight": torch.zeros(1)}, ours_like("convnext"))


def test_cli_error_exit_and_no_output(tmp_path, capsys):
    src, dst = tmp_path / "x.pth", tmp_path / "y.pth"
    torch.save({"state_dict": {"foo.weight": torch.zeros(1)}}, src)
    assert main(get_args_parser().parse_args([str(src), str(dst), "--model", "upernet_convnext_demo"])) == 2
    assert "cannot tell the checkpoint's layout" in capsys.readouterr().err
    assert not dst.exists()


class Framework:  # stands for e.g. mmengine's MessageHub pickled next to the weights
    def __init__(self):
        self.log = {"loss": [1.0, 2.0]}


def test_read_checkpoint_weights_only_with_foreign_objects(tmp_path):
    sd = ours_like("convnext").state_dict()
    src = tmp_path / "mmseg1x.pth"
    torch.save({"meta": {"hub": Framework()}, "state_dict": sd, "message_hub": Framework()}, src)
    with pytest.raises(Exception):
        torch.load(src, weights_only=True)
    got, _ = read_checkpoint(str(src))
    assert got.keys() == sd.keys()
