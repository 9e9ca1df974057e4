"""tt_jax.export: jax.export of TT models with a symbolic batch, reloaded without tt_jax; bad input."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tt_jax
from tt_jax import export, inference

# float32 throughout: the exported graph is the same computation as the eager model's, up to XLA's fusion choices.
ATOL = 1e-5


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.body = tt_jax.TTLinear((4, 2, 3), (2, 3, 2), 3, use_bias=False, rngs=rngs)
        self.norm = nnx.BatchNorm(12, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head = tt_jax.TTLinear((3, 4), (5, 1), 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.drop(jax.nn.relu(self.norm(self.body(x)))))


def _net() -> Net:
    model = Net(nnx.Rngs(0))
    model.norm.mean.set_value(jnp.linspace(-1, 1, 12, dtype=jnp.float32))  # as after training
    model.norm.var.set_value(jnp.linspace(0.5, 2, 12, dtype=jnp.float32))
    model.eval()
    return model


def _x(batch: int) -> jax.Array:
    return jax.random.normal(jax.random.key(batch), (batch, 24), jnp.float32)


@pytest.mark.parametrize("form", ["cores", "dense"])
def test_symbolic_batch_gives_the_models_outputs(form: str) -> None:
    model = _net()
    inference.prepare_inference(model, 16, form)
    exported = export.export(model, _x(3))
    assert str(exported.in_avals[0]) == "float32[batch,24]"
    reloaded = jax.export.deserialize(export.serialize(exported))
    for batch in (1, 2, 33):
        got = reloaded.call(_x(batch))
        assert got.dtype == jnp.float32 and got.shape == (batch, 5)
        np.testing.assert_allclose(got, model(_x(batch)), atol=ATOL, rtol=ATOL)


def test_dense_form_is_in_the_graph() -> None:
    model = _net()
    inference.prepare_inference(model, 16, "dense")
    text = export.export(model, _x(3)).mlir_module()
    assert "tensor<24x12xf32>" in text  # the body's dense kernel, a constant of the graph


def test_reload_in_a_fresh_process_without_tt_jax(tmp_path) -> None:
    model = _net()
    x = np.asarray(_x(9))
    export.save(export.export(model, _x(3)), tmp_path / "net.jaxexport")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", np.asarray(model(x)))
    script = (
        "import sys, numpy as np, jax\n"
        f"d = {str(tmp_path)!r}\n"
        "exp = jax.export.deserialize(bytearray(open(d + '/net.jaxexport', 'rb').read()))\n"
        "got = np.asarray(exp.call(np.load(d + '/x.npy')))\n"
        f"np.testing.assert_allclose(got, np.load(d + '/want.npy'), atol={ATOL}, rtol={ATOL})\n"
        "assert not [m for m in sys.modules if m.startswith(('tt_jax', 'tt_common', 'flax'))], 'imported'\n"
        "print('ok', got.shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok (9, 5)"


def test_save_and_load(tmp_path) -> None:
    model = _net()
    export.save(export.export(model, _x(3), dynamic_axes=()), tmp_path / "m")
    loaded = export.load(tmp_path / "m")
    assert str(loaded.in_avals[0]) == "float32[3,24]"
    np.testing.assert_allclose(loaded.call(_x(3)), model(_x(3)), atol=ATOL, rtol=ATOL)


def test_two_batch_axes() -> None:
    layer = tt_jax.TTLinear((4, 6), (2, 3), 2, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 3, 24), jnp.float32)
    exported = export.export(layer, x, dynamic_axes=(0, 1))
    assert str(exported.in_avals[0]) == "float32[batch,batch1,24]"
    np.testing.assert_allclose(exported.call(jnp.ones((4, 5, 24), jnp.float32)), layer(jnp.ones((4, 5, 24))),
                               atol=ATOL)


def test_training_mode_batch_norm_is_refused() -> None:
    model = _net()
    model.train()
    with pytest.raises(ValueError, match="batch norm 'norm' is in training mode"):
        export.export(model, _x(3))
    model.eval()
    model.drop.deterministic = False
    with pytest.raises(ValueError, match="dropout 'drop' is in training mode"):
        export.export(model, _x(3))


@pytest.mark.parametrize("x, kwargs, match", [
    (np.ones((3, 24), np.float32), {"dynamic_axes": (1,)}, "dynamic axis 1 is the feature axis"),
    (np.ones((3, 24), np.float32), {"dynamic_axes": (-1,)}, "dynamic axis -1 is the feature axis"),
    (np.ones((3, 24), np.float32), {"dynamic_axes": (2,)}, "dynamic axis 2 is out of range"),
    (np.ones((3, 24), np.int32), {}, "input dtype int32"),
    (np.ones((3, 24), np.complex64), {}, "input dtype complex64"),
    (np.ones((), np.float32), {"dynamic_axes": ()}, "0-d example input"),
])
def test_bad_input_names_the_problem(x, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        export.export(_net(), x, **kwargs)
