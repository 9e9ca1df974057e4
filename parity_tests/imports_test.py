"""Each framework's package imports without the other one: ``tt_torch`` never loads JAX, ``tt_jax`` never torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = {
    "tt_torch": ("import tt_torch, tt_torch.transfer, tt_torch.inference, tt_torch.export, tt_torch.initializers, "
                 "tt_torch.functional, tt_common.transfer, tt_common.tensorize",
                 ("jax", "jaxlib", "flax", "optax")),
    "tt_jax": ("import tt_jax, tt_jax.transfer, tt_jax.inference, tt_jax.export, tt_jax.initializers, "
               "tt_jax.functional, tt_common.transfer, tt_common.tensorize",
               ("torch",)),
    "tt_common": ("import tt_common, tt_common.transfer, tt_common.decomposition, tt_common.tensorize",
                  ("jax", "torch", "safetensors")),
}  # fmt: skip

# What each package exposes: the TT layers, initializers, the functional API, transfer and reports.
PUBLIC = {
    "tt_jax": ["PaddedTTLinear", "TTConv2d", "TTCore", "TTEmbedding", "TTLinear", "TTMatrix", "compression_report",
               "functional", "inference", "initializers", "layer_reports", "tensorize", "transfer"],
    "tt_torch": ["PaddedTTLinear", "TTConv2d", "TTEmbedding", "TTLinear", "TTMatrix", "compression_report",
                 "functional", "inference", "initializers", "layer_reports", "tensorize", "transfer"],
}


@pytest.mark.parametrize("package", list(CASES))
def test_package_does_not_import_the_other_framework(package: str) -> None:
    statement, forbidden = CASES[package]
    check = f"import sys; {statement}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"{package} imported {result.stdout.strip()}"


@pytest.mark.parametrize("package", list(PUBLIC))
def test_public_surface_is_the_tt_library_only(package: str) -> None:
    module = __import__(package)
    assert sorted(module.__all__) == PUBLIC[package]
    assert sorted(module.functional.__all__) == ["TTMatrix", "from_dense", "matmul", "plan", "round", "to_dense",
                                                 "tt_linear"]
