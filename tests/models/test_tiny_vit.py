"""TinyViT (MobileSAM image encoder): checkpoint layout, meta construction and forward behaviour."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import fixture_dir

from persam.models.tiny_vit import DropPath, TinyViT, TinyViTBlock, attention_bias_index

SMALL = dict(
    embed_dims=(16, 32, 40, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_sizes=(7, 7, 14, 7)
)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial attention biases, norms and BatchNorm statistics (defaults are zeros/ones)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("attention_biases"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


@pytest.fixture(scope="module")
def small_model() -> TinyViT:
    torch.manual_seed(0)
    model = TinyViT(**SMALL)
    _randomize(model, 1)
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))


def test_state_dict_matches_mobile_sam_checkpoint():
    spec = json.loads((fixture_dir("sam") / "keys_vit_t.json").read_text())
    prefix = "image_encoder."
    expected = [
        (e["key"][len(prefix) :], e["shape"], e["dtype"])
        for e in spec["state_dict"]
        if e["key"].startswith(prefix)
    ]
    with torch.device("meta"):
        model = TinyViT()
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert got == expected

    non_persistent = {k[len(prefix) :] for k in spec["non_persistent_buffers"] if k.startswith(prefix)}
    buffers = {k for k, _ in model.named_buffers() if k.endswith("attention_bias_idxs")}
    assert buffers == non_persistent


def test_bias_index_is_a_non_persistent_buffer():
    with torch.device("meta"):
        model = TinyViT()
    names = [k for k, _ in model.named_buffers() if k.endswith("attention_bias_idxs")]
    assert len(names) == 2 + 6 + 2
    assert not any("attention_bias_idxs" in k for k in model.state_dict())


@pytest.mark.parametrize("size", [(7, 7), (14, 14), (2, 3)])
def test_attention_bias_index_follows_first_appearance_rule(size):
    # The published table: offsets (|dy|, |dx|) numbered in order of first appearance.
    points = list(itertools.product(range(size[0]), range(size[1])))
    offsets: dict[tuple[int, int], int] = {}
    table = []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            table.append(offsets.setdefault(offset, len(offsets)))
    expected = torch.tensor(table).view(len(points), len(points))
    assert torch.equal(attention_bias_index(*size), expected)


def _naive_block(blk: TinyViTBlock, x: torch.Tensor) -> torch.Tensor:
    """Window attention written out window by window with an explicit softmax; ``x`` is [1, H, W, C]."""
    _, h, w, c = x.shape
    ws, attn = blk.window_size, blk.attn
    heads, kd = attn.num_heads, attn.key_dim
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    padded = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))  # zero tokens, normalised with the rest
    out = torch.zeros(1, hp, wp, c)
    for y0 in range(0, hp, ws):
        for x0 in range(0, wp, ws):
            tokens = padded[0, y0 : y0 + ws, x0 : x0 + ws].reshape(ws * ws, c)
            qkv = attn.qkv(attn.norm(tokens)).view(ws * ws, heads, 3 * kd)
            heads_out = []
            for hd in range(heads):
                q, k, v = qkv[:, hd, :kd], qkv[:, hd, kd : 2 * kd], qkv[:, hd, 2 * kd :]
                bias = torch.empty(ws * ws, ws * ws)
                for i, j in itertools.product(range(ws * ws), repeat=2):
                    dy, dx = abs(i // ws - j // ws), abs(i % ws - j % ws)
                    bias[i, j] = attn.attention_biases[hd, dy * ws + dx]
                heads_out.append(torch.softmax(q @ k.T / kd**0.5 + bias, dim=-1) @ v)
            out[0, y0 : y0 + ws, x0 : x0 + ws] = attn.proj(torch.cat(heads_out, 1)).view(ws, ws, c)
    x = x + out[:, :h, :w]
    x = blk.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return x + blk.mlp(x)


def test_block_matches_explicit_window_attention():
    torch.manual_seed(3)
    blk = TinyViTBlock(dim=8, num_heads=2, window_size=4)
    _randomize(blk, 4)
    blk.eval()
    x = torch.randn(1, 6, 9, 8, generator=torch.Generator().manual_seed(5))  # padded to 8 x 12
    with torch.no_grad():
        torch.testing.assert_close(blk(x), _naive_block(blk, x), atol=1e-5, rtol=0)


def test_meta_build_then_assign_loads_a_working_model(small_model, images):
    with torch.device("meta"):
        model = TinyViT(**SMALL)
    model.load_state_dict(small_model.state_dict(), assign=True)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images[:1]), small_model(images[:1]))


def test_forward_shape_float32_and_bf16_autocast(small_model, images):
    with torch.no_grad():
        out = small_model(images[:1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = small_model(images[:1])
    assert out.shape == (1, 256, 64, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out_bf16.shape == (1, 256, 64, 64)
    assert torch.isfinite(out_bf16).all()
    # Same function at lower precision: close on average, not a different network.
    assert (out_bf16.float() - out).abs().mean() < 0.05 * out.abs().mean()


def test_output_is_one_sixteenth_of_the_input(small_model):
    with torch.no_grad():
        out = small_model(torch.randn(1, 3, 512, 384))
    assert out.shape == (1, 256, 32, 24)


def test_eval_is_deterministic_and_batch_consistent(small_model, images):
    with torch.no_grad():
        batch = small_model(images)
        single = torch.cat([small_model(images[:1]), small_model(images[1:])])
        again = small_model(images[:1])
    assert torch.equal(again, single[:1])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)


def test_drop_path_is_inactive_in_eval(small_model, images):
    model = TinyViT(**SMALL, drop_path_rate=0.5)
    model.load_state_dict(small_model.state_dict())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images[:1]), small_model(images[:1]))


def test_drop_path_drops_whole_samples_in_training():
    torch.manual_seed(6)
    drop = DropPath(0.5).train()
    x = torch.ones(64, 3, 4)
    y = drop(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_bad_input_is_rejected(small_model):
    with pytest.raises(ValueError, match="image batch"):
        small_model(torch.zeros(3, 64, 64))
