"""TTConv2d (PyTorch): nn.Conv2d with to_dense(), the FLOP count of each order, from_conv, errors, init, report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import tt_torch
from tt_common.conv import CONV_ORDERS, conv_flops
from tt_torch import TTConv2d


def _layer(order: str = "auto", dtype=torch.float64, **kwargs) -> TTConv2d:
    torch.manual_seed(0)
    layer = TTConv2d((2, 4), (4, 2), 3, (1, 3, 5, 1), order=order, dtype=dtype, **kwargs)
    if layer.bias is not None:
        with torch.no_grad():
            layer.bias.normal_()
    return layer


@pytest.mark.parametrize("order", CONV_ORDERS)
@pytest.mark.parametrize("kwargs", [{}, dict(stride=2, padding=1), dict(padding=(2, 1), dilation=(2, 1))])
def test_forward_is_conv2d_with_the_dense_kernel(order: str, kwargs: dict) -> None:
    layer = _layer(order, **kwargs)
    x = torch.randn(3, 8, 10, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = F.conv2d(x, layer.to_dense(), layer.bias, layer.shape.stride, layer.shape.padding, layer.shape.dilation)
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", CONV_ORDERS)
@pytest.mark.parametrize("size, stride", [(12, 1), (15, 2)])
def test_flops_of_each_order_are_what_torch_counts(order: str, size: int, stride: int) -> None:
    """The rule in tt_common.conv against torch's own count of the products and convolutions that run."""
    layer = _layer(order, stride=stride, padding=1, bias=False)
    x = torch.randn(2, 8, size, size, dtype=torch.float64)
    with FlopCounterMode(display=False) as counter:
        layer(x)
    assert counter.get_total_flops() == conv_flops(layer.shape, 2, size, size, order)


def test_float32_is_kept_and_other_dtypes_are_refused() -> None:
    layer = _layer(dtype=torch.float32)
    assert layer(torch.ones(1, 8, 5, 5)).dtype == torch.float32
    with pytest.raises(ValueError, match="input dtype float64 does not match the layer's dtype float32"):
        layer(torch.ones(1, 8, 5, 5, dtype=torch.float64))


def test_wrong_channels_or_layout_are_named() -> None:
    layer = _layer()
    with pytest.raises(ValueError, match=r"has 5 channels on axis 1, the layer expects prod\(in_modes\)"):
        layer(torch.ones(1, 5, 6, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"the input looks NHWC: transpose it"):
        layer(torch.ones(1, 6, 6, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="input must be 4-D NCHW"):
        layer(torch.ones(8, 6, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        TTConv2d((2, 4), (4, 2), 0, 3)
    with pytest.raises(ValueError, match="stride must be a positive int"):
        TTConv2d((2, 4), (4, 2), 3, 3, stride=0)


def test_from_conv_is_exact_at_full_rank_and_takes_the_settings() -> None:
    dense = torch.nn.Conv2d(8, 6, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), dtype=torch.float64)
    layer = TTConv2d.from_conv(dense, (2, 4), (3, 2))
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-10, atol=1e-10)
    assert (layer.shape.stride, layer.shape.padding, layer.shape.dilation) == ((2, 2), (1, 0), (1, 2))
    with pytest.raises(ValueError, match=r"C_in = 8, C_out = 6, which in_modes=\(2, 2\).*do not factor"):
        TTConv2d.from_conv(dense, (2, 2), (3, 2))
    with pytest.raises(ValueError, match="groups=1"):
        TTConv2d.from_conv(torch.nn.Conv2d(8, 6, 3, groups=2), (2, 4), (3, 2))
    same = TTConv2d.from_conv(torch.nn.Conv2d(8, 6, 3, padding="same"), (2, 4), (3, 2), max_rank=2)
    assert same.shape.padding == (1, 1) and same.ranks == (1, 2, 2, 1)


def test_default_init_gives_the_kernel_lecun_variance() -> None:
    """Entries of the kernel have variance 1 / (kh kw C_in), averaged over independent draws (rtol 10%)."""
    layer = TTConv2d((2, 2), (2, 2), 3, 3, dtype=torch.float64)
    second_moments = []
    for seed in range(200):
        layer.reset_parameters(torch.Generator().manual_seed(seed))
        second_moments.append(float((layer.to_dense().detach() ** 2).mean()))
    assert np.mean(second_moments) == pytest.approx(1 / 36, rel=0.1)


def test_report_and_state_dict() -> None:
    model = torch.nn.Sequential(TTConv2d((4, 4), (4, 4), 3, 4), torch.nn.ReLU())
    assert list(model.state_dict()) == ["0.bias", "0.cores.0", "0.cores.1", "0.cores.2"]
    report = tt_torch.compression_report(model)
    assert "| 0 | tt-conv2d 3x3 | 16 -> 16 | 4x4x9 | 4x4x1 | 1,4,4,1 | 372 | 2,320 | 6.2 | 3,712 |" in report
