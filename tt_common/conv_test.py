"""TTConvShape's validation, the FLOP rule of both orders and the channel product (NumPy only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tt_common.conv import TTConvShape, channel_product, choose_order, conv_flops


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_size=0), "kernel_size must be a positive int or a pair of them, got 0"),
    (dict(kernel_size=(3, 0)), r"kernel_size must be a positive int or a pair of them, got \(3, 0\)"),
    (dict(kernel_size=2.0), "kernel_size must be a positive int"),
    (dict(stride=0), "stride must be a positive int or a pair of them, got 0"),
    (dict(dilation=(1, 0)), "dilation must be a positive int"),
    (dict(padding=-1), "padding must be a non-negative int or a pair of them, got -1"),
    (dict(ranks=(1, 2, 1)), r"ranks must be an int or a sequence of length d \+ 2 = 4"),
    (dict(in_modes=(2, 0)), r"in_modes\[1\] must be a positive integer"),
])  # fmt: skip
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    args = dict(in_modes=(2, 2), out_modes=(2, 2), kernel_size=3, ranks=2) | kwargs
    with pytest.raises(ValueError, match=message):
        TTConvShape.create(**args)


def test_bad_inputs_are_named() -> None:
    shape = TTConvShape.create((2, 3), (2, 2), 3, 2, dilation=2)
    with pytest.raises(ValueError, match="input must be 4-D NHWC, got shape"):
        shape.check_input((6, 8, 8), "NHWC")
    with pytest.raises(ValueError, match=r"has 8 channels on axis 3.*prod\(in_modes\) = prod\(\(2, 3\)\) = 6 in layout "
                                         r"NHWC \(the input looks NCHW: transpose it\)"):
        shape.check_input((1, 6, 8, 8), "NHWC")
    with pytest.raises(ValueError, match=r"has 5 channels on axis 1.*in layout NCHW$"):
        shape.check_input((1, 5, 8, 8), "NCHW")
    with pytest.raises(ValueError, match=r"input height 4 \(\+ 2 x padding 0\) is smaller than the dilated kernel \(5\)"):
        shape.check_input((1, 4, 8, 6), "NHWC")


def test_ranks_are_clipped_as_the_kernel_matrix() -> None:
    """``r_d`` links to the spatial core: at most ``kh kw`` (here 4), as the TT matrix's largest useful rank."""
    assert TTConvShape.create((4, 4), (4, 4), 2, 16).ranks == (1, 16, 4, 1)


@st.composite
def conv_shapes(draw: st.DrawFn) -> TTConvShape:
    d = draw(st.integers(1, 3))
    modes = lambda: tuple(draw(st.lists(st.integers(1, 4), min_size=d, max_size=d)))  # noqa: E731
    return TTConvShape.create(modes(), modes(), (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                              (1, *draw(st.lists(st.integers(1, 5), min_size=d, max_size=d)), 1),
                              stride=draw(st.integers(1, 3)), padding=draw(st.integers(0, 2)))


@given(shape=conv_shapes(), size=st.integers(3, 40))
def test_the_chosen_order_is_the_cheaper(shape: TTConvShape, size: int) -> None:
    flops = {order: conv_flops(shape, 3, size, size, order) for order in ("channels_first", "spatial_first")}
    assert flops[choose_order(shape, size, size)] == min(flops.values())
    assert all(f % 3 == 0 for f in flops.values())  # linear in the batch


def _open_product(cores: list[np.ndarray]) -> np.ndarray:
    """The channel cores multiplied out with the last rank left open: ``(C_in, C_out, r_d)``.

    (Not ``tt_to_dense`` with an identity core: ranks that exceed what their neighbours allow, which the layer
    accepts, make that TT shape invalid.)
    """
    dense = cores[0][0]  # (c, s, r)
    for core in cores[1:]:
        c, s, _ = dense.shape
        dense = np.einsum("abr,rmnt->ambnt", dense, core).reshape(c * core.shape[1], s * core.shape[2], -1)
    return dense


@given(shape=conv_shapes(), trailing=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_channel_product_is_the_channel_matrix_in_both_orders(shape: TTConvShape, trailing: int, seed: int) -> None:
    """Left to right with the rank open, right to left from the rank's slices: the dense product either way."""
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal(s) for s in shape.matrix.core_shapes[:-1]]
    rank, c_in, c_out = shape.link_rank, shape.in_channels, shape.out_channels
    dense = _open_product(cores).reshape(c_in, c_out * rank)  # T[c, (s, t)]
    x = rng.standard_normal((2, c_in, trailing))
    z = channel_product(x, cores, shape, "channels_first", batch=2, trailing=trailing, permute=np.transpose,
                        matmul=np.matmul)
    np.testing.assert_allclose(z.reshape(2, c_out * rank, trailing), np.einsum("bct,cs->bst", x, dense), atol=1e-12)
    u = rng.standard_normal((2, c_in * rank, trailing))
    y = channel_product(u, cores, shape, "spatial_first", batch=2, trailing=trailing, permute=np.transpose,
                        matmul=np.matmul)
    by_rank = dense.reshape(c_in, c_out, rank).transpose(0, 2, 1).reshape(c_in * rank, c_out)  # rows (c, t)
    np.testing.assert_allclose(y.reshape(2, c_out, trailing), np.einsum("bct,cs->bst", u, by_rank), atol=1e-12)
