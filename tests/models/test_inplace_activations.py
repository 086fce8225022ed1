"""Activations applied in place on fresh buffers (``act_inplace``): the same values as the modules,
no input of a layer is overwritten, autograd and graph tracing still see the plain form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from persam.models.common import MLPBlock, act_inplace
from persam.models.efficient_sam.image_encoder import ViTMlp as EfficientSamMlp
from persam.models.tiny_vit.layers import MBConv, Mlp, PatchEmbed, PatchMerging
from persam.registry import build_module

ENCODER_MODELS = ["tiny_random_sam", "tiny_random_mobile_sam", "tiny_random_efficient_sam"]


@pytest.mark.parametrize("act", [nn.GELU(), nn.GELU(approximate="tanh"), nn.ReLU(), nn.SiLU()])
def test_act_inplace_equals_the_module(act):
    x = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 3
    expected = act(x)
    with torch.no_grad():
        y = act_inplace(act, x.clone())
    assert torch.equal(y, expected)


@pytest.mark.parametrize("act", [nn.GELU(), nn.ReLU()])
def test_act_inplace_writes_over_a_fresh_buffer_only_without_autograd(act):
    x = torch.randn(64)
    with torch.no_grad():
        y = act_inplace(act, x)
    assert y.data_ptr() == x.data_ptr()

    leaf = torch.randn(64, requires_grad=True)
    h = leaf * 2.0
    before = h.detach().clone()
    out = act_inplace(act, h)
    assert out.data_ptr() != h.data_ptr() and torch.equal(h.detach(), before)
    out.sum().backward()
    ref_leaf = leaf.detach().clone().requires_grad_(True)
    act(ref_leaf * 2.0).sum().backward()
    assert torch.equal(leaf.grad, ref_leaf.grad)


@pytest.mark.parametrize("name", ENCODER_MODELS)
def test_encoder_gives_the_same_output_with_and_without_autograd(name):
    torch.manual_seed(0)
    encoder = build_module(name).image_encoder.eval()
    size = encoder.img_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    kept = x.clone()
    with torch.no_grad():
        fast = encoder(x)
    assert torch.equal(x, kept)  # the input is never a "fresh buffer"
    with torch.enable_grad():
        plain = encoder(x)
    assert plain.requires_grad
    # Autograd also turns off other inference-only paths (cached tables), hence a tolerance here
    # and exact equality in the per-layer test below.
    torch.testing.assert_close(fast, plain.detach(), atol=1e-5, rtol=1e-5)
    plain.float().square().mean().backward()  # the out-of-place path stays differentiable
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def _layers() -> list[tuple[str, nn.Module, torch.Tensor, object]]:
    """(name, layer, input, the layer written out with out-of-place activations)."""
    g = torch.Generator().manual_seed(3)
    mb = MBConv(8, 4.0).eval()
    pm = PatchMerging(8, 12, 2).eval()
    pe = PatchEmbed(3, 16).eval()
    mlp = Mlp(8, 32).eval()
    block = MLPBlock(8, 32)
    es_mlp = EfficientSamMlp(8, 32, nn.GELU).eval()
    for m in (mb, pm, pe, mlp, block, es_mlp):
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
    img = torch.randn(2, 8, 9, 7, generator=g).contiguous(memory_format=torch.channels_last)
    tokens = torch.randn(2, 5, 8, generator=g)
    gelu = F.gelu
    return [
        ("mbconv", mb, img, lambda x: gelu(x + mb.conv3(gelu(mb.conv2(gelu(mb.conv1(x))))))),
        ("patch_merging", pm, img, lambda x: pm.conv3(gelu(pm.conv2(gelu(pm.conv1(x)))))),
        ("patch_embed", pe, torch.randn(1, 3, 16, 12, generator=g), lambda x: pe.seq[2](gelu(pe.seq[0](x)))),
        ("tinyvit_mlp", mlp, tokens, lambda x: mlp.fc2(gelu(mlp.fc1(mlp.norm(x))))),
        ("mlp_block", block, tokens, lambda x: block.lin2(gelu(block.lin1(x)))),
        ("efficient_sam_mlp", es_mlp, tokens, lambda x: es_mlp.fc2(gelu(es_mlp.fc1(x)))),
    ]


@pytest.mark.parametrize("index", range(6))
def test_layers_with_inplace_activations_equal_the_written_out_layers(index):
    name, layer, x, written_out = _layers()[index]
    kept = x.clone()
    with torch.no_grad():
        y = layer(x)
        expected = written_out(x)
    assert torch.equal(x, kept), name
    assert torch.equal(y, expected), name


def test_tinyvit_encoder_exports_to_a_graph_with_the_same_output():
    torch.manual_seed(0)
    encoder = build_module("tiny_random_mobile_sam").image_encoder.eval()
    size = encoder.img_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = encoder(x)
        encoder(x)  # a second call: caches are filled, the graph must not depend on them
        program = torch.export.export(encoder, (x,))
        traced = torch.jit.trace(encoder, (x,), check_trace=True)
    torch.testing.assert_close(program.module()(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(traced(x), expected, atol=1e-5, rtol=1e-5)
