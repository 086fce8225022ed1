"""TinyViT's inference fast paths compute what the plain layers compute: BatchNorm folded into the
convolution, 1x1 convolutions as GEMMs, channels-last layout, the cached attention bias."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from persam.models.tiny_vit import Attention, ConvBN


def _explicit_conv_bn(m: ConvBN, x: torch.Tensor) -> torch.Tensor:
    """Convolution, then BatchNorm with running statistics, written out (float64)."""
    c, bn = m.c, m.bn
    y = F.conv2d(x.double(), c.weight.double(), None, c.stride, c.padding, c.dilation, c.groups)
    shape = (1, -1, 1, 1)
    mean, var = bn.running_mean.double().view(shape), bn.running_var.double().view(shape)
    y = (y - mean) / torch.sqrt(var + bn.eps)
    return y * bn.weight.double().view(shape) + bn.bias.double().view(shape)


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "padding", "groups"),
    [(8, 16, 1, 1, 0, 1), (16, 16, 3, 1, 1, 16), (16, 16, 3, 2, 1, 16), (3, 8, 3, 2, 1, 1)],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_eval_conv_bn_matches_conv_then_batchnorm(cin, cout, kernel, stride, padding, groups, channels_last):
    g = torch.Generator().manual_seed(0)
    m = ConvBN(cin, cout, kernel, stride, padding, groups=groups)
    with torch.no_grad():
        m.c.weight.copy_(torch.randn(m.c.weight.shape, generator=g))
        m.bn.weight.copy_(1 + 0.3 * torch.randn(cout, generator=g))
        m.bn.bias.copy_(0.2 * torch.randn(cout, generator=g))
        m.bn.running_mean.copy_(0.5 * torch.randn(cout, generator=g))
        m.bn.running_var.copy_(0.2 + torch.rand(cout, generator=g))
    x = torch.randn(2, cin, 13, 11, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    m.eval()
    with torch.no_grad():
        y = m(x)
    expected = _explicit_conv_bn(m, x)
    assert y.shape == expected.shape
    torch.testing.assert_close(y.double(), expected, atol=1e-5, rtol=1e-5)
    # Training mode normalises with the batch statistics, as BatchNorm does.
    m.train()
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.bn(m.c(x)))


def test_cached_attention_bias_follows_the_parameters():
    attn = Attention(dim=8, key_dim=4, num_heads=2, resolution=(3, 3)).eval()
    with torch.no_grad():
        attn.attention_biases.copy_(torch.arange(18.0).view(2, 9))
        first = attn.attention_bias()
        assert attn.attention_bias() is first  # reused while nothing changes
        attn.attention_biases.add_(1.0)
        second = attn.attention_bias()
    torch.testing.assert_close(second, first + 1.0)
    attn.load_state_dict({**attn.state_dict(), "attention_biases": torch.zeros(2, 9)})
    with torch.no_grad():
        assert torch.count_nonzero(attn.attention_bias()) == 0


def test_attention_bias_keeps_gradients_when_training():
    attn = Attention(dim=8, key_dim=4, num_heads=2, resolution=(3, 3)).train()
    attn(torch.randn(2, 9, 8)).sum().backward()
    assert attn.attention_biases.grad is not None and attn.attention_biases.grad.abs().sum() > 0
