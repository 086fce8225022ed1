"""Hiera and FPN-neck internals of SAM 2: the chunked block and the folded projections compute
what the plain formulation computes (max-pooling, zero / bias padding, one chunk per map)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import persam.models.sam2.hiera as hiera
from persam.models.sam2 import sam2_from_config, tiny_sam2_config
from persam.models.sam2.hiera import MultiScaleBlock, max_pool_hw, partition_filled, window_partition
from persam.models.sam2.neck import FpnNeck
from persam.models.sam2.position_encoding import PositionEmbeddingSine

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size", [(8, 8), (9, 7), (5, 12)])
def test_max_pool_hw_equals_max_pool2d(size):
    x = torch.randn(2, 8, *size).permute(0, 2, 3, 1)  # channels-last view, as in the trunk
    x[0, 0, 0, 0] = float("nan")
    expected = nn.MaxPool2d(2, 2)(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    strided = torch.cat([x, x], dim=-1)[..., :8]  # a non-contiguous map, as sliced queries are
    for got in (max_pool_hw(x, (2, 2)), hiera.pool_hw(strided, nn.MaxPool2d(2, 2))):
        torch.testing.assert_close(got, expected, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(16, 16), (13, 9)])
def test_partition_fills_the_padding(size):
    x = torch.randn(2, *size, 3)
    fill = torch.tensor([1.0, -2.0, 3.0])
    windows, padded = partition_filled(x, 8, fill)
    zero_padded, same = window_partition(x, 8)
    assert padded == same
    is_pad = (zero_padded == 0).all(-1)
    torch.testing.assert_close(windows[~is_pad], zero_padded[~is_pad], rtol=0, atol=0)
    assert (windows[is_pad] == fill).all()


@pytest.mark.parametrize(
    "kwargs, size",
    [
        (dict(dim=16, dim_out=16, num_heads=2, window_size=4), (12, 10)),  # padded windows
        (dict(dim=16, dim_out=32, num_heads=2, window_size=4, q_stride=(2, 2)), (16, 14)),
        (dict(dim=16, dim_out=32, num_heads=4, window_size=6, q_stride=(2, 2)), (14, 14)),
        (dict(dim=16, dim_out=16, num_heads=2, window_size=0), (9, 7)),  # global attention
    ],
)
def test_chunked_block_equals_one_chunk(monkeypatch, kwargs, size):
    torch.manual_seed(0)
    block = MultiScaleBlock(**kwargs).eval()
    x = torch.randn(2, *size, kwargs["dim"])
    with torch.no_grad():
        monkeypatch.setattr(hiera, "CHUNK_TOKENS", 10**9)
        whole = block(x)
        monkeypatch.setattr(hiera, "CHUNK_TOKENS", 40)
        chunked = block(x)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_folded_projection_equals_projecting_the_level():
    torch.manual_seed(0)
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=8),
        d_model=8,
        backbone_channel_list=[24, 16, 12],
        fpn_top_down_levels=[1, 2],
        fpn_interp_model="nearest",
    )
    xs = [torch.randn(1, c, s, s) for c, s in ((12, 16), (16, 8), (24, 4))]
    projs = [nn.Conv2d(8, 2, 1), nn.Conv2d(8, 4, 1)]
    with torch.no_grad():
        plain, pos = neck(xs)
        folded, folded_pos = neck(xs, level_proj=projs)
        for i, p in enumerate(projs):  # level 0 is folded, level 1 (top-down) projected after
            torch.testing.assert_close(folded[i], p(plain[i]), atol=1e-5, rtol=0)
        torch.testing.assert_close(folded[2], plain[2], rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(pos, folded_pos, strict=True))


def test_position_table_cache_follows_the_weights():
    model = sam2_from_config(tiny_sam2_config()).eval()
    trunk = model.image_encoder.trunk
    with torch.no_grad():
        first = trunk._pos_embed((16, 16)).clone()
        trunk.pos_embed.add_(1.0)
        assert torch.allclose(trunk._pos_embed((16, 16)), first + 1.0, atol=1e-5)
    trunk.pos_embed.requires_grad_(True)
    trunk._pos_embed((16, 16)).sum().backward()  # trained: recomputed, with a gradient
    assert trunk.pos_embed.grad is not None
