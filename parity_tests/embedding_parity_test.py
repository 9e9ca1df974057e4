"""TTEmbedding three ways: the NumPy float64 table ``tt_to_dense(cores)[ids]`` (the oracle), JAX, PyTorch.

Hypothesis draws the shape (d 1..4, V <= 256, D <= 64, ranks 1..6, clipped), the index shape ((), (n,) or
(a, b)), the indices (repeats included), a padding row or none and the direction. For ``L = sum(layer(ids) * g)``
the output and the gradients wrt every core are compared componentwise with the reference, whose table gradient
is the scatter-add of ``g`` into the looked-up rows (none into the padding row), mapped to the cores by the chain
rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import tt_jax
import tt_torch
from parity_tests.helpers import FLOAT32_RTOL, FLOAT64_RTOL, check_componentwise, tt_core_grads_reference
from tt_common.embedding import TTEmbeddingShape
from tt_common.reference import tt_to_dense
from tt_jax import transfer as jax_transfer
from tt_torch import transfer as torch_transfer

QUICK_EXAMPLES = 10
DTYPES = {"float64": (jnp.float64, torch.float64, FLOAT64_RTOL), "float32": (jnp.float32, torch.float32, FLOAT32_RTOL)}


@dataclass(frozen=True)
class Case:
    shape: TTEmbeddingShape
    ids: tuple  # nested tuples of ints (hashable, printable)
    direction: str
    seed: int


@st.composite
def modes(draw: st.DrawFn, d: int, cap: int, largest: int) -> tuple[int, ...]:
    drawn, size = [], 1
    for _ in range(d):
        drawn.append(draw(st.integers(1, min(largest, cap // size))))
        size *= drawn[-1]
    return tuple(draw(st.permutations(drawn)))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    d = draw(st.integers(1, 4))
    ranks = (1, *draw(st.lists(st.integers(1, 6), min_size=d - 1, max_size=d - 1)), 1)
    vocab, features = draw(modes(d, 256, 8)), draw(modes(d, 64, 6))
    size = int(np.prod(vocab))
    padding = draw(st.one_of(st.none(), st.integers(0, size - 1)))
    shape = TTEmbeddingShape.create(vocab, features, ranks, padding)
    index = st.integers(0, size - 1)
    ids = draw(st.one_of(index, st.tuples(*[index] * draw(st.integers(1, 6))),
                         st.lists(st.tuples(index, index), min_size=1, max_size=3).map(tuple)))
    return Case(shape, ids, draw(st.sampled_from(["auto", "ltr", "rtl"])), draw(st.integers(0, 2**32 - 1)))


def embedding_reference(ids: np.ndarray, cores: list[np.ndarray], g: np.ndarray,
                        shape: TTEmbeddingShape) -> dict[str, np.ndarray]:
    """Output and core gradients of ``L = sum(table[ids] * g)`` in float64 (padding row zero, no gradient)."""
    table = tt_to_dense(cores)
    keep = np.ones(shape.num_embeddings)
    if shape.padding_idx is not None:
        keep[shape.padding_idx] = 0.0
    d_table = np.zeros_like(table)
    np.add.at(d_table, ids.reshape(-1), np.asarray(g, np.float64).reshape(-1, shape.features))
    out = {"y": (table * keep[:, None])[ids]}
    out.update({f"cores.{k}": dc for k, dc in enumerate(tt_core_grads_reference(cores, d_table * keep[:, None]))})
    return out


def random_problem(case: Case, np_dtype: type) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(case.seed)
    weights = {f"cores.{k}": rng.standard_normal(s) for k, s in enumerate(case.shape.matrix.core_shapes)}
    ids = np.asarray(case.ids, dtype=np.int64)
    g = rng.standard_normal(ids.shape + (case.shape.features,))
    return {k: v.astype(np_dtype) for k, v in weights.items()}, ids, g.astype(np_dtype)


def jax_outputs(case: Case, weights: dict, ids: np.ndarray, g: np.ndarray, dtype) -> dict[str, np.ndarray]:
    s = case.shape
    layer = tt_jax.TTEmbedding(s.vocab_modes, s.feature_modes, s.matrix.ranks, padding_idx=s.padding_idx,
                               direction=case.direction, param_dtype=dtype, rngs=nnx.Rngs(0))
    jax_transfer.load(layer, weights)
    graphdef, params = nnx.split(layer)

    @jax.jit
    def forward_backward(params, ids, g):
        y, vjp = jax.vjp(lambda p: nnx.merge(graphdef, p)(ids), params)
        return (y, *vjp(g))

    y, param_grads = forward_backward(params, jnp.asarray(ids), jnp.asarray(g))
    assert y.dtype == dtype
    return {"y": np.asarray(y), **jax_transfer.export(nnx.merge(graphdef, param_grads))}


def torch_outputs(case: Case, weights: dict, ids: np.ndarray, g: np.ndarray, dtype) -> dict[str, np.ndarray]:
    s = case.shape
    layer = tt_torch.TTEmbedding(s.vocab_modes, s.feature_modes, s.matrix.ranks, padding_idx=s.padding_idx,
                                 direction=case.direction, dtype=dtype)
    torch_transfer.load(layer, weights)
    y = layer(torch.from_numpy(ids))
    y.backward(torch.tensor(g))
    assert y.dtype == dtype
    return {"y": y.detach().numpy(), **{name: p.grad.numpy() for name, p in layer.named_parameters()}}


def check_embedding_parity(case: Case, dtype_name: str) -> None:
    jax_dtype, torch_dtype, rtol = DTYPES[dtype_name]
    weights, ids, g = random_problem(case, np.dtype(dtype_name).type)
    cores = [weights[f"cores.{k}"] for k in range(case.shape.matrix.d)]
    reference = embedding_reference(ids, cores, g, case.shape)
    scale = embedding_reference(ids, [np.abs(c) for c in cores], np.abs(g), case.shape)
    got = {"jax": jax_outputs(case, weights, ids, g, jax_dtype),
           "torch": torch_outputs(case, weights, ids, g, torch_dtype)}
    for part, keys in (("forward", ["y"]), ("gradients", [k for k in reference if k != "y"])):
        pick = lambda d: {k: d[k] for k in keys}  # noqa: E731
        for framework in ("jax", "torch"):
            check_componentwise(f"embedding {dtype_name} {part}: {framework} vs numpy", pick(got[framework]),
                                pick(reference), scale, rtol)
        check_componentwise(f"embedding {dtype_name} {part}: jax vs torch", pick(got["jax"]), pick(got["torch"]),
                            scale, rtol)


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@settings(max_examples=QUICK_EXAMPLES)
@given(case=cases())
def test_embedding_parity(case: Case, dtype_name: str) -> None:
    check_embedding_parity(case, dtype_name)


@pytest.mark.slow
@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@given(case=cases())
def test_embedding_parity_many_shapes(case: Case, dtype_name: str) -> None:
    check_embedding_parity(case, dtype_name)


@pytest.mark.parametrize("direction", ["ltr", "rtl"])
def test_padding_row_and_repeats_at_a_fixed_shape(direction: str) -> None:
    """Repeated indices and the padding row, looked up together, in float64."""
    shape = TTEmbeddingShape.create((3, 4, 5), (2, 3, 2), (1, 3, 4, 1), padding_idx=7)
    check_embedding_parity(Case(shape, ((7, 3, 59), (3, 7, 0)), direction, seed=1), "float64")


def test_embedding_weights_move_between_frameworks_bit_exactly(tmp_path: Path) -> None:
    jax_layer = tt_jax.TTEmbedding((5, 6), (4, 4), 3, rngs=nnx.Rngs(0))
    jax_transfer.save_file(jax_layer, tmp_path / "embedding.safetensors")
    torch_layer = tt_torch.TTEmbedding((5, 6), (4, 4), 3)
    torch_transfer.load_file(torch_layer, tmp_path / "embedding.safetensors")
    exported = torch_transfer.export(torch_layer)
    assert sorted(exported) == ["cores.0", "cores.1"]
    for key, value in jax_transfer.export(jax_layer).items():
        assert exported[key].tobytes() == value.tobytes()
    ids = np.array([[0, 29, 7]])
    np.testing.assert_allclose(np.asarray(jax_layer(jnp.asarray(ids))), torch_layer(torch.from_numpy(ids)).detach().numpy(),
                               rtol=1e-6, atol=1e-7)  # fmt: skip
