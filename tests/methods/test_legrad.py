"""LeGrad (Bousselham et al. 2024, arXiv:2404.03214) against the paper's equations written out, and its refusals."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from conftest import small_net
from torchcam.methods import LeGrad as TorchcamLeGrad
from torchvision.models.vision_transformer import VisionTransformer

import camanim
from camanim import InputError
from camanim.cli import main
from camanim.compute.maps import layer_cams
from camanim.methods import MethodContext
from camanim.methods.legrad import LEGRAD_FLAG, LeGrad
from camanim.trace import run_trace


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=3,
                             embed_dim=16, num_heads=2, num_classes=5).eval()


def paper_legrad(model, x, targets):
    """The paper's Eqs. by hand: the ViT's forward written out with each block's attention A^l kept,
    s^l = head(norm(z^l))[c], E^l = mean over heads and queries of ReLU(ds^l/dA^l), patch tokens only."""
    b = x.shape[0]
    with torch.enable_grad():
        z = model.patch_embed(x)
        z = torch.cat([model.cls_token.expand(b, -1, -1), z], dim=1) + model.pos_embed
        attn, tokens = [], []
        for blk in model.blocks:
            y = blk.norm1(z)
            n, d = y.shape[1], y.shape[2]
            heads = blk.attn.num_heads
            q, k, v = blk.attn.qkv(y).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            a = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
            attn.append(a)
            z = z + blk.attn.proj((a @ v).transpose(1, 2).reshape(b, n, d))
            z = z + blk.mlp(blk.norm2(z))
            tokens.append(z)
        maps = []
        for a, zl in zip(attn, tokens):
            logits = model.forward_head(model.norm(zl))
            s = logits.gather(1, targets.view(-1, 1)).sum()
            g = torch.autograd.grad(s, a, retain_graph=True)[0]
            e = g.clamp(min=0).mean(dim=1).mean(dim=1)[:, 1:]
            maps.append(e.reshape(b, 4, 4))
    return maps


def test_legrad_equals_the_papers_equations_on_a_seeded_vit_and_flags_every_other_layer():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 3])
    tr = run_trace(model, x, "blocks.*", gradients=False, targets=targets)
    ctx = MethodContext(model=model, input_tensor=x)
    with pytest.warns(RuntimeWarning, match="LeGrad does not apply"):
        cams = layer_cams(tr, LeGrad(), ctx)
    by_name = {r.name: i for i, r in enumerate(tr.records)}
    want = paper_legrad(model, x, targets)
    for layer, expected in enumerate(want):
        i = by_name[f"blocks.{layer}"]
        assert LEGRAD_FLAG not in tr.records[i].flags
        assert float(expected.max()) > 0
        torch.testing.assert_close(cams[i], expected, rtol=1e-4, atol=1e-7)
    assert ctx.forwards == 2  # one recording forward, one running the model's tail on every block at once
    # every other spatial layer (attention, MLP, norms, and the layers sharing their outputs) is
    # flagged with the reason and left empty, never guessed
    others = [r for r in tr.records if not r.non_spatial and r.name not in {"blocks.0", "blocks.1", "blocks.2"}]
    assert others
    for rec in others:
        assert "not one of the blocks of 'blocks'" in rec.flags[LEGRAD_FLAG], rec.name
        assert float(cams[by_name[rec.name]].abs().sum()) == 0.0


def test_legrad_on_torchvision_vit_reads_multihead_attention():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=16, mlp_dim=32, num_classes=5).eval()
    torch.nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: no gradient at all
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    layers = "encoder.layers.encoder_layer_0,encoder.layers.encoder_layer_1"
    tr = run_trace(model, x, layers, gradients=False, targets=[2])
    cams = layer_cams(tr, LeGrad(), MethodContext(model=model, input_tensor=x))
    assert all(LEGRAD_FLAG not in r.flags for r in tr.records)
    # by hand for the last block: its attention's gradient from the model's own logit
    blk = model.encoder.layers.encoder_layer_1
    with torch.enable_grad():
        seen = {}
        feats = model.encoder.layers.encoder_layer_0(
            model.encoder.dropout(torch.cat([model.class_token, model._process_input(x)], 1)
                                  + model.encoder.pos_embedding))
        y = blk.ln_1(feats)
        _, w = blk.self_attention(y, y, y, need_weights=True, average_attn_weights=False)
        seen["a"] = w
        q, k, v = torch.nn.functional.linear(y, blk.self_attention.in_proj_weight,
                                             blk.self_attention.in_proj_bias).chunk(3, dim=-1)
        heads, d = 2, 16
        q, k, v = (t.reshape(1, 17, heads, d // heads).transpose(1, 2) for t in (q, k, v))
        a = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        torch.testing.assert_close(a, seen["a"], rtol=1e-5, atol=1e-6)  # the hand-written attention is blk's
        o = blk.self_attention.out_proj((a @ v).transpose(1, 2).reshape(1, 17, d))
        z = feats + o
        z = z + blk.mlp(blk.ln_2(z))
        logit = model.heads(model.encoder.ln(z)[:, 0])[0, 2]
        g = torch.autograd.grad(logit, a)[0]
    want = g.clamp(min=0).mean(dim=1).mean(dim=1)[:, 1:].reshape(1, 4, 4)
    assert float(want.max()) > 0
    torch.testing.assert_close(cams[1], want, rtol=1e-4, atol=1e-7)


def test_legrad_refuses_a_cnn_layer_by_layer():
    """Every layer of a CNN is flagged with the reason, and as LeGrad applies to none of them the call is
    refused in one line (review: not a whole run of empty maps)."""
    model = small_net()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    tr = run_trace(model, x, "all", gradients=False, targets=[0])
    spatial = [i for i, r in enumerate(tr.records) if not r.non_spatial and r.same_as is None]
    with pytest.raises(InputError, match=rf"^LeGrad applies to none of the {len(spatial)} chosen layers "
                                         r"\(it needs a vision transformer block's") as err:
        layer_cams(tr, LeGrad(), MethodContext(model=model, input_tensor=x))
    assert "\n" not in str(err.value)
    assert spatial
    for i in spatial:
        assert "no block of this model runs one self-attention" in tr.records[i].flags[LEGRAD_FLAG]


def test_cli_legrad_on_a_cnn_is_refused_and_writes_nothing(tmp_path, capsys):
    """(review) `--method legrad` on a CNN: one line, exit 2, no folder; before, exit 0 and a run of blank maps."""
    out = tmp_path / "new" / "out"
    assert main(["run", "sample:cat", "--model", "resnet18", "--weights", "none", "--input-size", "64", "--no-video",
                 "--quiet", "--layers", "layer4.1.conv2", "--method", "legrad", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("camanim: error: LeGrad does not apply to the chosen layer "), err
    assert not (tmp_path / "new").exists()


def test_cli_method_legrad_writes_block_maps_and_flags_the_rest(tmp_path, capsys):
    import json

    from camanim.cli import main

    torch.save(tiny_vit(), tmp_path / "vit.pt")
    out = tmp_path / "out"
    assert main(["sample:cat", "--model", str(tmp_path / "vit.pt"), "--trust-checkpoint", "--input-size", "32",
                 "--method", "legrad", "--layers", "blocks.1*", "--norm", "local", "--out", str(out),
                 "--no-video", "--frame-width", "32", "--quiet"]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "LeGrad does not apply" in ln]
    assert len(warned) == 1 and warned[0].startswith("camanim: warning: LeGrad does not apply to 8 of 9 layers")
    layers = json.loads((out / "manifest.json").read_text())["layers"]
    block = [layer for layer in layers if layer["name"] == "blocks.1"]
    assert len(block) == 1 and LEGRAD_FLAG not in block[0]["flags"]
    flagged = [layer["name"] for layer in layers if LEGRAD_FLAG in layer["flags"]]
    assert "blocks.1.attn" in flagged and "blocks.1.mlp" in flagged
    assert all(layer["non_spatial"] or layer["name"] in flagged for layer in layers if layer["name"] != "blocks.1")


def test_torchcams_legrad_differs_by_default_and_equals_camanims_with_the_class_token_projection():
    """(review) torchcam 0.5.0's LeGrad projects each block's mean token through the head by default, the paper
    (and camanim) the class token as the model's head reads it: its default maps differ from camanim's, and
    with ``score_projection`` set to the class token's they are camanim's to float rounding."""
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=5).eval()
    torch.nn.init.normal_(model.heads.head.weight)
    torch.nn.init.normal_(model.heads.head.bias)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(3)]
    result = camanim.animate(model, x, method="legrad", layers=blocks)
    names, target = [rec.name for rec in result.layers], result.target.index

    def class_token(tokens):
        return model.heads(model.encoder.ln(tokens)[:, 0])

    for block in range(3):
        name = f"encoder.layers.encoder_layer_{block}"
        ours = torch.as_tensor(result.maps[names.index(name)])
        with TorchcamLeGrad(model, name) as extractor:
            default = extractor(class_idx=target, scores=model(x), normalized=False)[0][0]
        with TorchcamLeGrad(model, name, score_projection=class_token) as extractor:
            paper = extractor(class_idx=target, scores=model(x), normalized=False)[0][0]
        assert ours.shape == default.shape == paper.shape == (4, 4)
        assert float(ours.abs().max()) > 0
        assert float((ours - default).abs().max()) > 0.1 * float(default.abs().max()), name  # the mean token
        torch.testing.assert_close(ours, paper, rtol=1e-5, atol=1e-7)  # the class token: the paper's
